"""The app's start and end, in process: the flush at shutdown and the zero series.

The global providers are the SDK set up as ``opentelemetry-instrument`` sets
it up (a ``BatchSpanProcessor`` and a ``PeriodicExportingMetricReader``), with
a 60 s schedule so nothing is exported on its own during a test: what the
exporters hold after the app stopped was flushed by the package. The
providers are made global for the test only (``get_tracer_provider`` and
``get_meter_provider`` are replaced, then restored).

The apps have no flush code: Starlette with no lifespan, with a lifespan of
its own, FastAPI; aiohttp through ``AppRunner`` (what ``web.run_app`` and
gunicorn's ``GunicornWebWorker`` use). With ``flush_on_shutdown=False`` the
exporters hold nothing, so the tests measure the flush. Real servers stopped
by SIGTERM are in test_servers.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from support.harness import http_scope, instrumenting

from otel_fileresp import _lifecycle
from otel_fileresp._log import forget_logged
from otel_fileresp.settings import Settings

LONG_MS = 60_000


class PointExporter(MetricExporter):
    """Keeps every export (cumulative: the last one holds every count)."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass

    def points(self, name: str) -> list[Any]:
        if not self.exports:
            return []
        found: list[Any] = []
        for resource_metrics in self.exports[-1].resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def count(self, name: str) -> int:
        return sum(getattr(point, "count", 0) for point in self.points(name))


class GlobalSdk:
    """An SDK set up as ``opentelemetry-instrument`` does, exporting in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(self.spans, schedule_delay_millis=LONG_MS)
        )
        self.points = PointExporter()
        self.meter_provider = MeterProvider(
            metric_readers=[
                PeriodicExportingMetricReader(self.points, export_interval_millis=LONG_MS)
            ]
        )

    def response_spans(self) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if s.name == "fileresp.response"]

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[GlobalSdk]:
    made = GlobalSdk()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: made.tracer_provider)
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: made.meter_provider)
    yield made
    made.shutdown()


# --- Starlette / FastAPI -----------------------------------------------------------


def _starlette_app(static: Path, kind: str) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    routes = [Mount("/static", StaticFiles(directory=str(static)))]
    if kind == "fastapi":
        import fastapi

        app = fastapi.FastAPI()
        app.mount("/static", StaticFiles(directory=str(static)))
        return app
    if kind == "own-lifespan":
        events: list[str] = []

        @asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            events.append("startup")
            yield
            events.append("shutdown")

        app = Starlette(routes=routes, lifespan=lifespan)
        app.state.events = events
        return app
    return Starlette(routes=routes)


def _serve_starlette(app: Any, count: int) -> None:
    from starlette.testclient import TestClient

    with TestClient(app) as client:  # runs the lifespan, startup and shutdown
        for _ in range(count):
            assert client.get("/static/small.txt").status_code == 200


# FastAPI is installed only with the framework set its releases fit (noxfile.py).
STARLETTE_APP_KINDS = ["no-lifespan", "own-lifespan"] + (
    ["fastapi"] if importlib.util.find_spec("fastapi") else []
)


@pytest.mark.parametrize("kind", STARLETTE_APP_KINDS)
@pytest.mark.parametrize("flush", [True, False])
def test_starlette_flushes_at_lifespan_shutdown(
    files: Path, sdk: GlobalSdk, kind: str, flush: bool
) -> None:
    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    app = _starlette_app(files, kind)
    with instrumenting(StarletteFileResponseInstrumentor(), sdk, flush_on_shutdown=flush):
        _serve_starlette(app, 3)
        if flush:
            assert len(sdk.response_spans()) == 3
            assert sdk.points.count("fileresp.duration") == 3
        else:
            assert sdk.response_spans() == []
            assert sdk.points.exports == []
    if kind == "own-lifespan":
        assert app.state.events == ["startup", "shutdown"]


def test_starlette_shutdown_failure_still_flushes_and_fails(files: Path, sdk: GlobalSdk) -> None:
    """The app's failing shutdown is reported to the server as before; the flush runs."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles
    from starlette.testclient import TestClient

    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        raise RuntimeError("the app's shutdown failed")

    app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(files)))], lifespan=lifespan)
    with instrumenting(StarletteFileResponseInstrumentor(), sdk):
        with (
            pytest.raises(BaseException),  # noqa: B017 - whatever this release raises
            TestClient(app) as client,
        ):
            assert client.get("/static/small.txt").status_code == 200
        assert len(sdk.response_spans()) == 1


def test_starlette_zero_series_from_startup(files: Path, sdk: GlobalSdk) -> None:
    """No 304 series after instrument() alone; there from lifespan startup on."""
    from starlette.testclient import TestClient

    from otel_fileresp import _instruments
    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    app = _starlette_app(files, "no-lifespan")
    with instrumenting(StarletteFileResponseInstrumentor(), sdk, flush_on_shutdown=False):
        instruments = _instruments.instruments_for(sdk.meter_provider)
        assert _opens(instruments) == {}
        with TestClient(app):
            assert _opens(instruments) == {("starlette", 304): 0}


