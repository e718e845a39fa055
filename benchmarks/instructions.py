"""Instructions per response, instrumented / not, counted by valgrind.

The wall-clock ratios of the ``micro`` section move by several percent
between two identical batches on a shared machine, so they cannot tell a
ratio of 1.03 from 1.00. Counting the machine instructions the process
executes can: the same batch of responses counts the same to a fraction of
a percent, whatever else the machine does.

Each framework runs in its own Python process under
``valgrind --tool=callgrind --instr-atstart=no``, with the ``micro``
section's apps, request kinds (200 and 304) and modes (the same
``instrument()`` arguments, parents and bare-span floors). A tiny C helper
(compiled here with ``gcc`` from valgrind's ``callgrind.h``, loaded with
ctypes) switches counting on once the process is set up, zeroes the counters
after each mode's warm-up (10 responses) and dumps them after its measured
responses: instructions of every thread (the event loop and the worker
pool), of the server and, for aiohttp, of the in-process client as well
(which makes aiohttp's ratios slightly smaller than the server's own).

Every mode is counted twice, the second pass in the reverse order: the
``repeat`` column shows how far a count moves (``baseline_again`` is the
A/A comparison, as in ``micro``). Instructions are not time: a cache miss
or a system call costs more than its instruction count says. This section
shows how much work the instrumentation adds, exactly; the ``micro``
section says what that costs in time on this machine. It needs valgrind
(with its headers) and gcc, and is skipped without them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # the child process, run under valgrind
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(HERE.parent))

import wrapt  # noqa: E402
from _common import (  # noqa: E402
    TRACEPARENT_SAMPLED,
    TRACEPARENT_UNSAMPLED,
    Pipeline,
    sdk_pipeline,
    table,
)
from drivers import FRAMEWORKS, Request, etag_of, make_driver  # noqa: E402
from micro import (  # noqa: E402
    BASELINES,
    FLOORS,
    NON_RECORDING,
    PATHS,
    TARGET_FLOOR,
    TARGET_NON_RECORDING,
    TARGET_PHASE_OFF,
    Case,
    _check,
)
from micro import MODES as MICRO_MODES  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import (  # noqa: E402
    TraceContextTextMapPropagator,
)
from otel_fileresp._core import Telemetry  # noqa: E402

from otel_fileresp import _names as n  # noqa: E402
from otel_fileresp._patching import Patch, PatchSet  # noqa: E402
from otel_fileresp.settings import Settings  # noqa: E402

# ``patches_only``: the instrumentor's patch points, each wrapped (with
# wrapt, as instrument() does) by a wrapper that only calls through: what
# the patching costs before any of this package's logic runs.
PATCHES_ONLY = "patches_only"
MODES = (*MICRO_MODES[:2], PATCHES_ONLY, *MICRO_MODES[2:])

HELPER_SOURCE = """
#include <valgrind/callgrind.h>
void fileresp_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void fileresp_zero(void) { CALLGRIND_ZERO_STATS; }
void fileresp_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""
HEADER = Path("/usr/include/valgrind/callgrind.h")
WARM_UP = 10
REPEATS = 2
REFERENCE = "reference"
REFERENCE_CALLS = 1000
_LABEL = re.compile(r"^desc: Trigger: Client Request: (\S+) (\S+) (\S+) (\d+)$")
_TOTALS = re.compile(r"^(?:totals|summary): (\d+)")


def missing_tools() -> list[str]:
    """What this section needs and this machine lacks."""
    missing = [tool for tool in ("valgrind", "gcc") if shutil.which(tool) is None]
    if not HEADER.exists():
        missing.append(str(HEADER))
    return missing


@dataclass
class Count:
    framework: str
    path: str
    mode: str
    repeat: int
    instructions: int
    responses: int

    @property
    def per_response(self) -> float:
        return self.instructions / self.responses


# -- the child process, under valgrind -------------------------------------------


