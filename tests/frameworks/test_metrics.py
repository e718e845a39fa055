"""The metrics' values and attributes, per response, on both frameworks.

Each request's data points are the difference between two collections of
the cumulative in-memory reader, taken once the server has finished the
request and run all its pool jobs (aiohttp closes the file in a late job).
The values are checked against the response's own spans: the same
timestamps make both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from support.apps import Served, serve
from support.harness import Telemetry, responses

from otel_fileresp import _names as n

FRAMEWORKS = ["starlette", "aiohttp"]
PATH = "/static/small.txt"
# The boundaries' values are pinned by tests/prometheus/test_quantiles.py (against
# docs/metrics.md); here: that both histograms carry them.
BOUNDS = n.DURATION_BUCKETS
PHASE_SPANS = {
    "fileresp.stat": "stat",
    "fileresp.precondition": "precondition",
    "fileresp.open": "open",
    "fileresp.send": "send",
}


@dataclass(frozen=True)
class Hist:
    count: int
    sum: float
    bucket_counts: tuple[int, ...]


Key = frozenset[tuple[str, Any]]


def key(**attributes: Any) -> Key:
    return frozenset(attributes.items())


def collect(telemetry: Telemetry) -> dict[str, dict[Key, Any]]:
    """metric name -> attributes -> point, from one collection."""
    found: dict[str, dict[Key, Any]] = {}
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    found.setdefault(metric.name, {})[frozenset(point.attributes.items())] = point
    return found


def histogram_delta(after: dict[Key, Any], before: dict[Key, Any]) -> dict[Key, Hist]:
    delta = {}
    for attributes, point in after.items():
        old = before.get(attributes)
        count = point.count - (old.count if old else 0)
        if count:
            delta[attributes] = Hist(
                count,
                point.sum - (old.sum if old else 0.0),
                tuple(
                    new - (old.bucket_counts[i] if old else 0)
                    for i, new in enumerate(point.bucket_counts)
                ),
            )
    return delta


def counter_delta(after: dict[Key, Any], before: dict[Key, Any]) -> dict[Key, int]:
    delta = {}
    for attributes, point in after.items():
        value = point.value - (before[attributes].value if attributes in before else 0)
        if value:
            delta[attributes] = value
    return delta


@dataclass
class Measured:
    duration: dict[Key, Hist]
    phases: dict[Key, Hist]
    opens: dict[Key, int]
    span: Any  # the response's fileresp.response, or None when not sampled
    children: list[Any]


def measure(served: Served, telemetry: Telemetry, headers: dict[str, str], status: int) -> Measured:
    before = collect(telemetry)
    spans_before = len(responses(telemetry))
    reply = served.request("GET", PATH, headers)
    assert reply.status == status
    assert served.settled()
    after = collect(telemetry)
    span = None
    children: list[Any] = []
    if telemetry.tracer_provider.sampler is not ALWAYS_OFF:
        telemetry.wait_for("fileresp.response", spans_before + 1)
        span = responses(telemetry)[spans_before]
        children = [
            s
            for s in telemetry.spans()
            if s.parent is not None and s.parent.span_id == span.context.span_id
        ]
    return Measured(
        duration=histogram_delta(
            after.get("fileresp.duration", {}), before.get("fileresp.duration", {})
        ),
        phases=histogram_delta(
            after.get("fileresp.phase.duration", {}), before.get("fileresp.phase.duration", {})
        ),
        opens=counter_delta(after.get("fileresp.opens", {}), before.get("fileresp.opens", {})),
        span=span,
        children=children,
    )


def warm_up(served: Served, telemetry: Telemetry) -> str:
    """One 200 first (StaticFiles checks its directory on its first request);
    returns the file's ETag."""
    reply = served.request("GET", PATH)
    assert reply.status == 200
    assert served.settled()
    etag = reply.header("etag")
    assert etag
    return etag


def seconds(span: Any) -> float:
    return (span.end_time - span.start_time) / 1e9


def check_against_spans(measured: Measured, framework: str, all_phases: bool) -> None:
    """Every histogram value is the matching span's duration."""
    span = measured.span
    attributes = dict(span.attributes)
    [(duration_key, duration)] = measured.duration.items()
    assert duration.count == 1
    assert duration.sum == pytest.approx(seconds(span), rel=1e-6)
    assert sum(duration.bucket_counts) == 1
    assert dict(duration_key) == {
        "fileresp.framework": framework,
        "http.response.status_code": attributes["http.response.status_code"],
        "fileresp.outcome": attributes["fileresp.outcome"],
        "fileresp.opened": attributes["fileresp.opened"],
    }
    phase_spans = {PHASE_SPANS[c.name]: c for c in measured.children if c.name in PHASE_SPANS}
    # v2: one point per response for each enabled phase that happened; by
    # default the wait only.
    expected_phases = (set(phase_spans) if all_phases else set()) | {"threadpool.wait"}
    assert {dict(k)["fileresp.phase"] for k in measured.phases} == expected_phases
    for phase, child in phase_spans.items():
        if not all_phases:
            break
        point = measured.phases[key(**{"fileresp.framework": framework, "fileresp.phase": phase})]
        assert point.count == 1
        assert point.sum == pytest.approx(seconds(child), rel=1e-6, abs=1e-9)
    waits = measured.phases[
        key(**{"fileresp.framework": framework, "fileresp.phase": "threadpool.wait"})
    ]
    # One point per response: its total wait, the span attribute's number.
    assert waits.count == 1
    assert waits.sum == pytest.approx(attributes["fileresp.threadpool.wait"], rel=1e-6, abs=1e-9)
    assert waits.sum <= seconds(measured.span) + 1e-9


