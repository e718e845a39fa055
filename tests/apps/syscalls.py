"""Serve file responses in process, between two marker writes, for strace.

``python syscalls.py FRAMEWORK ROOT MODE COUNT``: MODE ``plain`` serves
without instrumentation, ``instrumented`` with the SDK recording every span
and metric. The app is served by a real server on 127.0.0.1 (uvicorn or an
aiohttp runner) and fetched by a client in the same process; after a warm-up
(imports, StaticFiles' directory check, the first open of every code path),
the process writes ``MARK`` to /dev/null, serves COUNT 200s and COUNT 304s,
and writes ``MARK`` again. tests/frameworks/test_edges.py counts the system calls made
between the two marks, in every thread.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import sys
import threading


def _fetch(port: int, headers: dict[str, str]) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/static/page.txt", headers=headers)
    reply = connection.getresponse()
    reply.read()
    connection.close()
    return reply.status, reply.getheader("etag")


def main(framework: str, root: str, mode: str, count: int) -> None:
    if mode == "instrumented":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

        if framework == "starlette":
            StarletteFileResponseInstrumentor().instrument()
        else:
            AiohttpFileResponseInstrumentor().instrument()

    ready = threading.Event()
    ports: list[int] = []

    async def serve() -> None:
        import socket

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
        if framework == "starlette":
            import uvicorn
            from starlette.applications import Starlette
            from starlette.routing import Mount
            from starlette.staticfiles import StaticFiles

            app = Starlette(routes=[Mount("/static", StaticFiles(directory=root))])
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
            task = asyncio.ensure_future(server.serve(sockets=[sock]))
            while not server.started:
                await asyncio.sleep(0.01)
            ready.set()
            await task
        else:
            from aiohttp import web

            app = web.Application()
            app.router.add_static("/static", root)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            ready.set()
            await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    ready.wait(10)
    port = ports[0]
    status, etag = _fetch(port, {})
    assert status == 200 and etag
    for _ in range(3):
        assert _fetch(port, {})[0] == 200
        assert _fetch(port, {"If-None-Match": etag})[0] == 304
    marker = os.open(os.devnull, os.O_WRONLY)
    os.write(marker, b"MARK")
    for _ in range(count):
        assert _fetch(port, {})[0] == 200
        assert _fetch(port, {"If-None-Match": etag})[0] == 304
    os.write(marker, b"MARK")
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