def _call_through(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
    return wrapped(*args, **kwargs)


@contextlib.asynccontextmanager
async def _patches_only(case: Case) -> AsyncIterator[None]:
    instrumentor = case.instrumentor
    patch_set = PatchSet("patches_only")
    patch_set.apply(
        [
            Patch(patch.owner, patch.attribute, _call_through, patch.required)
            for patch in instrumentor._patches(instrumentor._hooks)
        ]
    )
    try:
        yield
    finally:
        await asyncio.sleep(0.05)
        patch_set.remove()


def _request(case: Case, mode: str) -> Request:
    return case.requests[BASELINES[0] if mode == PATCHES_ONLY else mode]


def _mode(case: Case, mode: str) -> contextlib.AbstractAsyncContextManager[None]:
    if mode == PATCHES_ONLY:
        return _patches_only(case)
    return case.instrumented(mode, settle_seconds=0.05)


class _Counter:
    def __init__(self, library: Path) -> None:
        self._lib = ctypes.CDLL(str(library))

    def start(self) -> None:
        self._lib.fileresp_start()

    def zero(self) -> None:
        self._lib.fileresp_zero()

    def dump(self, label: str) -> None:
        self._lib.fileresp_dump(label.encode("ascii"))


async def _count_framework(
    framework: str, root: Path, responses: int, counter: _Counter, modes: tuple[str, ...]
) -> None:
    driver = make_driver(framework, root)
    pipeline = sdk_pipeline()
    await driver.start()
    try:
        etag = await etag_of(driver, TRACEPARENT_UNSAMPLED)
        for path in PATHS:
            case = Case(driver, pipeline, etag, path)
            await case.calibrate(count=10)
            counter.start()  # a no-op once started
            # Pass 0 is not kept (the parser drops it): the first count after
            # a change of activity runs long.
            for repeat in range(REPEATS + 1):
                count = responses if repeat else WARM_UP
                for mode in modes if repeat % 2 else reversed(modes):
                    label = f"{framework} {path} {mode} {repeat}"
                    if mode in FLOORS:
                        case.floor(mode, WARM_UP)
                        gc.collect()
                        counter.zero()
                        case.floor(mode, count)
                        counter.dump(label)
                        continue
                    async with _mode(case, mode):
                        await driver.batch(_request(case, mode), WARM_UP)
                        await asyncio.sleep(0.05)
                        gc.collect()
                        counter.zero()
                        await driver.batch(_request(case, mode), count)
                        # aiohttp finishes a response after the client has it.
                        await asyncio.sleep(0.05)
                        counter.dump(label)
    finally:
        await driver.stop()
        pipeline.shutdown()


class _Plain:
    def method(self, value: int) -> int:
        return value


class _Wrapped:
    def method(self, value: int) -> int:
        return value


def _references(pipeline: Pipeline) -> dict[str, Callable[[], object]]:
    """What the framework figures are made of, one call each: a method call
    plain and wrapped with wrapt, the SDK calls the contract makes per
    response (with its attribute sets), and bare spans."""
    wrapt.wrap_function_wrapper(_Wrapped, "method", _call_through)
    telemetry = Telemetry(
        Settings.resolve(None, None), pipeline.tracer_provider, pipeline.meter_provider
    )
    phase = telemetry.phase_attributes(n.FRAMEWORK_STARLETTE, n.PHASE_STAT)
    response = {
        n.ATTR_FRAMEWORK: n.FRAMEWORK_STARLETTE,
        n.ATTR_OUTCOME: n.OUTCOME_SENT,
        n.ATTR_OPENED: True,
        n.ATTR_STATUS_CODE: 200,
    }
    opens = {n.ATTR_FRAMEWORK: n.FRAMEWORK_STARLETTE, n.ATTR_STATUS_CODE: 200}
    tracer = pipeline.tracer_provider.get_tracer("benchmark.reference")
    propagator = TraceContextTextMapPropagator()
    sampled = propagator.extract({"traceparent": TRACEPARENT_SAMPLED})
    unsampled = propagator.extract({"traceparent": TRACEPARENT_UNSAMPLED})
    plain, wrapped = _Plain(), _Wrapped()
    return {
        "loop": lambda: None,
        "plain_method_call": lambda: plain.method(1),
        "wrapt_call_through": lambda: wrapped.method(1),
        "histogram_record_2_attributes": lambda: telemetry.phase_duration.record(0.001, phase),
        "histogram_record_4_attributes": lambda: telemetry.duration.record(0.001, response),
        "counter_add_2_attributes": lambda: telemetry.opens.add(1, opens),
        "bare_span_sampled": lambda: tracer.start_span("bare", context=sampled).end(),
        "bare_span_unsampled": lambda: tracer.start_span("bare", context=unsampled).end(),
    }


def _count_references(counter: _Counter) -> None:
    pipeline = sdk_pipeline()
    try:
        references = _references(pipeline)
        # As for the frameworks, a first count that is not kept: the first
        # count after a change of activity runs long.
        counter.zero()
        for _ in range(REFERENCE_CALLS):
            references["loop"]()
        counter.dump(f"{REFERENCE} - loop 0")
        for name, call in references.items():
            for _ in range(REFERENCE_CALLS):  # warm-up, not counted
                call()
            pipeline.flush()
            gc.collect()
            counter.zero()
            for _ in range(REFERENCE_CALLS):
                call()
            counter.dump(f"{REFERENCE} - {name} 1")
    finally:
        pipeline.shutdown()


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=FRAMEWORKS)
    parser.add_argument("root", type=Path)
    parser.add_argument("responses", type=int)
    parser.add_argument("library", type=Path)
    parser.add_argument("modes")
    args = parser.parse_args(argv)
    logging.getLogger("opentelemetry.sdk.metrics").setLevel(logging.ERROR)
    counter = _Counter(args.library)
    modes = tuple(args.modes.split(","))
    asyncio.run(_count_framework(args.framework, args.root, args.responses, counter, modes))
    if args.framework == FRAMEWORKS[0]:
        _count_references(counter)
    return 0


