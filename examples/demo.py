"""The otel_fileresp demo: real servers, real requests, the span tree of each.

Starts a uvicorn server (Starlette ``StaticFiles`` + a ``FileResponse`` route)
and an ``aiohttp.web`` server (``web.static`` + a ``FileResponse`` handler) on
127.0.0.1, instruments both, sends 200, 304 (If-None-Match and
If-Modified-Since), HEAD, Range, If-Range and missing-file requests over
loopback, and prints each response's spans. The 304s have no
``fileresp.open``.

Run it with ``python3 dev.py demo`` (which makes its own virtualenv), or in
any environment with otel-fileresp, opentelemetry-sdk, starlette, uvicorn and
aiohttp: ``python examples/demo.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

SHOWN_ATTRIBUTES = {
    "fileresp.response": ("fileresp.outcome", "fileresp.opened", "fileresp.transfer",
                          "fileresp.bytes", "fileresp.threadpool.jobs"),
    "fileresp.precondition": ("fileresp.precondition.result", "fileresp.precondition.header"),
    "fileresp.threadpool.wait": ("fileresp.threadpool.job",),
    "fileresp.send": ("fileresp.transfer", "fileresp.bytes", "fileresp.read.count"),
}  # fmt: skip
LABELS = {"fileresp.read.count": "reads", "fileresp.threadpool.jobs": "jobs"}


def make_files(root: Path) -> None:
    (root / "hello.txt").write_text("hello, file responses\n" * 50)
    (root / "photo.bin").write_bytes(os.urandom(300 * 1024))


def starlette_app(root: Path) -> Starlette:
    async def download(request: Any) -> FileResponse:
        return FileResponse(root / "photo.bin")

    return Starlette(
        routes=[Route("/download", download), Mount("/static", StaticFiles(directory=root))]
    )


def aiohttp_app(root: Path) -> web.Application:
    async def download(request: web.Request) -> web.FileResponse:
        return web.FileResponse(root / "photo.bin")

    app = web.Application()
    app.router.add_get("/download", download)
    app.router.add_static("/static", root)
    return app


def free_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


# An If-Range date older than the file: the range is ignored, the whole file sent.
STALE_DATE = "Thu, 01 Jan 1970 00:00:00 GMT"


def requests(etag: str, last_modified: str) -> list[tuple[str, str, dict[str, str]]]:
    return [
        ("GET", "/static/hello.txt", {}),
        ("GET", "/static/hello.txt", {"If-None-Match": etag}),
        ("GET", "/static/hello.txt", {"If-Modified-Since": last_modified}),
        ("HEAD", "/static/hello.txt", {}),
        ("GET", "/static/photo.bin", {"Range": "bytes=0-1023"}),
        (
            "GET",
            "/static/photo.bin",
            {"Range": "bytes=0-1023", "If-Range": "Thu, 01 Jan 1970 00:00:00 GMT"},
        ),
        ("GET", "/download", {}),
        ("GET", "/static/missing.txt", {}),
    ]


def describe(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    shown = [
        f"{LABELS.get(key, key.rsplit('.', 1)[-1])}={str(attributes[key]).lower()}"
        for key in SHOWN_ATTRIBUTES.get(span.name, ())
        if key in attributes
    ]
    duration_ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    return f"{span.name:<26} {duration_ms:8.3f} ms  {' '.join(shown)}"


def print_tree(spans: Sequence[ReadableSpan]) -> None:
    [root] = [s for s in spans if s.name == "fileresp.response"]
    children = sorted(
        (s for s in spans if s is not root), key=lambda s: (s.start_time or 0, s.name)
    )
    print(f"    {describe(root)}")
    for i, child in enumerate(children):
        branch = "└─" if i == len(children) - 1 else "├─"
        print(f"      {branch} {describe(child)}")


async def exercise(name: str, port: int, exporter: InMemorySpanExporter) -> list[tuple[int, bool]]:
    """Send the requests, print each reply's span tree; (status, opened) per reply."""
    print(f"\n=== {name} on http://127.0.0.1:{port}")
    results: list[tuple[int, bool]] = []
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        exporter.clear()
        async with session.get(f"{base}/static/hello.txt") as first:
            await first.read()
            etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
        await settle(exporter, 1)
        for method, path, headers in requests(etag, last_modified):
            exporter.clear()
            async with session.request(method, base + path, headers=headers) as reply:
                body = await reply.read()
            spans = await settle(exporter, 1)
            shown = " ".join(f"{k}: {v}" for k, v in headers.items())
            print(f"\n  {method} {path} {shown}\n  -> {reply.status}, {len(body)} body bytes")
            print_tree(spans)
            [root] = [s for s in spans if s.name == "fileresp.response"]
            results.append((reply.status, bool((root.attributes or {})["fileresp.opened"])))
    return results


async def settle(exporter: InMemorySpanExporter, responses: int) -> list[ReadableSpan]:
    """Wait (at most 5 s) until the server has finished ``responses`` file responses."""
    for _ in range(500):
        spans = list(exporter.get_finished_spans())
        if sum(s.name == "fileresp.response" for s in spans) >= responses:
            return spans
        await asyncio.sleep(0.01)
    raise RuntimeError("the server did not finish the file response in 5 s")


async def main() -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    StarletteFileResponseInstrumentor().instrument(tracer_provider=provider)
    AiohttpFileResponseInstrumentor().instrument(tracer_provider=provider)

    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        make_files(root)

        uvicorn_socket = free_socket()
        server = uvicorn.Server(
            uvicorn.Config(starlette_app(root), log_level="warning", lifespan="off")
        )
        serving = asyncio.ensure_future(server.serve(sockets=[uvicorn_socket]))
        while not server.started:
            await asyncio.sleep(0.01)
        runner = web.AppRunner(aiohttp_app(root))
        await runner.setup()
        aiohttp_socket = free_socket()
        await web.SockSite(runner, aiohttp_socket).start()

        try:
            results = await exercise(
                "Starlette (uvicorn)", uvicorn_socket.getsockname()[1], exporter
            )
            results += await exercise(
                "aiohttp (web.AppRunner)", aiohttp_socket.getsockname()[1], exporter
            )
        finally:
            server.should_exit = True
            await serving
            await runner.cleanup()

    opened_304 = sum(1 for status, opened in results if status == 304 and opened)
    total_304 = sum(1 for status, _ in results if status == 304)
    print(f"\n304 responses: {total_304}; of them opened a file: {opened_304}")
    return 1 if opened_304 else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
