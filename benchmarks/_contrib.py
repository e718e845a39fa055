"""Apps under contrib's server instrumentation, the telemetry setup of the
``instructions`` section, and the capture and replay of this package's span
calls.

Every app here has contrib's middleware as the request's parent, as in
production: ``OpenTelemetryMiddleware`` (opentelemetry-instrumentation-asgi)
around the Starlette app, and the middleware of
opentelemetry-instrumentation-aiohttp-server in the aiohttp app. Both read
the request's ``traceparent`` (the global propagator), so a batch runs under
a sampled or an unsampled parent; the same app without the middleware is the
``nomw`` reference (what contrib's middleware itself adds).

Nothing here imports the SDK at module level: the ``nosdk`` processes run
with ``opentelemetry.sdk`` made unimportable (``block_sdk()``), as if it
were not installed.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers import KeepAliveClient, asgi_scope, loopback_socket, raw_request

SCOPE = "otel_fileresp"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENTS = {
    "unsampled": f"00-{TRACE_ID}-{PARENT_ID}-00",
    "sampled": f"00-{TRACE_ID}-{PARENT_ID}-01",
}
FILE = "/static/100k.bin"  # _common.FILE_100K (not imported: _common imports the SDK)
NONFILE = "/work"  # a sync Starlette endpoint; an aiohttp handler using the executor


@dataclass(frozen=True)
class Request:
    path: str
    method: str
    headers: tuple[tuple[str, str], ...]
    status: int


def request_for(kind: str, sampling: str, etag: str) -> Request:
    """``kind``: ``200``, ``304`` (If-None-Match with the file's ETag) or
    ``nonfile``; ``sampling``: ``sampled`` or ``unsampled`` parent."""
    headers: tuple[tuple[str, str], ...] = (("traceparent", TRACEPARENTS[sampling]),)
    if kind == "nonfile":
        return Request(NONFILE, "GET", headers, 200)
    if kind == "304":
        return Request(FILE, "GET", (*headers, ("if-none-match", etag)), 304)
    return Request(FILE, "GET", headers, 200)


# -- no SDK ------------------------------------------------------------------


class _NoSDK(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


def block_sdk() -> None:
    """Make ``opentelemetry.sdk`` unimportable in this process, as if it were
    not installed; must run before anything imports it."""
    if any(name.startswith("opentelemetry.sdk") for name in sys.modules):
        raise RuntimeError("opentelemetry.sdk is already imported")
    sys.meta_path.insert(0, _NoSDK())


# -- the SDK set-up ----------------------------------------------------------


class Telemetry:
    """The global SDK providers, with nothing running in the background.

    Spans: ``TracerProvider()`` (its default sampler, ParentBased(ALWAYS_ON)),
    a ``SimpleSpanProcessor`` into an exporter that only counts: each span is
    exported synchronously, inside the counted window, at its cost to the SDK,
    and no BatchSpanProcessor thread runs. Metrics: an ``InMemoryMetricReader``
    (no PeriodicExportingMetricReader thread), collected outside the window.
    Set as the global providers, as ``opentelemetry-instrument`` does: contrib's
    middleware and this package (default settings) both use them.
    """

    def __init__(self) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            SimpleSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class CountingExporter(SpanExporter):
            def __init__(self) -> None:
                self.spans: dict[str, int] = {}

            def export(self, spans: Any) -> Any:
                for span in spans:
                    scope = span.instrumentation_scope
                    name = scope.name if scope else ""
                    self.spans[name] = self.spans.get(name, 0) + 1
                return SpanExportResult.SUCCESS

            def shutdown(self) -> None:
                pass

        self.exporter = CountingExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        trace.set_tracer_provider(self.tracer_provider)
        metrics.set_meter_provider(self.meter_provider)

    def collect(self) -> None:
        """Collect the metrics (outside the counted window)."""
        self.reader.get_metrics_data()

    def ours(self) -> int:
        return self.exporter.spans.get(SCOPE, 0)


# -- apps and drivers --------------------------------------------------------


def _starlette_inner(root: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    def work(request: Any) -> Any:  # sync: Starlette runs it with anyio's run_sync
        return PlainTextResponse("ok")

    return Starlette(
        routes=[Route(NONFILE, work), Mount("/static", StaticFiles(directory=str(root)))]
    )


class StarletteApps:
    """The ASGI app called directly on the running loop, as uvicorn calls it
    (no socket): with contrib's ``OpenTelemetryMiddleware`` and without."""

    framework = "starlette"

    def __init__(self, root: Path) -> None:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        inner = _starlette_inner(root)
        self.apps = {"mw": OpenTelemetryMiddleware(inner), "nomw": inner}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def one(self, app: str, request: Request) -> tuple[int, dict[str, str]]:
        status = 0
        headers: dict[str, str] = {}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = {k.decode(): v.decode() for k, v in message["headers"]}

        await self.apps[app](asgi_scope(request), receive, send)  # type: ignore[arg-type]
        return status, headers

    def batch(self, app_name: str, request: Request) -> Callable[[int], Any]:
        app = self.apps[app_name]
        template = asgi_scope(request)  # type: ignore[arg-type]
        expected = request.status
        wrong = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal wrong
            if message["type"] == "http.response.start" and message["status"] != expected:
                wrong += 1

        async def run(count: int) -> None:
            nonlocal wrong
            wrong = 0
            for _ in range(count):
                await app(dict(template), receive, send)
            if wrong:
                raise RuntimeError(f"starlette: {wrong} of {count} not {expected}")

        return run


def _work_blocking() -> int:
    return 1


class AiohttpApps:
    """Two real aiohttp servers on loopback (with contrib's middleware, and
    without) and one keep-alive client each, all on the running loop."""

    framework = "aiohttp"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runners: dict[str, Any] = {}
        self.ports: dict[str, int] = {}
        self.clients: dict[str, KeepAliveClient] = {}
        self.sockets: list[Any] = []

    def _app(self) -> Any:
        from aiohttp import web

        async def work(request: Any) -> Any:
            await asyncio.get_running_loop().run_in_executor(None, _work_blocking)
            return web.Response(text="ok")

        app = web.Application()
        app.add_routes([web.get(NONFILE, work), web.static("/static", self.root)])
        return app

    async def start(self) -> None:
        from aiohttp import web
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        # contrib's documented way: instrument() makes web.Application insert
        # its middleware (and creates its instruments from the global meter).
        instrumentor = AioHttpServerInstrumentor()
        instrumentor.instrument()
        try:
            with_middleware = self._app()
        finally:
            instrumentor.uninstrument()
        for name, app in (("mw", with_middleware), ("nomw", self._app())):
            sock = loopback_socket()
            self.sockets.append(sock)
            self.ports[name] = sock.getsockname()[1]
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self.runners[name] = runner
            self.clients[name] = await KeepAliveClient.connect(self.ports[name])

    async def stop(self) -> None:
        for client in self.clients.values():
            await client.close()
        for runner in self.runners.values():
            await runner.cleanup()
        for sock in self.sockets:
            sock.close()

    async def one(self, app: str, request: Request) -> tuple[int, dict[str, str]]:
        status, headers, _ = await self.clients[app].exchange(
            raw_request(request, self.ports[app]),  # type: ignore[arg-type]
            False,
        )
        return status, headers

    def batch(self, app: str, request: Request) -> Callable[[int], Any]:
        client = self.clients[app]
        raw = raw_request(request, self.ports[app])  # type: ignore[arg-type]
        expected = request.status

        async def run(count: int) -> None:
            wrong = 0
            for _ in range(count):
                status, _, _ = await client.exchange(raw, False)
                if status != expected:
                    wrong += 1
            if wrong:
                raise RuntimeError(f"aiohttp: {wrong} of {count} not {expected}")

        return run


Apps = StarletteApps | AiohttpApps


def make_apps(framework: str, root: Path) -> Apps:
    return StarletteApps(root) if framework == "starlette" else AiohttpApps(root)


def instrumentor_for(framework: str) -> Any:
    if framework == "starlette":
        from otel_fileresp.starlette import StarletteFileResponseInstrumentor

        return StarletteFileResponseInstrumentor()
    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    return AiohttpFileResponseInstrumentor()


def patch_points(instrumentor: Any) -> list[tuple[Any, str, Any, str, bool]]:
    """Where ``instrument()`` patches: ``(owner, attribute, original, hook
    name, plain)`` for each layer of this package it installs, a wrapt
    wrapper or a plain function (found by looking through every loaded module
    and its classes), then uninstrumented."""
    import wrapt

    from otel_fileresp._patching import _PLAIN_MARK

    instrumentor.instrument()
    found = []
    seen = set()
    try:
        for module in list(sys.modules.values()):
            name = getattr(module, "__name__", "") or ""
            if module is None or name.startswith("otel_fileresp"):
                continue
            owners: list[Any] = [module]
            owners += [v for v in vars(module).values() if isinstance(v, type)]
            for owner in owners:
                for attribute, value in list(vars(owner).items()):
                    plain = hasattr(value, _PLAIN_MARK)
                    if not (plain or isinstance(value, wrapt.FunctionWrapper)):
                        continue
                    hook = getattr(value, _PLAIN_MARK if plain else "_self_wrapper", None)
                    hook = getattr(hook, "__func__", hook)
                    if not (getattr(hook, "__module__", "") or "").startswith(SCOPE):
                        continue
                    if (id(owner), attribute) in seen:
                        continue
                    seen.add((id(owner), attribute))
                    found.append((owner, attribute, value.__wrapped__, hook.__qualname__, plain))
    finally:
        instrumentor.uninstrument()
    return found


def _call_through(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


def call_through_patches(instrumentor: Any) -> list[str]:
    """This package's patch points wrapped as ``instrument()`` wraps them (a
    wrapt wrapper, or a plain function) by wrappers that only call through;
    their names."""
    from otel_fileresp._patching import Patch, PatchSet

    names = []
    patches = []
    for owner, attribute, _, _, plain in patch_points(instrumentor):
        owner_name = (
            f"{owner.__module__}:{owner.__qualname__}"
            if isinstance(owner, type)
            else owner.__name__
        )
        patches.append(Patch(owner_name, attribute, _call_through, plain=plain))
        names.append(f"{getattr(owner, '__qualname__', owner.__name__)}.{attribute}")
    PatchSet("call-through").apply(patches)
    return names


# -- capture and replay of this package's span calls ------------------------


@dataclass
class SpanCalls:
    """The SDK span calls this package made for one response, in order:
    ``("start", index, parent, name, kwargs)`` (``parent``: the index of an
    earlier span, or the parent's SpanContext when it is not one of ours),
    ``(method, index, args, kwargs)`` for the other Span methods."""

    calls: list[tuple[Any, ...]] = field(default_factory=list)
    spans: int = 0
    # the SDK ``Histogram.record`` calls on this package's instruments, in
    # order: ``(instrument, amount, attributes, context)`` as passed
    metrics: list[tuple[Any, float, Any, Any]] = field(default_factory=list)

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for call in self.calls:
            kinds[call[0]] = kinds.get(call[0], 0) + 1
        return ", ".join(f"{kind} {count}" for kind, count in kinds.items())

    def metrics_summary(self) -> str:
        return ", ".join(
            f"{instrument.name}({len(attributes or ())} attributes"
            f"{', a context' if context is not None else ''})"
            for instrument, _, attributes, context in self.metrics
        )


_SPAN_METHODS = (
    "set_attribute",
    "set_attributes",
    "add_event",
    "add_link",
    "set_status",
    "record_exception",
    "update_name",
    "end",
)


class Capture:
    """While active, records every span call made through a tracer of this
    package's scope (the SDK's ``Tracer.start_span`` and its ``Span``
    methods, patched on the classes; a call made from inside another
    recorded call, such as ``set_attribute`` calling ``set_attributes``, is
    not recorded twice), and every ``Histogram.record`` call on an
    instrument of this package's scope (the SDK's ``Histogram``, patched on
    the class)."""

    def __init__(self) -> None:
        from opentelemetry.sdk import trace as sdk_trace

        self._sdk = sdk_trace
        self.result = SpanCalls()
        self._index: dict[int, int] = {}
        self._depth = 0
        self._saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Capture:
        from opentelemetry import trace

        sdk = self._sdk
        capture = self

        original_start = sdk.Tracer.start_span

        def start_span(
            tracer: Any, name: str, context: Any = None, *args: Any, **kwargs: Any
        ) -> Any:
            ours = tracer.instrumentation_info.name == SCOPE and capture._depth == 0
            capture._depth += 1
            try:
                span = original_start(tracer, name, context, *args, **kwargs)
            finally:
                capture._depth -= 1
            if ours:
                parent_span = trace.get_current_span(context)
                parent: Any = capture._index.get(id(parent_span), parent_span.get_span_context())
                index = capture.result.spans
                capture._index[id(span)] = index
                capture.result.spans += 1
                capture.result.calls.append(
                    ("start", index, parent, name, _positional_start(args, kwargs))
                )
            return span

        self._patch(sdk.Tracer, "start_span", start_span)
        for method in _SPAN_METHODS:
            self._patch(sdk.Span, method, self._recording(method, getattr(sdk.Span, method)))

        from opentelemetry.sdk.metrics._internal.instrument import Histogram

        original_record = Histogram.record

        def record(
            instrument: Any, amount: float, attributes: Any = None, context: Any = None
        ) -> Any:
            if instrument.instrumentation_scope.name == SCOPE:
                capture.result.metrics.append((instrument, amount, attributes, context))
            return original_record(instrument, amount, attributes, context)

        self._patch(Histogram, "record", record)
        return self

    def _recording(self, method: str, original: Callable[..., Any]) -> Callable[..., Any]:
        capture = self

        def recorded(span: Any, *args: Any, **kwargs: Any) -> Any:
            index = capture._index.get(id(span))
            if index is not None and capture._depth == 0:
                capture.result.calls.append((method, index, _copy(args), _copy(kwargs)))
            capture._depth += 1
            try:
                return original(span, *args, **kwargs)
            finally:
                capture._depth -= 1

        return recorded

    def _patch(self, owner: Any, name: str, replacement: Any) -> None:
        self._saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, replacement)

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_START_PARAMETERS = (
    "kind",
    "attributes",
    "links",
    "start_time",
    "record_exception",
    "set_status_on_exception",
)


def _positional_start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """``start_span``'s arguments after ``name`` and ``context``, as keywords."""
    named = dict(zip(_START_PARAMETERS, args, strict=False))
    named.update(kwargs)
    return _copy(named)


def replayer(tracer: Any, calls: SpanCalls) -> Callable[[], None]:
    """One response's span calls made straight against the SDK: the same
    names, parents, kinds, attributes, timestamps and Span method calls, no
    code of this package. A span that parents another is put in a context
    once (``set_span_in_context``), as any caller must."""
    from opentelemetry.trace import NonRecordingSpan, set_span_in_context

    program = []
    for call in calls.calls:
        if call[0] == "start":
            _, index, parent, name, kwargs = call
            if not isinstance(parent, int):
                parent = set_span_in_context(NonRecordingSpan(parent))
            program.append((0, index, parent, name, kwargs))
        else:
            method, index, args, kwargs = call
            program.append((1, index, method, args, kwargs))
    parents = {c[2] for c in program if c[0] == 0 and isinstance(c[2], int)}
    size = calls.spans

    def replay() -> None:
        spans: list[Any] = [None] * size
        contexts: list[Any] = [None] * size
        for op, index, a, b, c in program:
            if op == 0:
                context = contexts[a] if isinstance(a, int) else a
                span = spans[index] = tracer.start_span(b, context, **c)
                if index in parents:
                    contexts[index] = set_span_in_context(span)
            else:
                getattr(spans[index], a)(*b, **c)

    return replay


def metric_replayer(calls: SpanCalls) -> Callable[[], None]:
    """One response's ``Histogram.record`` calls made straight against the
    SDK: the same instruments (so the same meter provider, views and
    series), amounts, attribute mappings and contexts, no code of this
    package."""
    program = tuple(calls.metrics)

    def replay() -> None:
        for instrument, amount, attributes, context in program:
            instrument.record(amount, attributes, context=context)

    return replay