# -- the parent ----------------------------------------------------------------


def _parse(directory: Path, responses: int) -> list[Count]:
    counts = []
    for dump in sorted(directory.glob("callgrind.out.*")):
        label = None
        with dump.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                match = _LABEL.match(line.rstrip("\n"))
                if match:
                    label = match.groups()
                    continue
                totals = _TOTALS.match(line)
                if totals and label is not None:
                    framework, path, mode, repeat = label
                    if repeat == "0":
                        break  # the pass not counted
                    calls = REFERENCE_CALLS if framework == REFERENCE else responses
                    counts.append(
                        Count(framework, path, mode, int(repeat), int(totals.group(1)), calls)
                    )
                    break
    return counts


def run(
    root: Path,
    responses: int,
    log: Callable[[str], None],
    timeout: float,
    modes: tuple[str, ...] = MODES,
) -> list[Count]:
    """Count each framework in its own valgrind process (both at once).

    ``modes`` must hold ``baseline``; the report needs every mode.
    """
    with tempfile.TemporaryDirectory(prefix="fileresp-instructions-") as tmp:
        work = Path(tmp)
        source = work / "helper.c"
        source.write_text(HELPER_SOURCE)
        library = work / "libfileresp_count.so"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True
        )
        processes = []
        for framework in FRAMEWORKS:
            out = work / framework
            out.mkdir()
            command = [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}/callgrind.out.%p",
                sys.executable,
                str(Path(__file__).resolve()),
                framework,
                str(root),
                str(responses),
                str(library),
                ",".join(modes),
            ]
            log(f"  {framework}: {' '.join(command[:3])} ...")
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            processes.append(
                subprocess.Popen(
                    command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
            )
        for process in processes:
            try:
                _, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                raise
            if process.returncode:
                raise RuntimeError(f"instruction count failed: {stderr[-2000:]}")
        return [c for framework in FRAMEWORKS for c in _parse(work / framework, responses)]


def report(counts: list[Count]) -> tuple[str, list[tuple[str, str, bool]]]:
    """Instructions per response and their ratios; the targets, in instructions."""
    checks: list[tuple[str, str, bool]] = []
    by_key = {(c.framework, c.path, c.mode, c.repeat): c.per_response for c in counts}
    rows = []
    floor_rows = []
    for framework in FRAMEWORKS:
        for path in PATHS:
            if (framework, path, "baseline", 1) not in by_key:
                continue

            def per(mode: str, repeat: int, fw: str = framework, p: str = path) -> float:
                return by_key[(fw, p, mode, repeat)]

            for mode in MODES:
                if mode == "baseline" or mode in FLOORS:
                    continue
                ratios = [per(mode, r) / per("baseline", r) for r in range(1, REPEATS + 1)]
                ratio = max(ratios)  # the less favourable pass
                target = ""
                name = None
                limit = 0.0
                if mode in NON_RECORDING:
                    name, limit = f"non-recording ({mode})", TARGET_NON_RECORDING
                elif mode == "phase_off" and path == "200":
                    name, limit = "phase spans off", TARGET_PHASE_OFF
                if name is not None:
                    target = _check(
                        checks,
                        f"{name} {framework} {path}, instructions",
                        f"{ratio:.3f}",
                        ratio,
                        limit,
                    )
                rows.append(
                    [
                        framework,
                        path,
                        mode,
                        f"{per('baseline', 1):,.0f}",
                        f"{per(mode, 1):,.0f}",
                        f"{per(mode, 1) - per('baseline', 1):+,.0f}",
                        " / ".join(f"{r:.4f}" for r in ratios),
                        target,
                    ]
                )
            for mode, floor in (
                ("recording", "floor"),
                ("recording_noprocessor", "floor_noprocessor"),
            ):
                overs = [
                    (per(mode, r) - per("baseline", r)) / per(floor, r)
                    for r in range(1, REPEATS + 1)
                ]
                target = ""
                if mode == "recording":
                    target = _check(
                        checks,
                        f"recording added / SDK floor {framework} {path}, instructions",
                        f"{max(overs):.2f}",
                        max(overs),
                        TARGET_FLOOR,
                    )
                floor_rows.append(
                    [
                        framework,
                        path,
                        f"{mode} / {floor}",
                        f"{per(mode, 1) - per('baseline', 1):,.0f}",
                        f"{per(floor, 1):,.0f}",
                        " / ".join(f"{o:.2f}" for o in overs),
                        target,
                    ]
                )
    references = {c.mode: c.per_response for c in counts if c.framework == REFERENCE}
    reference_rows = [
        [name, f"{value - references['loop']:,.0f}"]
        for name, value in references.items()
        if name != "loop"
    ]
    responses = next((c.responses for c in counts if c.framework != REFERENCE), 0)
    text = (
        f"Instructions per response (first pass), {responses} responses per mode and pass, "
        f"after {WARM_UP} warm-up responses; ratios to `baseline` of the same pass, "
        "first / second pass (the target is checked on the larger):\n\n"
        + table(
            [
                "framework",
                "response",
                "mode",
                "baseline",
                "mode",
                "added",
                "ratio (pass 1 / 2)",
                "target (instructions)",
            ],
            rows,
        )
        + "\n\nRecording: instructions added per response against the same number of bare "
        "SDK spans:\n\n"
        + table(
            [
                "framework",
                "response",
                "mode / floor",
                "added",
                "floor (bare SDK spans)",
                "added / floor (pass 1 / 2)",
                "target (instructions)",
            ],
            floor_rows,
        )
        + f"\n\nWhat those are made of: instructions per call, {REFERENCE_CALLS} calls after "
        f"as many not counted, the empty loop's {references.get('loop', 0):,.0f} per "
        "iteration subtracted (SDK calls with this package's instruments and the "
        "contract's attribute sets; spans with the BatchSpanProcessor pipeline):\n\n"
        + table(["call", "instructions"], reference_rows)
    )
    return text, checks


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
