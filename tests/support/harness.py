"""Real servers on loopback for the tests, and the SDK's in-memory telemetry.

Servers run in a background thread with their own event loop, so tests are
plain synchronous functions that talk HTTP with the standard library client,
as any other client would.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

SERVER_START_TIMEOUT = 10.0
SERVER_FINISH_TIMEOUT = 2.0
SPAN_WAIT_TIMEOUT = 5.0


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    # The server broke off the body before its declared length.
    incomplete: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def comparable_headers(self) -> list[tuple[str, str]]:
        """Headers that do not vary between two identical requests."""
        volatile = {"date", "server"}
        return [(k.lower(), v) for k, v in self.headers if k.lower() not in volatile]


class Telemetry:
    """SDK providers with an in-memory span exporter and metric reader."""

    def __init__(self, span_processors: tuple[Any, ...] = ()) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        for processor in span_processors:
            self.tracer_provider.add_span_processor(processor)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metric_reader])

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def clear(self) -> None:
        self.exporter.clear()

    def wait_for(self, name: str, count: int = 1) -> list[ReadableSpan]:
        """The finished spans called ``name``, once at least ``count`` exist."""
        deadline = time.monotonic() + SPAN_WAIT_TIMEOUT
        while True:
            found = [s for s in self.spans() if s.name == name]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.005)

    def metric_points(self, name: str) -> list[Any]:
        data = self.metric_reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def response_tree(spans: list[ReadableSpan], response: ReadableSpan) -> list[ReadableSpan]:
    """The phase spans under ``response``."""
    span_id = response.context.span_id
    return [s for s in spans if s.parent is not None and s.parent.span_id == span_id]


def child_names(spans: list[ReadableSpan], response: ReadableSpan) -> list[str]:
    return sorted(s.name for s in response_tree(spans, response))


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class LoopbackServer:
    """A server in a background thread; ``request()`` talks to it over loopback."""

    def __init__(self, port: int, loop: asyncio.AbstractEventLoop) -> None:
        self.port = port
        self.loop = loop

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, headers=dict(headers or {}))
            response = connection.getresponse()
            try:
                reply = Reply(response.status, response.getheaders(), response.read())
            except http.client.IncompleteRead as exc:
                return Reply(response.status, response.getheaders(), exc.partial, True)
            _let_the_server_finish(connection)
            return reply
        finally:
            connection.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the server's event loop thread and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(SERVER_START_TIMEOUT)


def _let_the_server_finish(connection: http.client.HTTPConnection) -> None:
    """Half-close the connection and wait (bounded) for the server to close it.

    A client that closes right after the last body byte races the server,
    which may still be finishing the response (aiohttp 3.9 drains the
    connection in ``write_eof`` after ``sendfile``, and fails with
    ``ConnectionResetError`` if the peer is already gone). The tests want the
    responses to end as they do for a patient client: the server sees the
    end of the request stream, finishes, and closes.
    """
    sock = connection.sock
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(SERVER_FINISH_TIMEOUT)
        while sock.recv(4096):
            pass
    except OSError:
        pass  # closed or reset already, or slow: nothing more to wait for


@contextmanager
def serve_asgi(app: Any, **config: Any) -> Iterator[LoopbackServer]:
    """Serve an ASGI app with a real uvicorn server on 127.0.0.1 (its h11
    protocol unless ``http=`` says otherwise: httptools is installed too)."""
    import uvicorn

    config.setdefault("http", "h11")

    class Server(uvicorn.Server):
        async def main_loop(self) -> None:
            """uvicorn's main loop, checking ``should_exit`` every 10 ms, not
            100: a test's server stops in about 0.1 s, not 0.2 (once a second
            becomes ten times a second for the rest ``on_tick`` does: the Date
            header)."""
            counter = 0
            should_exit = await self.on_tick(counter)
            while not should_exit:
                counter = (counter + 1) % 864000
                await asyncio.sleep(0.01)
                should_exit = await self.on_tick(counter)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn 0.54's shutdown, its 100 ms waits at 10 ms: stop
            accepting, ask every connection to close, wait for the connections
            and their tasks (``timeout_graceful_shutdown`` bounds that, then
            the tasks are cancelled), then the lifespan's shutdown."""
            for listener in self.servers:
                listener.close()
            for listening in sockets or []:
                listening.close()
            for connection in list(self.server_state.connections):
                connection.shutdown()
            await asyncio.sleep(0.01)
            try:
                await asyncio.wait_for(
                    self._closed(), timeout=self.config.timeout_graceful_shutdown
                )
            except TimeoutError:
                logging.getLogger("uvicorn.error").error(
                    "Cancel %s running task(s), timeout graceful shutdown exceeded",
                    len(self.server_state.tasks),
                )
                for task in self.server_state.tasks:
                    task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
            if not self.force_exit:
                await self.lifespan.shutdown()

        async def _closed(self) -> None:
            while self.server_state.connections and not self.force_exit:
                await asyncio.sleep(0.01)
            while self.server_state.tasks and not self.force_exit:
                await asyncio.sleep(0.01)
            for listener in self.servers:
                await listener.wait_closed()

    sock = _bound_socket()
    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off", **config))
    ready = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        ready.set()
        await task

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(SERVER_START_TIMEOUT):
        raise RuntimeError("uvicorn did not start")
    try:
        yield LoopbackServer(sock.getsockname()[1], loops[0])
    finally:
        server.should_exit = True
        thread.join(SERVER_START_TIMEOUT)
        sock.close()