def _opens(instruments: Any) -> dict[tuple[Any, Any], int]:
    return {
        (o.attributes["fileresp.framework"], o.attributes.get("http.response.status_code")): int(
            o.value
        )
        for o in instruments.open_counts.observe(None)
        if o.attributes["fileresp.framework"] == "starlette"
    }


def test_starlette_uninstrument_restores_lifespan(sdk: GlobalSdk) -> None:
    from starlette.routing import Router

    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    original = vars(Router)["lifespan"]
    with instrumenting(StarletteFileResponseInstrumentor(), sdk):
        assert vars(Router)["lifespan"] is not original
    assert vars(Router)["lifespan"] is original


async def _shutdown_while_a_response_runs(app: Any, sampled: bool = True) -> tuple[float, Any]:
    """What granian does: the app's lifespan shutdown as soon as a response's
    last body message was handed over, while the response still runs (its
    background task). The request comes with no parent span, or, unless
    ``sampled``, under an unsampled one (so only the metrics record it). The
    shutdown's duration, and the message that ended it."""
    lifespan_in: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan_in.get, lifespan_out.put)
    )
    await lifespan_in.put({"type": "lifespan.startup"})
    assert (await lifespan_out.get())["type"] == "lifespan.startup.complete"

    last_byte = asyncio.Event()
    disconnected = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            last_byte.set()

    parent = None
    if not sampled:
        unsampled = SpanContext(1, 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
        parent = trace.set_span_in_context(NonRecordingSpan(unsampled))
    token = otel_context.attach(parent) if parent is not None else None
    try:
        request = asyncio.ensure_future(app(http_scope("/finishing"), receive, send))
    finally:
        if token is not None:
            otel_context.detach(token)
    await asyncio.wait_for(last_byte.wait(), 5)
    started = time.monotonic()
    await lifespan_in.put({"type": "lifespan.shutdown"})
    ended = await asyncio.wait_for(lifespan_out.get(), 10)
    took = time.monotonic() - started
    disconnected.set()
    await asyncio.wait_for(asyncio.gather(request, lifespan), 10)
    return took, ended


def _finishing_app(static: Path, background_s: float) -> Any:
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.responses import FileResponse
    from starlette.routing import Route

    async def finishing(request: Any) -> Any:
        return FileResponse(
            static / "small.txt", background=BackgroundTask(asyncio.sleep, background_s)
        )

    return Starlette(routes=[Route("/finishing", finishing)])


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "unsampled"])
def test_starlette_flush_waits_for_a_response_still_running(
    files: Path, sdk: GlobalSdk, sampled: bool
) -> None:
    """The client has its last byte, the response still runs when the app's
    shutdown comes: the flush waits for it to end, so its span and point are
    in (unsampled: the point, which the lean collection records)."""
    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    with instrumenting(StarletteFileResponseInstrumentor(), sdk):
        took, ended = asyncio.run(
            _shutdown_while_a_response_runs(_finishing_app(files, 0.3), sampled)
        )
        assert ended["type"] == "lifespan.shutdown.complete"
        assert 0.2 <= took < _lifecycle.SETTLE_TIMEOUT_S
        assert len(sdk.response_spans()) == (1 if sampled else 0)
        assert sdk.points.count("fileresp.duration") == 1


