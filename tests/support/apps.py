"""What the reliability tests share: one way to serve either framework.

``serve(framework, root, telemetry)`` runs a real server on loopback (uvicorn
for Starlette, an aiohttp ``AppRunner`` for aiohttp) for the same two routes,
``/static/...`` (``StaticFiles`` / ``web.static``) and ``/file/{name}`` (a
handler returning a bare ``FileResponse``), and instruments it with
``telemetry`` (or not, with None). Order, for both frameworks: the job counter
is installed first, the app is built and served, then the instrumentor runs
(as in an app that imports the framework before ``instrument()``); on the way
out the server stops while still instrumented, then it is uninstrumented.

The ``Served`` it yields sees the server from outside the instrumentation:

- ``jobs()``: worker-pool jobs the framework submitted (Starlette: a wrapper of
  ``anyio.to_thread.run_sync`` installed before ours; aiohttp: the counting
  default executor of ``support.aiohttp_site``);
- ``entered()`` / ``done()``: requests that reached the app and requests the
  framework has completely finished (Starlette: the app returned; aiohttp:
  the access log ran, after ``prepare``), so a test waits for ``settled()``
  instead of sleeping;
- a W3C ``traceparent`` request header is made the current context while the
  app runs, as a server span would, so a test can tell requests apart by
  trace ID.

``python -m support.apps serve FRAMEWORK ROOT`` (from tests/) serves the same app without
instrumentation in a separate process (``serve_subprocess``): the reference
for differential tests that need both side by side.

The Starlette helpers ``make_app``, ``instrumented``, ``counting_jobs`` and
``without_boundary`` are the ones of ``test_starlette.py``, kept here once.
"""

from __future__ import annotations

import gc
import http.client
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from opentelemetry import context as context_api
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor
from support.harness import (
    SCOPE,
    LoopbackServer,
    Reply,
    Telemetry,
    instrumenting,
    serve_aiohttp,
    serve_asgi,
)

FRAMEWORKS = ("starlette", "aiohttp")
SETTLE_TIMEOUT = 10.0
_PROPAGATOR = TraceContextTextMapPropagator()


# -- Starlette (shared with test_starlette.py) --------------------------------


class EagerStaticFiles(StaticFiles):
    """A regression on purpose: opens the served file for a 304 as well."""

    async def get_response(self, path: str, scope: Any) -> Any:
        response = await super().get_response(path, scope)
        if response.status_code == 304:
            file = await anyio.open_file(Path(str(self.directory), path), "rb")
            await file.aclose()
        return response


def make_app(directory: Path) -> Starlette:
    async def file_route(request: Any) -> FileResponse:
        return FileResponse(os.path.join(directory, request.path_params["name"]))

    return Starlette(
        routes=[
            Route("/file/{name}", file_route),
            Mount("/static", StaticFiles(directory=str(directory))),
        ]
    )


@contextmanager
def counting_jobs() -> Iterator[list[str]]:
    """Count anyio worker-thread jobs; installed before instrumenting, so it
    sees exactly the jobs Starlette submits (ours wraps it, adding none).
    It keeps each job's name, not the callable: a bound ``read`` would keep
    its file object (and descriptor) alive."""
    original = anyio.to_thread.run_sync
    jobs: list[str] = []

    async def counting_run_sync(func: Any, *args: Any, **kwargs: Any) -> Any:
        jobs.append(getattr(func, "__name__", type(func).__name__))
        return await original(func, *args, **kwargs)

    anyio.to_thread.run_sync = counting_run_sync
    try:
        yield jobs
    finally:
        anyio.to_thread.run_sync = original


def without_boundary(reply: Reply) -> tuple[Any, ...]:
    """The reply with its random multipart boundary replaced by a constant,
    without the headers that vary between identical requests (Date, Server)."""
    headers, body = reply.comparable_headers(), reply.body
    found = re.search(r"boundary=(\w+)", " ".join(v for _, v in reply.headers))
    if found:
        boundary = found.group(1)
        headers = [(k, v.replace(boundary, "BOUNDARY")) for k, v in headers]
        body = body.replace(boundary.encode(), b"BOUNDARY")
    return reply.status, headers, body, reply.incomplete


# -- instrumenting either framework ---------------------------------------


INSTRUMENTORS: dict[str, Any] = {
    "starlette": StarletteFileResponseInstrumentor,
    "aiohttp": AiohttpFileResponseInstrumentor,
}