@pytest.mark.parametrize("phase_metrics", [None, "all"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_200_304_and_if_match(
    framework: str, phase_metrics: str | None, telemetry: Telemetry, files: Path
) -> None:
    all_phases = phase_metrics == "all"
    with serve(framework, files, telemetry, phase_metrics=phase_metrics) as served:
        etag = warm_up(served, telemetry)

        # 200: sent, opened, counted once in fileresp.opens
        sent = measure(served, telemetry, {}, 200)
        assert dict(sent.span.attributes)["fileresp.outcome"] == "sent"
        assert dict(next(iter(sent.duration))) == {
            "fileresp.framework": framework,
            "http.response.status_code": 200,
            "fileresp.outcome": "sent",
            "fileresp.opened": True,
        }
        assert ({"stat", "precondition", "open", "send"} if all_phases else set()) | {
            "threadpool.wait"
        } == {dict(k)["fileresp.phase"] for k in sent.phases}
        assert sent.opens == {
            key(**{"fileresp.framework": framework, "http.response.status_code": 200}): 1
        }
        check_against_spans(sent, framework, all_phases)

        # 304: not opened, fileresp.opens unchanged
        not_modified = measure(served, telemetry, {"If-None-Match": etag}, 304)
        assert dict(next(iter(not_modified.duration))) == {
            "fileresp.framework": framework,
            "http.response.status_code": 304,
            "fileresp.outcome": "not_modified",
            "fileresp.opened": False,
        }
        phases = {dict(k)["fileresp.phase"] for k in not_modified.phases}
        assert "open" not in phases
        assert "send" not in phases
        assert phases == ({"stat", "precondition"} if all_phases else set()) | {"threadpool.wait"}
        assert not_modified.opens == {}
        check_against_spans(not_modified, framework, all_phases)

        # If-Match with another ETag: aiohttp answers 412 without opening;
        # Starlette does not evaluate If-Match and sends the file (200).
        if framework == "aiohttp":
            failed = measure(served, telemetry, {"If-Match": '"another"'}, 412)
            assert dict(next(iter(failed.duration))) == {
                "fileresp.framework": "aiohttp",
                "http.response.status_code": 412,
                "fileresp.outcome": "precondition_failed",
                "fileresp.opened": False,
            }
            assert "open" not in {dict(k)["fileresp.phase"] for k in failed.phases}
            assert failed.opens == {}
            check_against_spans(failed, framework, all_phases)
        else:
            ignored = measure(served, telemetry, {"If-Match": '"another"'}, 200)
            assert dict(next(iter(ignored.duration))) == {
                "fileresp.framework": "starlette",
                "http.response.status_code": 200,
                "fileresp.outcome": "sent",
                "fileresp.opened": True,
            }
            [precondition] = [c for c in ignored.children if c.name == "fileresp.precondition"]
            assert precondition.attributes["fileresp.precondition.result"] == "none"
            assert ignored.opens == {
                key(**{"fileresp.framework": "starlette", "http.response.status_code": 200}): 1
            }
            check_against_spans(ignored, framework, all_phases)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_histogram_buckets_span_10_microseconds_to_10_seconds(
    framework: str, telemetry: Telemetry, files: Path
) -> None:
    with serve(framework, files, telemetry) as served:
        warm_up(served, telemetry)
    found = collect(telemetry)
    for name in ("fileresp.duration", "fileresp.phase.duration"):
        assert found[name]
        for point in found[name].values():
            assert tuple(point.explicit_bounds) == BOUNDS
            assert point.explicit_bounds[0] == 0.00001
            assert point.explicit_bounds[-1] == 10.0
            assert len(point.bucket_counts) == len(BOUNDS) + 1
    metrics = {
        metric.name: metric
        for rm in telemetry.metric_reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert metrics["fileresp.duration"].unit == "s"
    assert metrics["fileresp.phase.duration"].unit == "s"
    assert metrics["fileresp.opens"].unit == "{open}"
    assert metrics["fileresp.opens"].data.is_monotonic


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_metrics_are_recorded_when_the_trace_is_dropped(framework: str, files: Path) -> None:
    telemetry = Telemetry()
    telemetry.tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    try:
        with serve(framework, files, telemetry) as served:
            etag = warm_up(served, telemetry)
            sent = measure(served, telemetry, {}, 200)
            not_modified = measure(served, telemetry, {"If-None-Match": etag}, 304)
        assert telemetry.spans() == []
        assert [dict(k) for k in sent.duration] == [
            {
                "fileresp.framework": framework,
                "http.response.status_code": 200,
                "fileresp.outcome": "sent",
                "fileresp.opened": True,
            }
        ]
        assert [h.count for h in sent.duration.values()] == [1]
        assert {dict(k)["fileresp.phase"] for k in sent.phases} == {"threadpool.wait"}
        assert sent.opens == {
            key(**{"fileresp.framework": framework, "http.response.status_code": 200}): 1
        }
        assert [dict(k) for k in not_modified.duration] == [
            {
                "fileresp.framework": framework,
                "http.response.status_code": 304,
                "fileresp.outcome": "not_modified",
                "fileresp.opened": False,
            }
        ]
        assert not_modified.opens == {}
    finally:
        telemetry.shutdown()
