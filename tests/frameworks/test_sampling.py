"""Telemetry contract v2: what each response costs, and what is recorded.

- one ``fileresp.duration`` point and one ``fileresp.phase.duration`` wait
  point per response by default; other phases on request;
- the ``{framework, 304}`` series of ``fileresp.opens`` at 0 before any traffic;
- no span work for an unsampled parent under ``ParentBased`` samplers with
  their default not-sampled delegates; spans as the sampler says otherwise;
- histogram points carry exemplars that link to the recorded response span;
- every setting value, bad ones included.

Both frameworks, over real servers on loopback (``support.serve``); the
request's ``traceparent`` header is made the current context while the app
runs, as a server span would.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from harness import Telemetry, instrumenting
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from support import FRAMEWORKS, serve

from otel_fileresp import _names as n
from otel_fileresp.settings import Settings

PATH = "/static/small.txt"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class CountingSampler(Sampler):
    """A sampler that counts how often it is asked, around another one."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.asked = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        self.asked += 1
        return self.inner.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"Counting({self.inner.get_description()})"


class SamplesFileResponses(ParentBased):
    """A ``ParentBased`` subclass with its own decision: it samples our spans
    even under an unsampled parent. It must be asked, not assumed to drop."""

    def __init__(self) -> None:
        super().__init__(ALWAYS_ON)

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any
    ) -> SamplingResult:
        if name.startswith("fileresp."):
            return ALWAYS_ON.should_sample(parent_context, trace_id, name, *args, **kwargs)
        return super().should_sample(parent_context, trace_id, name, *args, **kwargs)