@contextmanager
def serve_aiohttp(
    make_app: Callable[[], Any], shutdown_timeout: float = 60.0, **runner_options: Any
) -> Iterator[LoopbackServer]:
    """Serve an aiohttp app (built on the server's loop) with ``web.AppRunner``.

    ``shutdown_timeout``: how long the stopping server lets a running handler
    finish before cancelling it (aiohttp's default, 60 s); ``runner_options``
    go to ``AppRunner`` (``handler_cancellation=True``, say)."""
    from aiohttp import web

    sock = _bound_socket()
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    loops: list[asyncio.AbstractEventLoop] = []
    errors: list[BaseException] = []

    async def main() -> None:
        try:
            loops.append(asyncio.get_running_loop())
            runner = web.AppRunner(make_app(), shutdown_timeout=shutdown_timeout, **runner_options)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            stop.append(asyncio.Event())
        except BaseException as exc:
            errors.append(exc)
            ready.set()
            raise
        ready.set()
        try:
            await stop[0].wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    if not ready.wait(SERVER_START_TIMEOUT) or errors:
        raise RuntimeError(f"aiohttp did not start: {errors}")
    loop = loops[0]
    try:
        yield LoopbackServer(sock.getsockname()[1], loop)
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(SERVER_START_TIMEOUT + shutdown_timeout)
        sock.close()


# -- instrumenting, and reading what was recorded (every test module) --------

SCOPE = "otel_fileresp"
RESPONSE = "fileresp.response"


def http_scope(path: str, **extra: Any) -> dict[str, Any]:
    """An ASGI HTTP scope for a GET of ``path`` (``extra`` adds or replaces keys),
    for tests that call an ASGI app themselves, as a server would."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
    }
    scope.update(extra)
    return scope


def _instrumentors() -> dict[str, Any]:
    from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

    return {
        "starlette": StarletteFileResponseInstrumentor,
        "aiohttp": AiohttpFileResponseInstrumentor,
    }


@contextmanager
def instrumenting(framework: str | Any, providers: Any, **settings: Any) -> Iterator[Any]:
    """``framework`` (``"starlette"``, ``"aiohttp"`` or an instrumentor)
    instrumented with the tracer and meter providers of ``providers`` (a
    :class:`Telemetry`, or anything with both) while the context lasts; the
    suite's one way to instrument in process."""
    instrumentor = _instrumentors()[framework]() if isinstance(framework, str) else framework
    instrumentor.instrument(
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        **settings,
    )
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


def our_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [s for s in telemetry.spans() if s.instrumentation_scope.name == SCOPE]


def responses(telemetry: Telemetry) -> list[ReadableSpan]:
    """The ``fileresp.response`` spans recorded so far."""
    return [s for s in our_spans(telemetry) if s.name == RESPONSE]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})
