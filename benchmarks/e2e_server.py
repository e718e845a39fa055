"""A benchmark server in its own process: uvicorn + Starlette, or aiohttp.

    python benchmarks/e2e_server.py {starlette|aiohttp} VARIANT ROOT [MAX_SECONDS]

VARIANT:

- ``off``: contrib's server instrumentation (the ASGI middleware, or
  aiohttp-server) with an SDK pipeline (BatchSpanProcessor into a null
  exporter, a MeterProvider with a periodic reader into a null exporter;
  default sampler, so everything is sampled);
- ``on``: ``off`` plus this package, default settings;
- ``phase_off``: ``on`` with ``phase_spans=False``;
- ``off_10`` and ``on_10``: ``off`` and ``on`` with the sampler a production
  service would use, ``ParentBased(TraceIdRatioBased(0.1))`` (metrics are
  still recorded for every response);
- ``bare``: no OpenTelemetry at all;
- ``bare_on``: ``bare`` plus this package, without an SDK (non-recording).

Serves ROOT under /static on 127.0.0.1 (a free port), prints ``PORT <n>``
and ``PID <n>`` and serves until its stdin is closed, or MAX_SECONDS have
passed (default 900).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # this checkout's otel_fileresp

from _common import sdk_pipeline  # noqa: E402
from opentelemetry import metrics, trace  # noqa: E402

VARIANTS = ("off", "on", "phase_off", "off_10", "on_10", "bare", "bare_on")
# contrib server instrumentation and the SDK
CONTRIB = ("off", "on", "phase_off", "off_10", "on_10")
OURS = ("on", "phase_off", "on_10", "bare_on")
SAMPLED_10 = ("off_10", "on_10")


def _socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def _announce(sock: socket.socket) -> None:
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    print(f"PID {os.getpid()}", flush=True)


def _watch_stdin(stop: threading.Event) -> None:
    def watch() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin (or exits)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()


def serve_starlette(root: Path, ours: str, stop: threading.Event) -> None:
    import uvicorn
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    if ours in OURS:
        from otel_fileresp.starlette import StarletteFileResponseInstrumentor

        StarletteFileResponseInstrumentor().instrument(phase_spans=ours != "phase_off")
    app: Any = Starlette(routes=[Mount("/static", StaticFiles(directory=str(root)))])
    if ours in CONTRIB:
        app = OpenTelemetryMiddleware(app)
    sock = _socket()
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )

    async def main() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        _announce(sock)
        while not stop.is_set() and not task.done():
            await asyncio.sleep(0.1)
        server.should_exit = True
        await task

    asyncio.run(main())


def serve_aiohttp(root: Path, ours: str, stop: threading.Event) -> None:
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    if ours in CONTRIB:
        AioHttpServerInstrumentor().instrument()  # before web.Application is created
    if ours in OURS:
        from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

        AiohttpFileResponseInstrumentor().instrument(phase_spans=ours != "phase_off")
    from aiohttp import web

    async def main() -> None:
        app = web.Application()
        app.add_routes([web.static("/static", root)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = _socket()
        await web.SockSite(runner, sock).start()
        _announce(sock)
        while not stop.is_set():
            await asyncio.sleep(0.1)
        await runner.cleanup()

    asyncio.run(main())


def main() -> None:
    framework, ours, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if ours not in VARIANTS:
        raise SystemExit(f"unknown variant {ours!r}")
    max_seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 900.0
    sampler = None
    if ours in SAMPLED_10:
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        sampler = ParentBased(TraceIdRatioBased(0.1))
    pipeline = sdk_pipeline(sampler=sampler) if ours in CONTRIB else None
    if pipeline is not None:
        trace.set_tracer_provider(pipeline.tracer_provider)
        metrics.set_meter_provider(pipeline.meter_provider)
    stop = threading.Event()
    _watch_stdin(stop)
    timer = threading.Timer(max_seconds, stop.set)
    timer.daemon = True
    timer.start()
    if framework == "starlette":
        serve_starlette(root, ours, stop)
    else:
        serve_aiohttp(root, ours, stop)
    if pipeline is not None:
        pipeline.shutdown()


if __name__ == "__main__":
    main()
