"""Sampling: no span work for an unsampled parent under ``ParentBased``
samplers with their default not-sampled delegates; spans as the sampler says
otherwise (other samplers are asked, a sampler that drops is obeyed).

Both frameworks, over real servers on loopback (``support.apps.serve``); the
request's ``traceparent`` header is made the current context while the app
runs, as a server span would.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
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
from support.apps import (
    FRAMEWORKS,
    PATH,
    SAMPLED,
    UNSAMPLED,
    counts_by_phase,
    points,
    serve,
    serve_requests,
)
from support.harness import Telemetry

from otel_fileresp import _names as n


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


# -- the lean collection records what the detailed one does -------------------------------

# (method, path, headers); "{etag}" is the served file's ETag from a first GET.
_CASES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("GET", "/static/small.txt", {}),
    ("GET", "/static/small.txt", {"If-None-Match": "{etag}"}),
    ("HEAD", "/static/small.txt", {}),
    ("GET", "/static/small.txt", {"Range": "bytes=0-9"}),
    ("GET", "/static/small.txt", {"Range": "bytes=999999-"}),
    ("GET", "/static/empty.txt", {}),
    ("GET", "/static/large.bin", {}),
    ("GET", "/static/missing.txt", {}),
    ("GET", "/static/sub", {}),
    ("GET", "/file/small.txt", {}),
)


def _recorded(framework: str, files: Path, telemetry: Telemetry, traceparent: str) -> Any:
    """Every case served under ``traceparent``: the statuses, and our metric
    points (duration attributes and counts, opens, waits)."""
    with serve(framework, files, telemetry) as served:
        etag = served.request("GET", PATH, {"traceparent": traceparent}).header("etag")
        statuses = [
            served.request(
                method,
                path,
                {
                    "traceparent": traceparent,
                    **{k: v.format(etag=etag) for k, v in headers.items()},
                },
            ).status
            for method, path, headers in _CASES
        ]
        assert served.settled()
    durations: Counter[tuple[tuple[str, Any], ...]] = Counter()
    for point in points(telemetry, "fileresp.duration"):
        durations[tuple(sorted(point.attributes.items()))] += point.count
    opens = {p.attributes[n.ATTR_STATUS_CODE]: p.value for p in points(telemetry, "fileresp.opens")}
    return statuses, durations, opens, counts_by_phase(telemetry)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lean_responses_record_the_same_points_as_detailed_ones(
    framework: str, files: Path, tmp_path: Path
) -> None:
    """Unsampled (lean: no span, only the wait's phase) and sampled (every
    phase collected) responses of the same cases give the same statuses and
    the same metric points: outcome, ``opened``, status and framework of each
    duration point, the opens by status, the number of pool-wait points."""
    detailed = with_sampler(Telemetry(), ParentBased(ALWAYS_ON))
    lean = with_sampler(Telemetry(), ParentBased(ALWAYS_ON))
    try:
        sampled = _recorded(framework, files, detailed, SAMPLED)
        unsampled = _recorded(framework, files, lean, UNSAMPLED)
        assert detailed.spans() and not lean.spans()  # the two collections, indeed
    finally:
        detailed.shutdown()
        lean.shutdown()
    assert unsampled == sampled
    statuses, durations, opens, _ = sampled
    assert statuses[:2] == [200, 304] and opens[304] == 0 and opens[200] >= 1
    assert len(durations) >= 4  # the cases differ in what they record (fewer: no ranges)