@pytest.fixture
def started_spans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every span the SDK's tracers are asked to start."""
    from opentelemetry.sdk.trace import Tracer

    names: list[str] = []
    original = Tracer.start_span

    def start_span(self: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(Tracer, "start_span", start_span)
    return names


def with_sampler(telemetry: Telemetry, sampler: Sampler) -> Telemetry:
    telemetry.tracer_provider = TracerProvider(sampler=sampler)
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    return telemetry


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


def points(telemetry: Telemetry, name: str) -> list[Any]:
    return telemetry.metric_points(name)


def counts_by_phase(telemetry: Telemetry) -> dict[str, int]:
    found: dict[str, int] = {}
    for point in points(telemetry, "fileresp.phase.duration"):
        phase = point.attributes["fileresp.phase"]
        found[phase] = found.get(phase, 0) + point.count
    return found


# -- metrics per response --------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_one_duration_and_one_wait_point_per_response(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    serve_requests(framework, files, telemetry, {})
    assert sum(p.count for p in points(telemetry, "fileresp.duration")) == 3
    assert counts_by_phase(telemetry) == {"threadpool.wait": 3}
    responses = [s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]
    waits = sorted(s.attributes[n.ATTR_WAIT] for s in responses)
    [point] = points(telemetry, "fileresp.phase.duration")
    assert point.sum == pytest.approx(sum(waits))


@pytest.mark.parametrize(
    ("phase_metrics", "expected"),
    [
        ("all", {"stat", "precondition", "open", "send", "threadpool.wait"}),
        ("stat,open", {"stat", "open"}),
        (["send"], {"send"}),
        ("none", set()),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_phase_metrics_setting(
    framework: str, files: Path, telemetry: Telemetry, phase_metrics: Any, expected: set[str]
) -> None:
    serve_requests(framework, files, telemetry, {}, phase_metrics=phase_metrics)
    found = counts_by_phase(telemetry)
    assert set(found) == expected
    # One point per response and phase (open and send: the two 200s only).
    for phase, count in found.items():
        assert count == (2 if phase in ("open", "send") else 3), phase


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_metrics_false_records_no_metric_and_keeps_the_spans(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    serve_requests(framework, files, telemetry, {}, metrics=False)
    data = telemetry.metric_reader.get_metrics_data()
    names = {
        metric.name
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert not {name for name in names if name.startswith("fileresp.")}
    assert len([s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]) == 3


def _points_once_started(framework: str, root: Path, telemetry: Telemetry) -> list[Any]:
    """``fileresp.opens`` read after the app's startup, before any request."""
    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles
        from starlette.testclient import TestClient

        app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(root)))])
        with TestClient(app):  # runs the lifespan startup
            return points(telemetry, "fileresp.opens")
    import asyncio

    from aiohttp import web

    async def started() -> list[Any]:
        app = web.Application()
        app.router.add_routes([web.static("/static", root)])
        runner = web.AppRunner(app)
        await runner.setup()  # Application.startup()
        try:
            return points(telemetry, "fileresp.opens")
        finally:
            await runner.cleanup()

    return asyncio.run(started())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_304_series_is_reported_at_zero_from_the_apps_startup(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    """v2.1: from the moment the app starts serving, before any traffic; not
    from ``instrument()`` alone (a gunicorn master instruments and serves nothing)."""
    with instrumenting(framework, telemetry, flush_on_shutdown=False):
        assert points(telemetry, "fileresp.opens") == []
        opens = _points_once_started(framework, files, telemetry)
    assert [(dict(p.attributes), p.value) for p in opens] == [
        ({n.ATTR_FRAMEWORK: framework, n.ATTR_STATUS_CODE: 304}, 0)
    ]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_histogram_points_link_to_the_response_span(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    serve_requests(framework, files, telemetry, {"traceparent": SAMPLED})
    responses = {s.context.span_id: s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE}
    assert len(responses) == 3
    # One collection: the SDK hands out each exemplar with the first collection after it.
    data = telemetry.metric_reader.get_metrics_data()
    by_name: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                by_name.setdefault(metric.name, []).extend(metric.data.data_points)
    for name in ("fileresp.duration", "fileresp.phase.duration"):
        exemplars = [e for p in by_name[name] for e in p.exemplars]
        assert exemplars, name
        for exemplar in exemplars:
            assert exemplar.span_id in responses
            assert format(exemplar.trace_id, "032x") == TRACE_ID


# -- sampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_span_work_for_an_unsampled_parent_under_parent_based(
    framework: str, files: Path, telemetry: Telemetry, started_spans: list[str]
) -> None:
    with_sampler(telemetry, ParentBased(ALWAYS_ON))  # the SDK's default sampler
    serve_requests(framework, files, telemetry, {"traceparent": UNSAMPLED})
    assert started_spans == []  # no span was even started
    assert telemetry.spans() == []
    assert sum(p.count for p in points(telemetry, "fileresp.duration")) == 3
    assert counts_by_phase(telemetry) == {"threadpool.wait": 3}
    opened = {
        p.attributes[n.ATTR_STATUS_CODE]: p.value for p in points(telemetry, "fileresp.opens")
    }
    assert opened == {200: 2, 304: 0}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_parent_based_ratio_is_known_too(framework: str, files: Path, telemetry: Telemetry) -> None:
    sampler = CountingSampler(ParentBasedTraceIdRatio(1.0))
    with_sampler(telemetry, sampler.inner)
    serve_requests(framework, files, telemetry, {"traceparent": UNSAMPLED})
    assert telemetry.spans() == []
    # ...and a sampled parent is recorded as usual.
    serve_requests(framework, files, telemetry, {"traceparent": SAMPLED})
    assert len([s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]) == 3


@pytest.mark.parametrize(
    "sampler",
    [
        ALWAYS_ON,
        TraceIdRatioBased(1.0),
        # samples children of unsampled parents: not the default delegates
        ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON),
    ],
    ids=["always_on", "traceidratio", "custom_parent_based"],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_other_samplers_are_asked(
    framework: str, files: Path, telemetry: Telemetry, sampler: Sampler
) -> None:
    counting = CountingSampler(sampler)
    with_sampler(telemetry, counting)
    serve_requests(framework, files, telemetry, {"traceparent": UNSAMPLED})
    responses = [s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]
    assert len(responses) == 3
    assert counting.asked >= 3
    # Detailed collection: the phases are there.
    names = {s.name for s in telemetry.spans()}
    assert {n.SPAN_STAT, n.SPAN_THREADPOOL_WAIT} <= names


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_parent_based_subclass_with_its_own_decision_is_asked(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    with_sampler(telemetry, SamplesFileResponses())
    serve_requests(framework, files, telemetry, {"traceparent": UNSAMPLED})
    responses = [s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]
    assert len(responses) == 3
    assert n.SPAN_STAT in {s.name for s in telemetry.spans()}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_sampler_that_drops_is_obeyed(framework: str, files: Path, telemetry: Telemetry) -> None:
    counting = CountingSampler(ALWAYS_OFF)
    with_sampler(telemetry, counting)
    serve_requests(framework, files, telemetry, {"traceparent": SAMPLED})
    assert counting.asked >= 3
    assert telemetry.spans() == []


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, frozenset({"threadpool.wait"})),
        ("all", frozenset(n.PHASES)),
        ("ALL", frozenset(n.PHASES)),
        ("none", frozenset()),
        ("", frozenset()),
        ("stat, open", frozenset({"stat", "open"})),
        ("threadpool.wait,send", frozenset({"threadpool.wait", "send"})),
    ],
)
def test_phase_metrics_values(
    raw: str | None, expected: frozenset[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if raw is None:
        monkeypatch.delenv(n.ENV_PHASE_METRICS, raising=False)
    else:
        monkeypatch.setenv(n.ENV_PHASE_METRICS, raw)
    assert Settings.resolve().phase_metrics == expected


@pytest.mark.parametrize(
    ("variable", "raw", "field", "default"),
    [
        (n.ENV_PHASE_METRICS, "stat,bogus", "phase_metrics", frozenset({"threadpool.wait"})),
        (n.ENV_PHASE_METRICS, "threadpool", "phase_metrics", frozenset({"threadpool.wait"})),
        (n.ENV_METRICS, "maybe", "metrics", True),
        (n.ENV_PHASE_SPANS, "sometimes", "phase_spans", True),
        (n.ENV_CAPTURE_PATH, "absolute", "capture_path", "name"),
    ],
)
def test_a_bad_value_warns_once_and_uses_the_default(
    variable: str,
    raw: str,
    field: str,
    default: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(variable, raw)
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    assert getattr(Settings.resolve(), field) == default
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert variable in warnings[0] and repr(raw) in warnings[0]


@pytest.mark.parametrize(
    ("raw", "expected"), [("false", False), ("0", False), ("off", False), ("true", True)]
)
def test_metrics_values(raw: str, expected: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(n.ENV_METRICS, raw)
    assert Settings.resolve().metrics is expected


def test_keywords_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(n.ENV_PHASE_METRICS, "all")
    monkeypatch.setenv(n.ENV_METRICS, "false")
    settings = Settings.resolve(phase_metrics=["open"], metrics=True)
    assert settings.phase_metrics == frozenset({"open"})
    assert settings.metrics is True


def test_a_bad_keyword_warns_naming_the_keyword(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    assert Settings.resolve(phase_metrics=["open", 3]).phase_metrics == frozenset(
        {"threadpool.wait"}
    )
    assert "phase_metrics" in caplog.records[-1].getMessage()
