"""Drive each framework for real, as cheaply as the framework allows.

- Starlette: the ASGI app (a real ``Starlette`` with ``StaticFiles`` mounted)
  is called with a synthetic ``scope``/``receive``/``send`` on the running
  event loop, exactly as uvicorn calls it (ASGI spec 2.4, no
  ``http.response.pathsend``): Starlette's own code runs, with real anyio
  worker threads; no socket.
- aiohttp: a real aiohttp server (``AppRunner`` + ``SockSite`` on
  127.0.0.1) on the running loop, and a minimal keep-alive HTTP/1.1 client on
  the same loop: aiohttp's own parser, handler, ``FileResponse`` (sendfile)
  and executor jobs run; the client adds as little as an HTTP client can.

Both apps carry a tiny middleware that makes the request's ``traceparent``
header the current context (what a server span would do), so a batch can
run under a sampled or an unsampled parent. It runs with and without our
instrumentation alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns, process_time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()

FRAMEWORKS = ("starlette", "aiohttp")


@dataclass(frozen=True)
class Request:
    """One kind of request: what is sent and the status expected back."""

    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    status: int


def requests_for(etag: str, traceparent: str) -> dict[str, Request]:
    """The request kinds, all for the 4 KiB file under ``/static``."""
    path = "/static/small.txt"
    tp = (("traceparent", traceparent),)
    return {
        "200": Request("200", "GET", path, tp, 200),
        "304": Request("304", "GET", path, (*tp, ("if-none-match", etag)), 304),
        "HEAD": Request("HEAD", "HEAD", path, tp, 200),
        "Range": Request("Range", "GET", path, (*tp, ("range", "bytes=0-99")), 206),
    }


# -- Starlette, in-process ASGI -------------------------------------------------

Scope = MutableMapping[str, Any]


class PropagatingASGI:
    """The outermost ASGI app: makes ``traceparent`` the current context."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        carrier = {}
        for key, value in scope["headers"]:
            if key == b"traceparent":
                carrier["traceparent"] = value.decode("latin-1")
        token = context_api.attach(_PROPAGATOR.extract(carrier))
        try:
            await self.app(scope, receive, send)
        finally:
            context_api.detach(token)


def starlette_app(root: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return PropagatingASGI(Starlette(routes=[Mount("/static", StaticFiles(directory=str(root)))]))


def asgi_scope(request: Request) -> dict[str, Any]:
    """The scope uvicorn would build for ``request`` (ASGI 3, spec 2.4)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": request.method,
        "root_path": "",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")]
        + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "state": {},
    }


class StarletteDriver:
    """Calls the ASGI app directly on the running loop."""

    framework = "starlette"

    def __init__(self, root: Path) -> None:
        self.app = starlette_app(root)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def one(self, request: Request) -> tuple[int, dict[str, str], int]:
        """One response: status, headers, body size."""
        status = 0
        headers: dict[str, str] = {}
        size = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers, size
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = {k.decode(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))

        await self.app(asgi_scope(request), receive, send)
        return status, headers, size

    async def batch(self, request: Request, count: int) -> tuple[float, float]:
        """Serve ``count`` responses; wall and process CPU seconds per response."""
        app = self.app
        template = asgi_scope(request)
        expected = request.status
        wrong = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal wrong
            if message["type"] == "http.response.start" and message["status"] != expected:
                wrong += 1

        cpu_started = process_time_ns()
        started = perf_counter_ns()
        for _ in range(count):
            await app(dict(template), receive, send)
        elapsed = perf_counter_ns() - started
        cpu = process_time_ns() - cpu_started
        if wrong:
            raise RuntimeError(f"starlette answered {wrong} of {count} {request.name} wrongly")
        return elapsed / count / 1e9, cpu / count / 1e9


# -- aiohttp, real server on loopback -----------------------------------------


def aiohttp_app(root: Path) -> Any:
    from aiohttp import web

    @web.middleware
    async def propagating(request: web.Request, handler: Any) -> Any:
        carrier = {}
        traceparent = request.headers.get("traceparent")
        if traceparent is not None:
            carrier["traceparent"] = traceparent
        token = context_api.attach(_PROPAGATOR.extract(carrier))
        try:
            return await handler(request)
        finally:
            context_api.detach(token)

    app = web.Application(middlewares=[propagating])
    app.add_routes([web.static("/static", root)])
    return app


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def raw_request(request: Request, port: int) -> bytes:
    lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in request.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return status, headers


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection; reads bodies by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> KeepAliveClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        return cls(reader, writer)

    async def exchange(self, raw: bytes, head_only: bool) -> tuple[int, dict[str, str], int]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status, headers = parse_head(head)
        length = int(headers.get("content-length", "0"))
        if head_only or status in (204, 304) or not length:
            return status, headers, 0
        await self.reader.readexactly(length)
        return status, headers, length

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class AiohttpDriver:
    """A real aiohttp server and one keep-alive client on the running loop."""

    framework = "aiohttp"

    def __init__(self, root: Path, make_app: Callable[[Path], Any] = aiohttp_app) -> None:
        self.root = root
        self.make_app = make_app
        self.runner: Any = None
        self.port = 0
        self.client: KeepAliveClient | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        from aiohttp import web

        self._sock = loopback_socket()
        self.port = self._sock.getsockname()[1]
        self.runner = web.AppRunner(self.make_app(self.root), access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self._sock).start()
        self.client = await KeepAliveClient.connect(self.port)

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.runner is not None:
            await self.runner.cleanup()
        if self._sock is not None:
            self._sock.close()

    async def one(self, request: Request) -> tuple[int, dict[str, str], int]:
        assert self.client is not None
        return await self.client.exchange(raw_request(request, self.port), request.method == "HEAD")

    async def batch(self, request: Request, count: int) -> tuple[float, float]:
        """Serve ``count`` responses; wall and process CPU seconds per response."""
        client = self.client
        assert client is not None
        raw = raw_request(request, self.port)
        head_only = request.method == "HEAD"
        expected = request.status
        wrong = 0
        cpu_started = process_time_ns()
        started = perf_counter_ns()
        for _ in range(count):
            status, _, _ = await client.exchange(raw, head_only)
            if status != expected:
                wrong += 1
        elapsed = perf_counter_ns() - started
        cpu = process_time_ns() - cpu_started
        if wrong:
            raise RuntimeError(f"aiohttp answered {wrong} of {count} {request.name} wrongly")
        return elapsed / count / 1e9, cpu / count / 1e9


Driver = StarletteDriver | AiohttpDriver


def make_driver(framework: str, root: Path) -> Driver:
    return StarletteDriver(root) if framework == "starlette" else AiohttpDriver(root)


async def etag_of(driver: Driver, traceparent: str) -> str:
    request = Request("probe", "GET", "/static/small.txt", (("traceparent", traceparent),), 200)
    status, headers, _ = await driver.one(request)
    if status != 200 or "etag" not in headers:
        raise RuntimeError(f"{driver.framework}: no ETag on /static/small.txt ({status})")
    return headers["etag"]


def instrumentor_for(framework: str) -> Any:
    if framework == "starlette":
        from otel_fileresp.starlette import StarletteFileResponseInstrumentor

        return StarletteFileResponseInstrumentor()
    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    return AiohttpFileResponseInstrumentor()