class CustomTelemetry(Telemetry):
    """``support.harness.Telemetry`` with extra span processors, metric readers or an
    exemplar filter (the in-memory exporter and reader are still there)."""

    def __init__(
        self,
        span_processors: tuple[Any, ...] = (),
        metric_readers: Sequence[MetricReader] = (),
        exemplar_filter: Any = None,
    ) -> None:
        super().__init__(span_processors)
        self.meter_provider.shutdown()
        self.metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(
            metric_readers=[self.metric_reader, *metric_readers], exemplar_filter=exemplar_filter
        )


# -- serving either framework ----------------------------------------------


class Counter:
    """Requests that reached the app, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered = 0
        self.done = 0

    def enter(self) -> None:
        with self._lock:
            self.entered += 1

    def leave(self) -> None:
        with self._lock:
            self.done += 1


def _attach_trace_context(carrier: dict[str, str]) -> Any:
    return context_api.attach(_PROPAGATOR.extract(carrier))


class Tracked:
    """The outermost ASGI app: counts requests, applies ``traceparent``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counter = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.counter.enter()
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        token = _attach_trace_context(carrier)
        try:
            await self.app(scope, receive, send)
        finally:
            context_api.detach(token)
            self.counter.leave()


def make_aiohttp_app(root: Path, probe: Any, counter: Counter) -> Any:
    """``support.aiohttp_site.build_app`` plus a middleware that counts requests
    and applies ``traceparent`` (the handler builds the FileResponse there)."""
    from aiohttp import web

    from support.aiohttp_site import build_app

    @web.middleware
    async def tracking(request: web.Request, handler: Any) -> Any:
        counter.enter()
        token = _attach_trace_context(dict(request.headers))
        try:
            return await handler(request)
        finally:
            context_api.detach(token)

    app = build_app(root, probe)
    app.middlewares.append(tracking)
    return app


@dataclass
class Served:
    """A running server of one framework, seen from outside."""

    framework: str
    server: LoopbackServer
    jobs: Callable[[], int]
    entered: Callable[[], int]
    done: Callable[[], int]
    idle: Callable[[], bool]
    # Stop the server now (still instrumented); serve() does it at the end anyway.
    stop: Callable[[], None]

    @property
    def port(self) -> int:
        return self.server.port

    def request(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[str, str | bytes]] | dict[str, str] = (),
        timeout: float = 10.0,
    ) -> Reply:
        return send_request(self.port, method, path, headers, timeout)

    def settled(self, timeout: float = SETTLE_TIMEOUT) -> bool:
        """Wait until every request that reached the app is finished and the
        pool has run every job submitted (aiohttp 3.11.10+ closes late)."""
        deadline = time.monotonic() + timeout
        while self.done() < self.entered() or not self.idle():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True


def send_request(
    port: int,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str | bytes]] | dict[str, str] = (),
    timeout: float = 10.0,
) -> Reply:
    """One request on a new connection; header values may be raw bytes and
    names may repeat. Raises what http.client raises when there is no reply."""
    items = list(headers.items()) if isinstance(headers, dict) else list(headers)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.putrequest(method, path)
        for name, value in items:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        try:
            return Reply(response.status, response.getheaders(), response.read())
        except http.client.IncompleteRead as exc:
            return Reply(response.status, response.getheaders(), exc.partial, True)
    finally:
        connection.close()


