"""Where the recording cost goes: ``ResponseRecord.finish()`` taken apart.

No framework here: records are filled the way the Starlette hooks fill them
for a 200 from ``StaticFiles`` (a lookup, open, read and close job, the
precondition, stat, open and send phases: 7 spans, 8 metric measurements),
then finished, under a sampled parent that is the current context (as in a
request). Interleaved rounds of:

- ``collect``: creating the record and wrapping/running its 4 jobs (the hooks'
  share of the work, without the framework);
- ``finish``: ``finish()`` with the SDK pipeline (spans and metrics);
- ``finish_phase_off``: the same with ``phase_spans=False`` (1 span);
- ``spans_only``: ``finish()`` with the SDK tracer and a no-op meter;
- ``metrics_only``: ``finish()`` with a no-op tracer and the SDK meter;
- ``replay``: the SDK calls ``finish()`` makes (the same 7 spans with their
  attributes, timestamps and parents, the same 8 measurements), made directly:
  the SDK's own cost of this package's output;
- ``floor``: 7 bare SDK spans (no attributes, no metrics).

Our own logic per response is ``collect + finish - replay``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from time import perf_counter_ns, process_time_ns
from typing import Any

from _common import TRACEPARENT_SAMPLED, Pipeline, Rounds, Spread, sdk_pipeline, table, us
from opentelemetry import context as context_api
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otel_fileresp._core import ResponseRecord, Telemetry

from otel_fileresp import _names as n
from otel_fileresp.settings import Settings

SPANS = 7
KINDS = (
    "collect",
    "finish",
    "finish_phase_off",
    "spans_only",
    "metrics_only",
    "replay",
    "floor",
)
_STAT = os.stat(__file__)


def _noop(*args: Any) -> None:
    return None


def collect(telemetry: Telemetry, parent: Any) -> ResponseRecord:
    """A record filled as the Starlette hooks fill it for a StaticFiles 200."""
    record = telemetry.start_record(n.FRAMEWORK_STARLETTE, parent)
    assert record is not None
    record.pool_job(n.JOB_LOOKUP, _noop)()
    record.set_file("/srv/static/small.txt", _STAT.st_size)
    start = perf_counter_ns()
    record.precondition(start, perf_counter_ns(), n.PRECONDITION_NONE, None)
    record.pool_job(n.JOB_OPEN, _noop)()
    record.status = 200
    record.pool_job(n.JOB_READ, _noop)()
    record.body_sent(4096, perf_counter_ns())
    record.body_done_ns = perf_counter_ns()
    record.pool_job(n.JOB_CLOSE, _noop)()
    return record


def sdk_calls(parent: Any) -> tuple[list[Any], list[tuple[str, float, Any]]]:
    """What ``finish()`` hands the SDK for one response: its finished spans
    (in start order) and its measurements (instrument, value, attributes),
    captured once with in-memory exporters."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(Settings(), tracer_provider, MeterProvider(metric_readers=[reader]))
    collect(telemetry, parent).finish()
    spans = sorted(exporter.get_finished_spans(), key=lambda span: span.start_time or 0)
    measurements: list[tuple[str, float, Any]] = []
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        value = point.sum / point.count
                        measurements += [(metric.name, value, point.attributes)] * point.count
                    else:
                        measurements.append((metric.name, point.value, point.attributes))
    return spans, measurements


def replayer(pipeline: Pipeline, parent: Any) -> Callable[[], None]:
    """One response's SDK calls made directly: the same spans (names, kinds,
    timestamps, attributes, parents) and the same measurements, without any
    of this package's code. The part of ``finish()`` above this is ours."""
    from opentelemetry.trace import set_span_in_context

    spans, measurements = sdk_calls(parent)
    response, *phases = spans
    tracer = pipeline.tracer_provider.get_tracer("benchmark.replay")
    meter = pipeline.meter_provider.get_meter("benchmark.replay")
    instruments: dict[str, Any] = {}
    for name, _, _ in measurements:
        if name == n.METRIC_OPENS:
            instruments[name] = meter.create_counter(name).add
        else:
            buckets = n.DURATION_BUCKETS
            instruments[name] = meter.create_histogram(
                name, unit="s", explicit_bucket_boundaries_advisory=buckets
            ).record
    calls = [
        (instruments[name], value, dict(attributes)) for name, value, attributes in measurements
    ]
    response_attributes = dict(response.attributes)
    children = [
        (span.name, span.kind, span.start_time, span.end_time, dict(span.attributes or {}))
        for span in phases
    ]

    def replay() -> None:
        for call, value, attributes in calls:
            call(value, attributes)
        span = tracer.start_span(
            response.name, context=parent, kind=response.kind, start_time=response.start_time
        )
        span.set_attributes(response_attributes)
        context = set_span_in_context(span)
        for name, kind, start, end, attributes in children:
            tracer.start_span(
                name, context=context, kind=kind, start_time=start, attributes=attributes
            ).end(end_time=end)
        span.end(end_time=response.end_time)

    return replay