def test_starlette_flush_waits_for_responses_in_flight_at_most_the_bound(
    files: Path, sdk: GlobalSdk, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A response that runs on past the bound: the shutdown goes on after
    ``SETTLE_TIMEOUT_S`` and says how many responses it left behind."""
    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    monkeypatch.setattr(_lifecycle, "SETTLE_TIMEOUT_S", 0.2)
    forget_logged()
    with (
        instrumenting(StarletteFileResponseInstrumentor(), sdk),
        caplog.at_level(logging.WARNING, logger="otel_fileresp"),
    ):
        took, ended = asyncio.run(_shutdown_while_a_response_runs(_finishing_app(files, 1.0)))
        assert ended["type"] == "lifespan.shutdown.complete"
        assert 0.2 <= took < 0.9
        assert sdk.response_spans() == []  # it ended after the flush
    assert "1 file response(s) still in flight at shutdown after 0.2 s" in caplog.text


def test_a_forked_child_has_no_response_in_flight() -> None:
    """A response in flight in the parent when a worker is forked is not the
    child's: its shutdown does not wait for it."""
    from otel_fileresp import _telemetry

    key = -1  # no record's key (theirs count up from 1)
    _telemetry._IN_FLIGHT.add(key)
    try:
        assert _telemetry.responses_in_flight() >= 1
        pid = os.fork()
        if pid == 0:  # the child: its verdict as its exit status
            os._exit(0 if _telemetry.responses_in_flight() == 0 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert key in _telemetry._IN_FLIGHT  # the parent's is still there
    finally:
        _telemetry._IN_FLIGHT.discard(key)


# --- aiohttp -----------------------------------------------------------------------


async def _serve_aiohttp(static: Path, count: int, on_started: Any = None) -> None:
    import aiohttp
    from aiohttp import web

    app = web.Application()
    app.router.add_routes([web.static("/static", static)])
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        if on_started is not None:
            on_started()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            for _ in range(count):
                async with session.get(f"http://127.0.0.1:{port}/static/small.txt") as reply:
                    assert reply.status == 200
                    await reply.read()
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("flush", [True, False])
def test_aiohttp_flushes_at_cleanup(files: Path, sdk: GlobalSdk, flush: bool) -> None:
    pytest.importorskip("aiohttp")
    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    with instrumenting(AiohttpFileResponseInstrumentor(), sdk, flush_on_shutdown=flush):
        asyncio.run(_serve_aiohttp(files, 3))
        if flush:
            assert len(sdk.response_spans()) == 3
            assert sdk.points.count("fileresp.duration") == 3
        else:
            assert sdk.response_spans() == []
            assert sdk.points.exports == []


def test_aiohttp_zero_series_from_startup(files: Path, sdk: GlobalSdk) -> None:
    pytest.importorskip("aiohttp")
    from otel_fileresp import _instruments
    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    seen: list[set[Any]] = []

    def opens_now() -> None:
        seen.append(
            {tuple(sorted(o.attributes.items())) for o in instruments.open_counts.observe(None)}
        )

    with instrumenting(AiohttpFileResponseInstrumentor(), sdk, flush_on_shutdown=False):
        instruments = _instruments.instruments_for(sdk.meter_provider)
        opens_now()
        asyncio.run(_serve_aiohttp(files, 0, on_started=opens_now))
    zero = (("fileresp.framework", "aiohttp"), ("http.response.status_code", 304))
    assert zero not in seen[0]
    assert zero in seen[1]


# --- the flush itself --------------------------------------------------------------


class _SlowProvider:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[float] = []

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        self.calls.append(timeout_millis)
        time.sleep(self.seconds)
        return True


def test_flush_is_bounded_and_does_not_block_the_loop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that hangs: the shutdown waits at most the timeout, the loop runs."""
    slow = _SlowProvider(2.0)
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: slow)
    monkeypatch.setattr(metrics, "get_meter_provider", object)  # no force_flush
    forget_logged()
    ticks: list[float] = []

    async def main() -> tuple[bool, float]:
        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        finished = await _lifecycle.flush_global_providers(asyncio.sleep, timeout=0.3)
        ticker.cancel()
        return finished, time.monotonic() - started

    with caplog.at_level(logging.WARNING, logger="otel_fileresp"):
        finished, took = asyncio.run(main())
    assert not finished
    assert 0.3 <= took < 1.0
    assert len(ticks) >= 10  # the loop kept running while the flush waited
    assert slow.calls and slow.calls[0] <= 300
    assert "did not finish within 0.3 s" in caplog.text
    assert not [
        t for t in threading.enumerate() if t.name == "otel_fileresp-flush" and not t.daemon
    ]


def test_flush_skips_providers_without_force_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's proxies (no SDK): nothing to do, no thread."""
    before = threading.active_count()
    assert asyncio.run(_lifecycle.flush_global_providers(asyncio.sleep)) is True
    assert threading.active_count() == before


def test_flush_failure_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def force_flush(self, timeout_millis: float = 30_000) -> bool:
            raise RuntimeError("exporter broke")

    monkeypatch.setattr(trace, "get_tracer_provider", Broken)
    monkeypatch.setattr(metrics, "get_meter_provider", Broken)
    forget_logged()
    with caplog.at_level(logging.WARNING, logger="otel_fileresp"):
        for _ in range(2):
            assert asyncio.run(_lifecycle.flush_global_providers(asyncio.sleep)) is True
    messages = [r.getMessage() for r in caplog.records]
    for kind in ("tracer", "meter"):
        said = [m for m in messages if f"the {kind} provider's force_flush failed" in m]
        assert len(said) == 1, messages


# --- the setting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(None, True), ("false", False), ("0", False), ("TRUE", True)]
)
def test_setting_from_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: bool
) -> None:
    if value is None:
        monkeypatch.delenv("OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN", raising=False)
    else:
        monkeypatch.setenv("OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN", value)
    assert Settings.resolve().flush_on_shutdown is expected


def test_setting_bad_value_warns_and_defaults(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN", "sometimes")
    with caplog.at_level(logging.WARNING):
        assert Settings.resolve().flush_on_shutdown is True
    warnings: Sequence[str] = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN='sometimes'" in warnings[0]
    # The keyword wins over the environment.
    assert Settings.resolve(flush_on_shutdown=False).flush_on_shutdown is False
