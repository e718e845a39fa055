"""In-process overhead, interleaved A/B: time per response, instrumented / not.

For each framework and request kind (200, 304), every round runs one batch
of each mode below, in a shuffled order; a ratio is always taken between two
batches of the same round, and the median over rounds is reported with its
spread. Instrumentation is switched with ``instrument()`` / ``uninstrument()``
between batches (outside the timed part), so the uninstrumented batches run
the frameworks' original, unpatched code.

Modes:

- ``baseline``: not instrumented;
- ``baseline_again``: not instrumented either, a second batch in the same
  round: its ratio to ``baseline`` (an A/A comparison) is the resolution of
  this machine, against which the other ratios are read;
- ``nosdk``: instrumented, no SDK (the API's default proxy providers, no-op);
- ``noop``: instrumented with ``NoOpTracerProvider`` / ``NoOpMeterProvider``;
- ``unsampled``: instrumented, SDK pipeline (metrics on), under a parent that
  is not sampled: spans are not recorded, metrics are;
- ``unsampled_nometrics``: as ``unsampled`` with ``NoOpMeterProvider``: the
  cost of the tracing side alone when the trace is not sampled;
- ``recording``: instrumented, SDK pipeline, sampled parent, phase spans on;
- ``phase_off``: as ``recording`` with ``phase_spans=False``;
- ``floor``: no app at all: the same number of bare SDK spans per response
  as ``recording`` exported (``tracer.start_span(name, context=parent).end()``
  with the same tracer provider and the same sampled parent).

Where the recording cost goes, in the framework:

- ``recording_nometrics``: as ``recording`` with ``NoOpMeterProvider``;
- ``recording_noprocessor``: as ``recording_nometrics`` with a tracer provider
  that has no span processor: spans are built and ended, nothing consumes
  them;
- ``floor_noprocessor``: as ``floor`` with that provider: its comparison
  with ``recording_noprocessor`` is our cost over bare spans with neither
  the span processor nor the metrics in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns, process_time_ns
from typing import Any

from _common import (
    SCOPE,
    TRACEPARENT_SAMPLED,
    TRACEPARENT_UNSAMPLED,
    Pipeline,
    Rounds,
    Spread,
    interleave,
    sdk_pipeline,
    table,
    us,
    verdict,
)
from drivers import FRAMEWORKS, Driver, etag_of, instrumentor_for, make_driver, requests_for
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

BASELINES = ("baseline", "baseline_again")  # not instrumented
NON_RECORDING = ("nosdk", "noop", "unsampled", "unsampled_nometrics")
RECORDING = ("recording", "phase_off", "recording_nometrics", "recording_noprocessor")
FLOORS = ("floor", "floor_noprocessor")
MODES = (*BASELINES, *NON_RECORDING, *RECORDING, *FLOORS)
PATHS = ("200", "304")
TARGET_NON_RECORDING = 1.03
TARGET_FLOOR = 1.25
TARGET_PHASE_OFF = 1.10


@dataclass
class Config:
    rounds: int
    batch_seconds: float
    deadline_seconds: float
    seed: int = 20240611


@dataclass
class CaseResult:
    framework: str
    path: str
    batch: int
    spans_per_response: int
    rounds: Rounds

    def seconds(self, mode: str, clock: str = "wall") -> float:
        return self.rounds.median(mode, clock)

    def ratio(self, mode: str, clock: str = "wall") -> Spread:
        return Spread.of(self.rounds.ratios(mode, "baseline", clock))

    def added(self, mode: str, clock: str = "wall") -> Spread:
        values = self.rounds.values(clock)
        return Spread.of([m - b for m, b in zip(values[mode], values["baseline"], strict=True)])

    def added_over_floor(
        self, clock: str = "wall", mode: str = "recording", floor: str = "floor"
    ) -> Spread:
        values = self.rounds.values(clock)
        return Spread.of(
            [
                (rec - base) / floor_time
                for rec, base, floor_time in zip(
                    values[mode], values["baseline"], values[floor], strict=True
                )
            ]
        )


def _mode_kwargs(
    mode: str, pipeline: Pipeline, processorless: TracerProvider
) -> dict[str, Any] | None:
    if mode in BASELINES:
        return None
    if mode == "nosdk":
        return {}
    if mode == "noop":
        return {"tracer_provider": NoOpTracerProvider(), "meter_provider": NoOpMeterProvider()}
    kwargs: dict[str, Any] = {
        "tracer_provider": pipeline.tracer_provider,
        "meter_provider": pipeline.meter_provider,
    }
    if mode == "phase_off":
        kwargs["phase_spans"] = False
    if mode in ("unsampled_nometrics", "recording_nometrics", "recording_noprocessor"):
        kwargs["meter_provider"] = NoOpMeterProvider()
    if mode == "recording_noprocessor":
        kwargs["tracer_provider"] = processorless
    return kwargs


def _traceparent(mode: str) -> str:
    unsampled = (*BASELINES, "unsampled", "unsampled_nometrics")
    return TRACEPARENT_UNSAMPLED if mode in unsampled else TRACEPARENT_SAMPLED


class Case:
    """One framework and request kind: the batches of every mode."""

    def __init__(self, driver: Driver, pipeline: Pipeline, etag: str, path: str) -> None:
        self.driver = driver
        self.pipeline = pipeline
        self.path = path
        self.instrumentor = instrumentor_for(driver.framework)
        self.requests = {
            mode: requests_for(etag, _traceparent(mode))[path]
            for mode in MODES
            if mode not in FLOORS
        }
        # Spans built and ended, consumed by nothing.
        self.processorless = TracerProvider()
        self.floor_tracers = {
            "floor": pipeline.tracer_provider.get_tracer("benchmark.floor"),
            "floor_noprocessor": self.processorless.get_tracer("benchmark.floor"),
        }
        self.floor_parent = TraceContextTextMapPropagator().extract(
            {"traceparent": TRACEPARENT_SAMPLED}
        )
        self.spans_per_response = 0

    async def run_mode(self, mode: str, count: int) -> tuple[float, float]:
        if mode in FLOORS:
            return self.floor(mode, count)
        async with self.instrumented(mode):
            return await self.driver.batch(self.requests[mode], count)

    @contextlib.asynccontextmanager
    async def instrumented(self, mode: str, settle_seconds: float = 0.005) -> AsyncIterator[None]:
        """Instrumented as ``mode`` wants for the duration (not for a baseline)."""
        kwargs = _mode_kwargs(mode, self.pipeline, self.processorless)
        if kwargs is not None:
            self.instrumentor.instrument(**kwargs)
        try:
            yield
        finally:
            # The client has the last reply before the server has finished
            # it (aiohttp): let it finish while still instrumented.
            await asyncio.sleep(settle_seconds)
            if kwargs is not None:
                self.instrumentor.uninstrument()
            if mode not in (*BASELINES, "nosdk", "noop"):
                self.pipeline.flush()  # export now, not during the next batch

    def floor(self, mode: str, count: int) -> tuple[float, float]:
        tracer = self.floor_tracers[mode]
        parent = self.floor_parent
        spans = self.spans_per_response
        cpu_started = process_time_ns()
        started = perf_counter_ns()
        for _ in range(count):
            for _ in range(spans):
                tracer.start_span("bare", context=parent).end()
        elapsed = perf_counter_ns() - started
        cpu = process_time_ns() - cpu_started
        self.pipeline.flush()
        return elapsed / count / 1e9, cpu / count / 1e9

    async def calibrate(self, count: int = 50) -> None:
        """Spans per recorded response (the floor's span count)."""
        self.pipeline.flush()
        before = self.pipeline.spans.counts[SCOPE]
        await self.run_mode("recording", count)
        exported = self.pipeline.spans.counts[SCOPE] - before
        if exported % count:
            raise RuntimeError(f"{exported} spans for {count} responses: not a whole number each")
        self.spans_per_response = exported // count

    def batches(self, count: int) -> dict[str, Callable[[], Any]]:
        def batch_of(mode: str) -> Callable[[], Any]:
            return lambda: self.run_mode(mode, count)

        return {mode: batch_of(mode) for mode in MODES}


async def run_framework(
    framework: str, root: Path, config: Config, log: Callable[[str], None]
) -> list[CaseResult]:
    driver = make_driver(framework, root)
    pipeline = sdk_pipeline()
    await driver.start()
    results = []
    try:
        etag = await etag_of(driver, TRACEPARENT_UNSAMPLED)
        for path in PATHS:
            case = Case(driver, pipeline, etag, path)
            await case.calibrate()
            # Warm every mode, then size the batches from the baseline's speed.
            for mode in MODES:
                await case.run_mode(mode, 20)
            per_response, _ = await case.run_mode("baseline", 200)
            count = max(50, int(config.batch_seconds / per_response))
            log(
                f"  {framework} {path}: {count} responses per batch, "
                f"{case.spans_per_response} spans per recorded response"
            )
            deadline = time.monotonic() + config.deadline_seconds
            rounds = await interleave(case.batches(count), config.rounds, config.seed, deadline)
            results.append(CaseResult(framework, path, count, case.spans_per_response, rounds))
    finally:
        await driver.stop()
        pipeline.shutdown()
    return results


def run(root: Path, config: Config, log: Callable[[str], None]) -> list[CaseResult]:
    # instrument() is called once per batch with the same meter provider: the
    # SDK warns that the instruments exist already (they are reused).
    logging.getLogger("opentelemetry.sdk.metrics").setLevel(logging.ERROR)
    results: list[CaseResult] = []
    for framework in FRAMEWORKS:
        results.extend(asyncio.run(run_framework(framework, root, config, log)))
    return results


# -- report ----------------------------------------------------------------


def _check(
    checks: list[tuple[str, str, bool]], name: str, figure: str, value: float, limit: float
) -> str:
    """Note whether ``value`` is within ``limit``; the target cell of the table."""
    met = value <= limit
    checks.append((name, figure, met))
    return f"<= {limit}: {verdict(met)}"


def report(results: list[CaseResult]) -> tuple[str, list[tuple[str, str, bool]]]:
    """The summary tables, the raw per-round tables, and the targets checked
    (on wall time, as the targets are stated; CPU time is shown beside it)."""
    checks: list[tuple[str, str, bool]] = []
    rows = []
    for result in results:
        for mode in MODES:
            if mode == "baseline" or mode in FLOORS:
                continue
            wall = result.ratio(mode)
            cpu = result.ratio(mode, "cpu")
            target = ""
            if mode in NON_RECORDING:
                target = _check(
                    checks,
                    f"non-recording ({mode}) {result.framework} {result.path}",
                    f"{wall.median:.3f}",
                    wall.median,
                    TARGET_NON_RECORDING,
                )
            elif mode == "phase_off" and result.path == "200":
                target = _check(
                    checks,
                    f"phase spans off {result.framework} 200",
                    f"{wall.median:.3f}",
                    wall.median,
                    TARGET_PHASE_OFF,
                )
            rows.append(
                [
                    result.framework,
                    result.path,
                    mode,
                    us(result.seconds("baseline")),
                    us(result.seconds(mode)),
                    wall.ratio_text(),
                    us(result.added(mode).median),
                    f"{cpu.median:.3f} ({cpu.p25:.3f}-{cpu.p75:.3f})",
                    us(result.added(mode, "cpu").median),
                    target,
                ]
            )
    summary = table(
        [
            "framework",
            "response",
            "mode",
            "baseline us",
            "mode us",
            "wall ratio: median (IQR, range, rounds)",
            "wall added us",
            "CPU ratio (IQR)",
            "CPU added us",
            "target (wall)",
        ],
        rows,
    )
    floor_rows = []
    for result in results:
        for mode, floor in (("recording", "floor"), ("recording_noprocessor", "floor_noprocessor")):
            over = result.added_over_floor(mode=mode, floor=floor)
            over_cpu = result.added_over_floor("cpu", mode=mode, floor=floor)
            target = ""
            if mode == "recording":  # the target is stated for the full SDK pipeline
                target = _check(
                    checks,
                    f"recording added / SDK floor {result.framework} {result.path}",
                    f"{over.median:.2f}",
                    over.median,
                    TARGET_FLOOR,
                )
            floor_rows.append(
                [
                    result.framework,
                    result.path,
                    f"{mode} / {floor}",
                    result.spans_per_response,
                    us(result.added(mode).median),
                    us(Spread.of(result.rounds.wall[floor]).median),
                    over.ratio_text(),
                    f"{over_cpu.median:.2f} ({over_cpu.p25:.2f}-{over_cpu.p75:.2f})",
                    target,
                ]
            )
    floor_table = table(
        [
            "framework",
            "response",
            "mode / floor",
            "spans/resp",
            "added us (mode - baseline)",
            "floor us (bare SDK spans)",
            "added / floor, wall: median (IQR, range, rounds)",
            "added / floor, CPU (IQR)",
            "target (wall)",
        ],
        floor_rows,
    )
    raw_parts = []
    for result in results:
        raw_rows = []
        for index, order in enumerate(result.rounds.orders):
            raw_rows.append(
                [
                    index + 1,
                    *[
                        f"{us(result.rounds.wall[m][index])} / {us(result.rounds.cpu[m][index])}"
                        for m in MODES
                    ],
                    " ".join(order),
                ]
            )
        raw_parts.append(
            f"{result.framework} {result.path}: {result.batch} responses per batch; "
            "wall us / CPU us per response\n\n" + table(["round", *MODES, "order run"], raw_rows)
        )
    text = (
        "Time per response; every ratio is between two batches of the same round:\n\n"
        + summary
        + "\n\nRecording: time added per response against the same number of bare SDK "
        "spans (the mode's tracer provider, the same sampled parent) in the same round:\n\n"
        + floor_table
        + "\n\nRaw rounds:\n\n"
        + "\n\n".join(raw_parts)
    )
    return text, checks
