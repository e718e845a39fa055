"""One "version" of an app for tests/docs/test_docs_upgrading.py's PromQL check.

``python upgrading_app.py ROOT VERSION METRICS_PORT [REGRESSION]`` serves ROOT
with aiohttp's ``web.static`` on a free loopback port (printed on stdout),
instrumented by this package with a meter provider whose resource has
``service.version=VERSION`` and whose metrics are scraped from
``METRICS_PORT`` (``opentelemetry-exporter-prometheus``). REGRESSION, if
given, is applied first (see probe_regressions.py). It stops when stdin closes.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import start_http_server


async def main(root: Path, version: str, metrics_port: int) -> None:
    from aiohttp import web

    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    resource = Resource.create({"service.name": "shop", "service.version": version})
    meter_provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()])
    start_http_server(metrics_port, addr="127.0.0.1")
    AiohttpFileResponseInstrumentor().instrument(
        meter_provider=meter_provider, tracer_provider=TracerProvider(resource=resource)
    )
    app = web.Application()
    app.router.add_static("/static", str(root))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    print(sock.getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


if __name__ == "__main__":
    if len(sys.argv) > 4:
        sys.path.insert(0, str(Path(__file__).parent))
        import probe_regressions

        probe_regressions.apply(sys.argv[4])
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