@contextmanager
def serve(
    framework: str,
    root: Path,
    telemetry: Telemetry | None = None,
    *,
    shutdown_timeout: float | None = None,
    instrument: Callable[[], AbstractContextManager[Any]] | None = None,
    **settings: Any,
) -> Iterator[Served]:
    """Serve ``root`` with ``framework``, instrumented with ``telemetry``
    (``instrument`` replaces the default ``instrumenting(...)``);
    ``shutdown_timeout`` bounds how long stopping waits for running responses."""
    with ExitStack() as outer:
        server_stack = ExitStack()
        outer.callback(server_stack.close)
        if framework == "starlette":
            counted = outer.enter_context(counting_jobs())
            tracked = Tracked(make_app(root))
            config = (
                {} if shutdown_timeout is None else {"timeout_graceful_shutdown": shutdown_timeout}
            )
            server = server_stack.enter_context(serve_asgi(tracked, **config))
            served = Served(
                framework,
                server,
                jobs=lambda: len(counted),
                entered=lambda: tracked.counter.entered,
                done=lambda: tracked.counter.done,
                idle=lambda: True,
                stop=server_stack.close,
            )
        else:
            from support.aiohttp_site import ServerProbe

            probe = ServerProbe()
            outer.callback(probe.executor.shutdown, wait=True)
            counter = Counter()
            server = server_stack.enter_context(
                serve_aiohttp(
                    lambda: make_aiohttp_app(root, probe, counter),
                    60.0 if shutdown_timeout is None else shutdown_timeout,
                )
            )
            executor = probe.executor
            served = Served(
                framework,
                server,
                jobs=lambda: executor.submitted,
                entered=lambda: counter.entered,
                done=lambda: probe.finished_requests,
                idle=lambda: executor.done >= executor.submitted,
                stop=server_stack.close,
            )
        if instrument is not None:
            outer.enter_context(instrument())
        elif telemetry is not None:
            outer.enter_context(instrumenting(framework, telemetry, **settings))
        try:
            yield served
        finally:
            server_stack.close()  # stop the server while still instrumented


@contextmanager
def serve_subprocess(framework: str, root: Path) -> Iterator[int]:
    """The same app, never instrumented, in another process; yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "support.apps", "serve", framework, str(root)],
        cwd=Path(__file__).resolve().parents[1],  # tests/: ``support`` importable
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # bounded: the child exits on any error
        if not line.startswith("PORT "):
            raise RuntimeError(f"reference server did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(SETTLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(SETTLE_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


# A file of the ``files`` fixture, and W3C trace contexts for requests.
PATH = "/static/small.txt"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def serve_requests(
    framework: str, files: Path, telemetry: Telemetry, headers: dict[str, str], **settings: Any
) -> None:
    """A 200 and a 304 of the same file, after one warm-up 200."""
    with serve(framework, files, telemetry, **settings) as served:
        first = served.request("GET", PATH, headers)
        etag = first.header("etag")
        assert first.status == 200 and etag
        assert served.request("GET", PATH, headers).status == 200
        assert served.request("GET", PATH, {**headers, "If-None-Match": etag}).status == 304
        assert served.settled()


# -- reading what was exported ------------------------------------------------


def points(telemetry: Telemetry, name: str) -> list[Any]:
    return telemetry.metric_points(name)


def counts_by_phase(telemetry: Telemetry) -> dict[str, int]:
    found: dict[str, int] = {}
    for point in points(telemetry, "fileresp.phase.duration"):
        phase = point.attributes["fileresp.phase"]
        found[phase] = found.get(phase, 0) + point.count
    return found


def metric_attributes(telemetry: Telemetry) -> list[tuple[str, dict[str, Any]]]:
    """(metric name, point attributes) of every data point of ours."""
    found: list[tuple[str, dict[str, Any]]] = []
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name != SCOPE:
                continue
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    found.append((metric.name, dict(point.attributes or {})))
    return found


# -- file descriptors ----------------------------------------------------------


def open_fds() -> dict[int, str]:
    """This process's open descriptors and what they point at."""
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile (or the listing's own descriptor)
    return found


def fds_on(path: Path) -> list[int]:
    """Descriptors of this process open on ``path``."""
    target = str(path)
    return [fd for fd, link in open_fds().items() if link == target]


def wait_closed(path: Path, timeout: float = 5.0) -> list[int]:
    """Wait (bounded) until no descriptor is open on ``path``; the ones still
    open then. No garbage collection: the file must have been closed, or
    freed as soon as nothing referred to it."""
    deadline = time.monotonic() + timeout
    while (on_path := fds_on(path)) and time.monotonic() < deadline:
        time.sleep(0.01)
    return on_path


def wait_fd_count(baseline: int, timeout: float = 5.0) -> int:
    """Wait (bounded) until at most ``baseline`` descriptors are open, letting
    the garbage collector run (a server may leave a socket to it); the count."""
    deadline = time.monotonic() + timeout
    while (count := len(open_fds())) > baseline and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return count


if __name__ == "__main__":
    # python -m support.apps serve FRAMEWORK ROOT (from tests/): the uninstrumented reference.
    _, command, framework_name, served_root = sys.argv
    assert command == "serve"
    with serve(framework_name, Path(served_root)) as reference:
        print(f"PORT {reference.port}", flush=True)
        sys.stdin.read()