def _timed(fn: Callable[[], None]) -> tuple[int, int]:
    cpu = process_time_ns()
    wall = perf_counter_ns()
    fn()
    return perf_counter_ns() - wall, process_time_ns() - cpu


def run(rounds: int, count: int, seed: int, deadline_seconds: float) -> Rounds:
    import random

    pipeline: Pipeline = sdk_pipeline()
    parent = TraceContextTextMapPropagator().extract({"traceparent": TRACEPARENT_SAMPLED})
    settings = Settings()
    telemetries = {
        "collect": Telemetry(settings, pipeline.tracer_provider, pipeline.meter_provider),
        "finish": Telemetry(settings, pipeline.tracer_provider, pipeline.meter_provider),
        "finish_phase_off": Telemetry(
            Settings(phase_spans=False), pipeline.tracer_provider, pipeline.meter_provider
        ),
        "spans_only": Telemetry(settings, pipeline.tracer_provider, NoOpMeterProvider()),
        "metrics_only": Telemetry(settings, NoOpTracerProvider(), pipeline.meter_provider),
    }
    floor_tracer = pipeline.tracer_provider.get_tracer("benchmark.floor")
    replay = replayer(pipeline, parent)

    def batch(kind: str) -> tuple[float, float]:
        if kind == "replay":

            def replays() -> None:
                for _ in range(count):
                    replay()

            wall, cpu = _timed(replays)
        elif kind == "floor":

            def spans() -> None:
                for _ in range(count * SPANS):
                    floor_tracer.start_span("bare", context=parent).end()

            wall, cpu = _timed(spans)
        elif kind == "collect":
            telemetry = telemetries[kind]
            records: list[ResponseRecord] = []

            def fill() -> None:
                for _ in range(count):
                    records.append(collect(telemetry, parent))

            wall, cpu = _timed(fill)
            for record in records:
                record.discard()
        else:
            telemetry = telemetries[kind]
            records = [collect(telemetry, parent) for _ in range(count)]

            def finish() -> None:
                for record in records:
                    record.finish()

            wall, cpu = _timed(finish)
        pipeline.flush()
        return wall / count / 1e9, cpu / count / 1e9

    token = context_api.attach(parent)
    try:
        for kind in KINDS:  # warm-up
            batch(kind)
        rng = random.Random(seed)
        result = Rounds({k: [] for k in KINDS}, {k: [] for k in KINDS})
        stop = time.monotonic() + deadline_seconds
        for index in range(rounds):
            if index >= 5 and time.monotonic() > stop:
                break
            order = list(KINDS)
            rng.shuffle(order)
            result.orders.append(order)
            for kind in order:
                wall, cpu = batch(kind)
                result.wall[kind].append(wall)
                result.cpu[kind].append(cpu)
    finally:
        context_api.detach(token)
        pipeline.shutdown()
    return result


def report(result: Rounds) -> str:
    floor = result.median("floor")
    rows = []
    for kind in KINDS:
        wall = Spread.of(result.wall[kind])
        cpu = Spread.of(result.cpu[kind])
        rows.append(
            [
                kind,
                f"{us(wall.median)} ({us(wall.p25)}-{us(wall.p75)})",
                us(cpu.median),
                f"{wall.median / floor:.2f}",
            ]
        )
    ours = Spread.of(
        [
            c + f - r
            for c, f, r in zip(
                result.wall["collect"], result.wall["finish"], result.wall["replay"], strict=True
            )
        ]
    )
    replay = result.median("replay")
    return (
        "Per response (a StaticFiles 200: 7 spans, 8 measurements), median over "
        f"{len(result.orders)} rounds:\n\n"
        + table(["part", "wall us (IQR)", "CPU us", "x floor (7 bare spans)"], rows)
        + f"\n\nOur own logic (collect + finish - replay, per round): {us(ours.median)} us "
        f"({us(ours.p25)}-{us(ours.p75)}), {ours.median / replay:.2f} x the SDK's cost of "
        f"the same output (replay), {ours.median / floor:.2f} x 7 bare spans."
    )
