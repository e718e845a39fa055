"""Instructions per response, counted by valgrind, for the figures of issue
18's table; wall time as a secondary figure.

Every figure is per response, in four cases: Starlette (``StaticFiles``)
and aiohttp (``web.static``) serving a 100 kB file (200) and its 304. The
names are the issue's: **m1** the app alone (``nomw``), **m2** with
contrib's middleware and an unsampled parent (``bare_unsampled``), **m3**
with this package too (``ours_unsampled``), **m4** and **m5** the same
two with a sampled parent (``bare_sampled``, ``ours_sampled``). The modes:

- ``nomw``: the app without contrib's middleware, not instrumented;
- ``bare_unsampled``, ``bare_unsampled_again`` (A/A), ``bare_sampled``: with
  contrib's middleware (the asgi ``OpenTelemetryMiddleware`` for Starlette,
  the aiohttp-server middleware for aiohttp) as the request's parent;
- ``ours_unsampled``, ``ours_sampled``: the same with this package
  instrumented, default settings (``instrument()`` with no arguments);
- ``ours_nometrics_unsampled``, ``ours_nometrics_sampled``: this package
  with a no-op meter provider (its spans without its metrics);
- ``replay``: no app: the span calls this package made for one recorded
  response (captured from ``ours_sampled``: every ``start_span`` with its
  name, parent, kind, attributes and explicit timestamps, every
  ``set_attribute(s)``, ``set_status``, ``end``), made straight against the
  SDK; ``replay_metrics`` and ``replay_metrics_sampled``: the
  ``Histogram.record`` calls this package made for one unsampled (one
  recorded) response, the same instruments, amounts, attributes and
  context, made straight against the same SDK; ``replay_none``: a replay
  of nothing, subtracted from each replay (its batch loop and settling
  sleep);
- ``nomw_nosdk``, ``nomw_nosdk_again``, ``ours_nomw_nosdk``,
  ``patches_nomw_nosdk``: processes in which ``opentelemetry.sdk`` cannot
  be imported (the API alone, as when the SDK is not installed), the app
  without contrib's middleware: alone, with this package, and with this
  package's patch points (the wrapt wrappers ``instrument()`` installs)
  wrapped instead by wrapt wrappers that only call through (what the
  patching costs before any of this package's logic); ``bare_nosdk``,
  ``ours_nosdk``, ``patches_nosdk``: the same with contrib's middleware;
- the non-file request (a sync Starlette endpoint, run by anyio's
  ``run_sync``; an aiohttp handler awaiting ``loop.run_in_executor``):
  ``bare_*`` and ``ours_*`` as above.

The SDK (global providers, as ``opentelemetry-instrument`` sets them):
``TracerProvider()`` with its default ParentBased sampler, a
``SimpleSpanProcessor`` into an exporter that only counts, and an
``InMemoryMetricReader`` collected outside the counted window: no
BatchSpanProcessor or PeriodicExportingMetricReader thread runs. The
garbage collector is collected, then disabled, outside the window.

Each framework (and each framework without the SDK) runs in its own Python
process under ``valgrind --tool=callgrind --instr-atstart=no``; a tiny C
helper (gcc, valgrind's ``callgrind.h``, loaded with ctypes) zeroes the
counters after a mode's warm-up and dumps them after its responses. The
figure read is the ``totals:`` line of each dump (its ``summary:`` line
over-counts when worker threads run, a known callgrind issue): instructions
of every thread of the process (event loop and worker pool), the server's
and, for aiohttp, those of the in-process keep-alive client too (which
makes aiohttp's ratios slightly smaller than the server's own). Every mode
is counted in two passes, the second in the reverse order, after a pass
that is not kept. The same processes then run natively for the wall-time
figures: interleaved rounds in a shuffled order, medians of the per-round
ratios (wall time on a shared machine is noisy; the counts are the figures
the targets are checked on).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":  # the child process
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(HERE.parent))

FRAMEWORKS = ("starlette", "aiohttp")
KINDS = ("200", "304", "nonfile")
FILE_KINDS = ("200", "304")


@dataclass(frozen=True)
class Mode:
    name: str
    app: str | None  # "mw", "nomw", or None (a replay)
    sampling: str
    ours: bool


def _mode(name: str) -> Mode:
    """``replay*``: no app; ``*nomw*``: the app without contrib's middleware;
    ``ours*``: this package instrumented; ``*_sampled``: a sampled parent."""
    if name.startswith("replay"):
        return Mode(name, None, "unsampled" if name == "replay_metrics" else "sampled", False)
    parts = [p for p in name.split("_") if p != "again"]
    app = "nomw" if "nomw" in parts else "mw"
    return Mode(name, app, "sampled" if parts[-1] == "sampled" else "unsampled", parts[0] == "ours")


# The modes of each process: (sdk or nosdk, bare or ours) -> request kind -> modes.
# A process is instrumented once, before its apps are made, and stays so (as
# in production): no mode runs after an uninstrument(), whose leftovers (call
# sites the interpreter has stopped specialising, say) would be counted.
REPLAYS = ("replay", "replay_metrics", "replay_metrics_sampled", "replay_none")
ROLES: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {
    ("sdk", "bare"): {
        "200": ("nomw", "bare_unsampled", "bare_unsampled_again", "bare_sampled"),
        "304": ("nomw", "bare_unsampled", "bare_unsampled_again", "bare_sampled"),
        "nonfile": ("bare_unsampled", "bare_unsampled_again", "bare_sampled"),
    },
    ("sdk", "ours"): {
        "200": ("ours_unsampled", "ours_sampled", *REPLAYS),
        "304": ("ours_unsampled", "ours_sampled", *REPLAYS),
        "nonfile": ("ours_unsampled", "ours_sampled"),
    },
    # this package with a no-op meter provider: its spans without its metrics
    ("sdk", "nometrics"): {
        kind: ("ours_nometrics_unsampled", "ours_nometrics_sampled") for kind in FILE_KINDS
    },
    # no SDK: the app alone (issue 18's figure) and with contrib's middleware
    ("nosdk", "bare"): {
        kind: ("nomw_nosdk", "nomw_nosdk_again", "bare_nosdk") for kind in FILE_KINDS
    },
    ("nosdk", "ours"): {kind: ("ours_nomw_nosdk", "ours_nosdk") for kind in FILE_KINDS},
    # this package's patch points wrapped (with wrapt) by call-through
    # wrappers: the patching's own cost, before any of the package's logic
    ("nosdk", "patches"): {kind: ("patches_nomw_nosdk", "patches_nosdk") for kind in FILE_KINDS},
    # this package with one observation switched off (ablation.py)
    ("sdk", "ablated"): {
        kind: ("ours_unsampled", "replay_metrics", "replay_none") for kind in FILE_KINDS
    },
}


def _both(sdk: str) -> dict[str, tuple[str, ...]]:
    """For wall time: every mode in one process, instrumented and
    uninstrumented around each batch, so that a round's batches run close
    together in time (the machine's load drifts)."""
    bare, ours = ROLES[(sdk, "bare")], ROLES[(sdk, "ours")]
    return {kind: (*bare[kind], *ours[kind]) for kind in bare}


HELPER_SOURCE = """
#include <valgrind/callgrind.h>
void fileresp_start(void) { CALLGRIND_START_INSTRUMENTATION; }
void fileresp_zero(void) { CALLGRIND_ZERO_STATS; }
void fileresp_dump(const char *label) { CALLGRIND_DUMP_STATS_AT(label); }
"""
HEADER = Path("/usr/include/valgrind/callgrind.h")
WARM_UP = 10  # responses before each counted or timed batch
WARM_UP_AGAIN = 5  # in the counted passes after the first (not kept) one
PASSES = 2
SETTLE = 0.01
_LABEL = re.compile(r"^desc: Trigger: Client Request: (\S+) (\S+) (\S+) (\S+) (\d+)$")
_TOTALS = re.compile(r"^totals: (\d+)")

# The targets of issue 18, in instructions per response.
TARGET_OWN_WORK = 80_000
TARGET_OVER_APP = {
    ("starlette", "200"): 0.15,
    ("starlette", "304"): 0.38,
    ("aiohttp", "200"): 0.15,
    ("aiohttp", "304"): 0.30,
}
TARGET_OVER_CONTRIB = 0.40
TARGET_OVER_REPLAY = 1.15
TARGET_NOSDK = 1.02
TARGET_NONFILE = 1.005
TARGET_SPREAD = 0.005


def counter_library(work: Path) -> Path:
    """The counter helper (:data:`HELPER_SOURCE`), compiled in ``work``."""
    source = work / "helper.c"
    source.write_text(HELPER_SOURCE)
    library = work / "libfileresp_count.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source)], check=True)
    return library


def callgrind(out: Path) -> list[str]:
    """valgrind's command line counting a child's instructions, its dumps in ``out``
    (counting starts when the child's helper says so)."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}/callgrind.out.%p",
    ]


def missing_tools() -> list[str]:
    """What this section needs and this machine lacks."""
    missing = [tool for tool in ("valgrind", "gcc") if shutil.which(tool) is None]
    if not HEADER.exists():
        missing.append(str(HEADER))
    return missing


# -- the child process -----------------------------------------------------------


class _Counter:
    def __init__(self, library: str) -> None:
        self._lib = ctypes.CDLL(library) if library != "-" else None

    def start(self) -> None:
        if self._lib:
            self._lib.fileresp_start()

    def zero(self) -> None:
        if self._lib:
            self._lib.fileresp_zero()

    def dump(self, label: str) -> None:
        if self._lib:
            self._lib.fileresp_dump(label.encode("ascii"))


def _nothing() -> None:
    return None


class _Child:
    def __init__(
        self,
        framework: str,
        root: Path,
        sdk: bool,
        ours: bool | None,
        patches: bool = False,
        nometrics: bool = False,
    ) -> None:
        import _contrib

        self.c = _contrib
        self.framework = framework
        self.sdk = sdk
        self.ours = ours
        self.toggle = ours is None  # wall time: instrumented around each batch
        self.telemetry = _contrib.Telemetry() if sdk else None
        self.instrumentor = _contrib.instrumentor_for(framework)
        if ours and nometrics:
            from opentelemetry.metrics import NoOpMeterProvider

            self.instrumentor.instrument(meter_provider=NoOpMeterProvider())
        elif ours:
            # Default settings, the global providers; before the apps exist,
            # as with opentelemetry-instrument.
            self.instrumentor.instrument()
        self.patch_points = _contrib.call_through_patches(self.instrumentor) if patches else []
        self.apps = _contrib.make_apps(framework, root)
        tag = "sdk" if sdk else "nosdk"
        role = "patches" if patches else "nometrics" if nometrics else "ours" if ours else "bare"
        self.modes = _both(tag) if self.toggle else ROLES[(tag, role)]
        self.replays: dict[tuple[str, str], Callable[[], None]] = {}
        self.captured: dict[str, str] = {}
        self.etag = ""

    def batch(self, kind: str, mode: Mode) -> Callable[[int], Any]:
        if not self.toggle and mode.app is not None and bool(mode.ours) != bool(self.ours):
            raise RuntimeError(f"{mode.name} in a process where ours={self.ours}")
        if mode.app is None:
            replay = self.replays[(mode.name, kind)]

            async def run(count: int) -> None:
                for _ in range(count):
                    replay()

            return run
        request = self.c.request_for(kind, mode.sampling, self.etag)
        return self.apps.batch(mode.app, request)

    async def setup(self, nometrics: bool = False) -> None:
        await self.apps.start()
        probe = self.c.request_for("200", "unsampled", "")
        status, headers = await self.apps.one("mw", probe)
        if status != 200 or "etag" not in headers:
            raise RuntimeError(f"{self.framework}: no ETag ({status})")
        self.etag = headers["etag"]
        if self.telemetry is not None and self.ours is not False and not nometrics:
            for kind in FILE_KINDS:
                self._instrument(True)
                try:
                    await self._capture(kind)
                finally:
                    self._instrument(False)

    async def _capture(self, kind: str) -> None:
        """The span and metric calls of one recorded response, and those of
        one unsampled response; their replayers."""
        assert self.telemetry is not None
        tracer = self.telemetry.tracer_provider.get_tracer("benchmark.replay")
        # a replay of nothing: what a replay batch costs besides its calls
        self.replays[("replay_none", kind)] = _nothing
        for sampling in ("sampled", "unsampled"):
            run = self.batch(kind, _mode(f"ours_{sampling}"))
            await run(3)
            await asyncio.sleep(SETTLE)
            before = self.telemetry.ours()
            with self.c.Capture() as capture:
                await run(1)
                await asyncio.sleep(SETTLE)
            exported = self.telemetry.ours() - before
            calls = capture.result
            if calls.spans != exported or bool(calls.spans) != (sampling == "sampled"):
                raise RuntimeError(f"{sampling}: captured {calls.spans} spans, {exported} exported")
            if not calls.metrics:
                raise RuntimeError(f"{sampling}: no metric call captured")
            metrics = f"{len(calls.metrics)} `Histogram.record`: {calls.metrics_summary()}"
            if sampling == "sampled":
                self.replays[("replay", kind)] = self.c.replayer(tracer, calls)
                self.replays[("replay_metrics_sampled", kind)] = self.c.metric_replayer(calls)
                self.captured[f"{kind} sampled"] = (
                    f"{calls.spans} spans: {calls.summary()}; {metrics}"
                )
            else:
                self.replays[("replay_metrics", kind)] = self.c.metric_replayer(calls)
                self.captured[f"{kind} unsampled"] = metrics

    async def stop(self) -> None:
        await self.apps.stop()

    def _instrument(self, on: bool) -> None:
        if self.toggle:
            if on:
                self.instrumentor.instrument()
            else:
                self.instrumentor.uninstrument()

    async def measured(
        self,
        kind: str,
        mode: Mode,
        count: int,
        window: Callable[..., Any],
        warm_up: int = WARM_UP,
    ) -> Any:
        """Warm up, then run ``count`` responses inside ``window``."""
        run = self.batch(kind, mode)
        if mode.ours:
            self._instrument(True)
        try:
            await run(warm_up)
            await asyncio.sleep(SETTLE)
            if self.telemetry is not None:
                self.telemetry.collect()
            gc.collect()
            gc.disable()
            try:
                return await window(run, count)
            finally:
                gc.enable()
        finally:
            if mode.ours:
                self._instrument(False)


async def _count(child: _Child, counter: _Counter, responses: int) -> None:
    tag = "sdk" if child.sdk else "nosdk"

    def window_for(label: str) -> Callable[..., Any]:
        async def window(run: Callable[[int], Any], count: int) -> None:
            counter.zero()
            await run(count)
            await asyncio.sleep(SETTLE)  # aiohttp ends a response after the client has it
            counter.dump(label)

        return window

    counter.start()
    for kind, names in child.modes.items():
        # Pass 0 is counted but not kept: the first count of a request kind
        # runs 1 to 3 % long, whatever its mode.
        for repeat in range(PASSES + 1):
            count = responses if repeat else WARM_UP
            warm_up = WARM_UP_AGAIN if repeat else WARM_UP
            for name in names if repeat % 2 else reversed(names):
                label = f"{child.framework} {tag} {kind} {name} {repeat}"
                await child.measured(kind, _mode(name), count, window_for(label), warm_up)


async def _time(child: _Child, rounds: int, seconds: float, seed: int) -> dict[str, Any]:
    """Wall seconds per response, per mode and round (shuffled order)."""

    async def window(run: Callable[[int], Any], count: int) -> float:
        started = time.perf_counter()
        await run(count)
        return (time.perf_counter() - started) / count

    rng = random.Random(seed)
    result: dict[str, Any] = {}
    for kind, names in child.modes.items():
        per = await child.measured(kind, _mode(names[0]), 50, window)
        count = max(20, int(seconds / per))
        times: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            order = list(names)
            rng.shuffle(order)
            for name in order:
                times[name].append(await child.measured(kind, _mode(name), count, window))
        result[kind] = {"count": count, "times": times}
    return result


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", choices=FRAMEWORKS)
    parser.add_argument("sdk", choices=("sdk", "nosdk"))
    parser.add_argument("role", choices=("bare", "ours", "patches", "nometrics", "both", "ablated"))
    parser.add_argument("root", type=Path)
    parser.add_argument("library", help="the counter helper, or - for wall time")
    parser.add_argument("--responses", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=0, help="wall time: rounds")
    parser.add_argument("--seconds", type=float, default=0.05, help="wall time: per batch")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ablate", default="none", help="ablated: what to switch off")
    args = parser.parse_args(argv)
    if args.role == "ablated" and args.ablate != "none":
        import ablation

        ablation.apply(args.framework, args.ablate)
    if args.sdk == "nosdk":
        import _contrib

        _contrib.block_sdk()
    logging.getLogger("opentelemetry.sdk.metrics").setLevel(logging.ERROR)
    if args.library != "-":
        # Under valgrind everything runs some 50 times slower, so the GIL's
        # 5 ms switch interval would force thread switches (and their
        # instructions) that a native run does not see, in numbers that vary
        # from run to run. Threads still switch whenever one blocks.
        sys.setswitchinterval(30.0)

    async def main() -> dict[str, Any]:
        ours = {
            "bare": False,
            "ours": True,
            "patches": False,
            "nometrics": True,
            "both": None,
            "ablated": True,
        }
        child = _Child(
            args.framework,
            args.root,
            args.sdk == "sdk",
            ours[args.role],
            args.role == "patches",
            args.role == "nometrics",
        )
        if args.role == "ablated":
            child.modes = ROLES[("sdk", "ablated")]
        await child.setup(args.role == "nometrics")
        try:
            if args.rounds:
                timed = await _time(child, args.rounds, args.seconds, seed=13)
                return {"captured": child.captured, "wall": timed}
            await _count(child, _Counter(args.library), args.responses)
            return {"captured": child.captured, "patch_points": child.patch_points}
        finally:
            await child.stop()

    args.out.write_text(json.dumps(asyncio.run(main())))
    return 0


# -- the parent ----------------------------------------------------------------


@dataclass
class Result:
    """Instructions per response by (framework, sdk, kind, mode, pass); wall
    seconds per response by (framework, sdk, kind, mode) and round; what the
    replay replays."""

    counts: dict[tuple[str, str, str, str, int], float]
    wall: dict[tuple[str, str, str, str], list[float]]
    captured: dict[tuple[str, str], str]
    responses: int
    rounds: int
    seconds: float


def _parse(directory: Path, responses: int) -> dict[tuple[str, str, str, str, int], float]:
    counts = {}
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
                    framework, sdk, kind, mode, repeat = label
                    if repeat != "0":
                        key = (framework, sdk, kind, mode, int(repeat))
                        counts[key] = int(totals.group(1)) / responses
                    break
    return counts


Child = tuple[tuple[str, ...], list[str], Path, Path]


def child_command(
    out: Path,
    framework: str,
    sdk: str,
    role: str,
    root: Path,
    library: str,
    extra: Sequence[str],
    *,
    counted: bool,
) -> list[str]:
    """The command line of one child process of this module (its result in
    ``out``), under callgrind when ``counted`` (``library`` the counter
    helper), natively otherwise (``library`` ``-``)."""
    return [
        *(callgrind(out) if counted else []),
        sys.executable,
        str(Path(__file__).resolve()),
        framework,
        sdk,
        role,
        str(root),
        library,
        "--out",
        str(out / "result.json"),
        *extra,
    ]


def _children(
    work: Path,
    root: Path,
    library: str,
    extra: list[str],
    counted: bool,
    tag: str,
    roles: Sequence[tuple[str, str]],
) -> list[Child]:
    children = []
    for framework in FRAMEWORKS:
        for sdk, role in roles:
            out = work / f"{tag}-{framework}-{sdk}-{role}"
            out.mkdir()
            command = child_command(
                out, framework, sdk, role, root, library, extra, counted=counted
            )
            children.append(((framework, sdk, role), command, out, out / "result.json"))
    return children


def _run_all(
    children: list[Child],
    parallel: int,
    timeout: float,
    log: Callable[[str], None],
) -> None:
    """Run the children, ``parallel`` at a time; stderr goes to a file in
    each child's directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONHASHSEED"] = "0"
    pending = list(children)
    running: list[tuple[tuple[str, ...], Path, subprocess.Popen[bytes], float]] = []
    deadline = time.monotonic() + timeout
    try:
        while pending or running:
            while pending and len(running) < parallel:
                key, command, out, _ = pending.pop(0)
                with (out / "stderr.txt").open("wb") as stderr:
                    process = subprocess.Popen(
                        command, env=env, stdout=subprocess.DEVNULL, stderr=stderr
                    )
                running.append((key, out, process, time.monotonic()))
            time.sleep(0.5)
            for entry in list(running):
                key, out, process, started = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                if process.returncode:
                    text = (out / "stderr.txt").read_text(errors="replace")
                    raise RuntimeError(f"{' '.join(key)} failed: {text[-3000:]}")
                log(f"  {' '.join(key)}: {time.monotonic() - started:.0f} s")
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {timeout:.0f} s")
    finally:
        for _, _, process, _ in running:
            process.kill()


def run(
    root: Path,
    responses: int,
    log: Callable[[str], None],
    timeout: float = 1800,
    rounds: int = 7,
    seconds: float = 0.05,
    parallel: int = 4,
) -> Result:
    """Count every mode under valgrind (``parallel`` processes at a time), then time
    them natively (one process at a time); ``rounds=0`` skips the wall time."""
    with tempfile.TemporaryDirectory(prefix="fileresp-instructions-") as tmp:
        work = Path(tmp)
        library = counter_library(work)
        counted = _children(
            work,
            root,
            str(library),
            ["--responses", str(responses)],
            True,
            "count",
            [role for role in ROLES if role[1] != "ablated"],  # ablation.py's own
        )
        started = time.monotonic()
        log(f"instructions: {responses} responses per mode and pass, under valgrind")
        _run_all(counted, parallel, timeout, log)
        log(f"  counted in {time.monotonic() - started:.0f} s")
        counts: dict[tuple[str, str, str, str, int], float] = {}
        captured: dict[tuple[str, str], str] = {}
        for _, _, out, result in counted:
            counts.update(_parse(out, responses))
            for kind, text in json.loads(result.read_text())["captured"].items():
                captured[(out.name.split("-")[1], kind)] = text
        wall: dict[tuple[str, str, str, str], list[float]] = {}
        if rounds:
            timed = _children(
                work,
                root,
                "-",
                ["--rounds", str(rounds), "--seconds", str(seconds)],
                False,
                "wall",
                [("sdk", "both"), ("nosdk", "both")],
            )
            log(f"wall time: {rounds} rounds, about {seconds} s per batch")
            _run_all(timed, 1, timeout, log)
            for (framework, sdk, _), _, _, result in timed:
                for kind, data in json.loads(result.read_text())["wall"].items():
                    for mode, values in data["times"].items():
                        wall[(framework, sdk, kind, mode)] = values
        return Result(counts, wall, captured, responses, rounds, seconds)


# -- report ----------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:,.0f}".replace(",", " ")


@dataclass
class Figure:
    """One figure of the targets table for one case; ``values``: one per pass."""

    name: str
    framework: str
    kind: str
    values: list[float]
    goal: float | None
    digits: int = 2
    wall: float | None = None  # the same figure from wall time (median of rounds)
    kilo: bool = False  # instructions, shown in thousands (wall: µs)
    percent: bool = False  # a spread, shown in %

    @property
    def value(self) -> float:
        """A checked figure: the less favourable pass; a figure only shown:
        the mean of the passes."""
        if self.goal is None:
            return statistics.fmean(self.values)
        return max(self.values)

    def met(self) -> bool | None:
        return None if self.goal is None else self.value <= self.goal

    def text(self, value: float | None = None, extra: int = 0) -> str:
        value = self.value if value is None else value
        if self.kilo:
            return f"{value / 1000:,.{extra}f} k"
        if self.percent:
            return f"{value * 100:.{2 + extra}f} %"
        return f"{value:.{self.digits + extra}f}"

    def goal_text(self) -> str:
        if self.goal is None:
            return "(shown)"
        if self.kilo:
            return f"<= {self.goal / 1000:,.0f} k"
        if self.percent:
            return f"<= {self.goal * 100:.1f} %"
        return f"<= {self.goal}"


Of = Callable[[str], float]  # instructions (or seconds) per response of a mode


def _wall_figure(
    result: Result, key: tuple[str, str, str], f: Callable[[Of], float]
) -> float | None:
    """The median over rounds of the figure ``f`` computed from one round."""
    times = {m: v for (fw, s, k, m), v in result.wall.items() if (fw, s, k) == key}
    if not times:
        return None
    rounds = len(next(iter(times.values())))
    try:
        values = [f(lambda mode, i=i: times[mode][i]) for i in range(rounds)]  # type: ignore[misc]
    except KeyError:  # a mode counted only (the replays, patches_nosdk)
        return None
    return statistics.median(values)


@dataclass(frozen=True)
class Row:
    """A row of the targets table: its name, the figure from a case's modes
    (``of(mode)``: instructions per response), and its goal per case."""

    name: str
    sdk: str
    f: Callable[[Of], float]
    goal: Callable[[str, str], float | None] = lambda framework, kind: None
    digits: int = 2
    kilo: bool = False
    kinds: tuple[str, ...] = FILE_KINDS
    # a figure that depends on the case (its goal, say): made per case
    per_case: Callable[[str, str], Callable[[Of], float]] | None = None


def _figure(result: Result, framework: str, kind: str, row: Row) -> Figure:
    key = (framework, row.sdk, kind)
    f = row.per_case(framework, kind) if row.per_case else row.f
    values = []
    for repeat in range(1, PASSES + 1):
        values.append(f(lambda mode, r=repeat: result.counts[(*key, mode, r)]))  # type: ignore[misc]
    return Figure(
        row.name,
        framework,
        kind,
        values,
        row.goal(framework, kind),
        row.digits,
        _wall_figure(result, key, f),
        row.kilo,
    )


# The figures, in the names of issue 18: m1 the app alone, m2 with contrib's
# middleware (unsampled parent), m3 with this package too; m4, m5 the same
# recorded (sampled parent).
M1, M2, M3, M4, M5 = "nomw", "bare_unsampled", "ours_unsampled", "bare_sampled", "ours_sampled"


def _replayed(of: Of, mode: str) -> float:
    """A replay's count less that of a replay of nothing (the batch's loop
    and its settling sleep)."""
    return of(mode) - of("replay_none")


def _added(of: Of) -> float:
    return of(M3) - of(M2)


def _own_work(of: Of) -> float:
    return _added(of) - _replayed(of, "replay_metrics")


def _recorded(of: Of) -> float:
    return (of(M5) - of(M4)) - _added(of)


def _exemplars(of: Of) -> float:
    return _replayed(of, "replay_metrics_sampled") - _replayed(of, "replay_metrics")


def _nometrics_recorded(of: Of) -> float:
    added = of("ours_nometrics_unsampled") - of(M2)
    return (of("ours_nometrics_sampled") - of(M4)) - added


def _room_over_app(framework: str, kind: str) -> Callable[[Of], float]:
    goal = TARGET_OVER_APP[(framework, kind)]
    return lambda of: goal * of(M1) - _replayed(of, "replay_metrics")


def _room_over_contrib(framework: str, kind: str) -> Callable[[Of], float]:
    return lambda of: TARGET_OVER_CONTRIB * (of(M2) - of(M1)) - _replayed(of, "replay_metrics")


def _unused(of: Of) -> float:
    raise AssertionError("a per-case row")


def _goal(value: float) -> Callable[[str, str], float]:
    return lambda framework, kind: value


ROWS: tuple[Row, ...] = (
    Row("m1: the app alone", "sdk", lambda of: of(M1), kilo=True),
    Row("m2: + contrib's middleware, unsampled parent", "sdk", lambda of: of(M2), kilo=True),
    Row("m3: + this package (default settings), unsampled", "sdk", lambda of: of(M3), kilo=True),
    Row("m4: m2 recorded (sampled parent)", "sdk", lambda of: of(M4), kilo=True),
    Row("m5: m3 recorded (sampled parent)", "sdk", lambda of: of(M5), kilo=True),
    Row("m3 - m2: added by this package, unsampled", "sdk", _added, kilo=True),
    Row(
        "of it: the SDK's `Histogram.record` calls we make (replayed, same SDK)",
        "sdk",
        lambda of: _replayed(of, "replay_metrics"),
        kilo=True,
    ),
    Row(
        "**our own work**: m3 - m2 - the SDK calls we make",
        "sdk",
        _own_work,
        _goal(TARGET_OWN_WORK),
        kilo=True,
    ),
    Row(
        "**(m3 - m2) / m1** (denominator: the app alone)",
        "sdk",
        lambda of: _added(of) / of(M1),
        lambda framework, kind: TARGET_OVER_APP[(framework, kind)],
    ),
    Row(
        "**(m3 - m2) / (m2 - m1)** (denominator: what contrib's middleware adds)",
        "sdk",
        lambda of: _added(of) / (of(M2) - of(M1)),
        _goal(TARGET_OVER_CONTRIB),
    ),
    Row(
        "room for our own work under the m1 goal: goal x m1 - the SDK calls we make",
        "sdk",
        _unused,
        kilo=True,
        per_case=_room_over_app,
    ),
    Row(
        "room under the (m2 - m1) goal: 0.40 x (m2 - m1) - the SDK calls we make",
        "sdk",
        _unused,
        kilo=True,
        per_case=_room_over_contrib,
    ),
    Row(
        "(m3 - m2) / m2 (denominator: the app with contrib's middleware)",
        "sdk",
        lambda of: _added(of) / of(M2),
    ),
    Row(
        "(m5 - m4) - (m3 - m2): what recording adds to this package's cost",
        "sdk",
        _recorded,
        kilo=True,
    ),
    Row(
        "the SDK's own cost of the same span calls (replayed)",
        "sdk",
        lambda of: _replayed(of, "replay"),
        kilo=True,
    ),
    Row(
        "**recorded: ((m5 - m4) - (m3 - m2)) / the span calls replayed**",
        "sdk",
        lambda of: _recorded(of) / _replayed(of, "replay"),
        _goal(TARGET_OVER_REPLAY),
    ),
    Row(
        "of the numerator: exemplars of our metric calls (replayed sampled - unsampled)",
        "sdk",
        _exemplars,
        kilo=True,
    ),
    Row(
        "recorded / (span calls replayed + exemplars replayed)",
        "sdk",
        lambda of: _recorded(of) / (_replayed(of, "replay") + _exemplars(of)),
    ),
    Row(
        "recorded with a no-op meter provider (spans only) / span calls replayed",
        "sdk",
        lambda of: _nometrics_recorded(of) / _replayed(of, "replay"),
    ),
    Row(
        "**no SDK installed, no contrib middleware: with / without this package**",
        "nosdk",
        lambda of: of("ours_nomw_nosdk") / of("nomw_nosdk"),
        _goal(TARGET_NOSDK),
        digits=3,
    ),
    Row(
        "of it: the patch points alone (call-through wrappers, wrapt or plain as ours) / without",
        "nosdk",
        lambda of: of("patches_nomw_nosdk") / of("nomw_nosdk"),
        digits=3,
    ),
    Row(
        "no SDK, no contrib middleware: added by this package",
        "nosdk",
        lambda of: of("ours_nomw_nosdk") - of("nomw_nosdk"),
        kilo=True,
    ),
    Row(
        "of it: the patch points alone (wrappers calling through, wrapt or plain as ours)",
        "nosdk",
        lambda of: of("patches_nomw_nosdk") - of("nomw_nosdk"),
        kilo=True,
    ),
    Row(
        "no SDK, with contrib's middleware: with / without this package",
        "nosdk",
        lambda of: of("ours_nosdk") / of("bare_nosdk"),
        digits=3,
    ),
    Row(
        "**non-file request, contrib's middleware, unsampled: with / without**",
        "sdk",
        lambda of: of(M3) / of(M2),
        _goal(TARGET_NONFILE),
        digits=4,
        kinds=("nonfile",),
    ),
    Row(
        "non-file request, sampled parent: with / without",
        "sdk",
        lambda of: of(M5) / of(M4),
        digits=3,
        kinds=("nonfile",),
    ),
)


def figures(result: Result) -> list[Figure]:
    """Every figure of the targets table, by framework and response."""
    return [
        _figure(result, framework, kind, row)
        for row in ROWS
        for framework in FRAMEWORKS
        for kind in row.kinds
    ]


def spreads(result: Result) -> list[Figure]:
    """Per case: the A/A spread (``*_again`` against its twin, same pass; with
    and without the SDK) and the spread of the same mode between the two
    passes (every mode of the case but ``replay_none``, a 3 k correction
    term), the larger of each."""
    counts = result.counts
    found = []
    for framework, kind in _COLUMNS:
        aa = []
        passes = []
        for (fw, sdk, k, mode, repeat), value in counts.items():
            if (fw, k) != (framework, kind) or mode == "replay_none":
                continue
            if mode.endswith("_again"):
                aa.append(abs(value / counts[(fw, sdk, k, mode[: -len("_again")], repeat)] - 1))
            if repeat == 2:
                passes.append(abs(value / counts[(fw, sdk, k, mode, 1)] - 1))
        for name, values in (
            ("**A/A**: two identical batches in one pass, largest difference", aa),
            ("the same mode in pass 1 and pass 2, largest difference", passes),
        ):
            figure = Figure(name, framework, kind, [max(values)], TARGET_SPREAD)
            figure.percent = True
            found.append(figure)
    return found


_COLUMNS = (("starlette", "200"), ("starlette", "304"), ("aiohttp", "200"), ("aiohttp", "304"))


def _cell(figure: Figure) -> str:
    text = figure.text()
    met = figure.met()
    if met is not None:
        text += " yes" if met else " **NO**"
    return text


def targets_table(found: list[Figure]) -> tuple[str, list[tuple[str, str, bool]]]:
    """One row per figure, a column per case (the non-file rows: the Starlette
    sync endpoint under S200, the aiohttp executor handler under A200): the
    figure and whether its goal is met."""
    checks: list[tuple[str, str, bool]] = []
    rows = []
    for name in dict.fromkeys(f.name for f in found):
        cells = []
        goals: dict[str, list[str]] = {}  # goal -> the cases that have it
        for framework, kind in _COLUMNS:
            match = [
                f
                for f in found
                if f.name == name
                and f.framework == framework
                and (f.kind == kind or (f.kind == "nonfile" and kind == "200"))
            ]
            if not match:
                cells.append("")
                continue
            figure = match[0]
            cells.append(_cell(figure))
            met = figure.met()
            if met is not None:
                case = f"{framework} {figure.kind}"
                checks.append((f"{name.replace('**', '')}, {case}", figure.text(), met))
            goals.setdefault(figure.goal_text(), []).append(f"{framework[0].upper()}{kind}")
        if len(goals) == 1:
            goal = next(iter(goals))
        else:
            goal = "; ".join(f"{', '.join(cases)} {text}" for text, cases in goals.items())
        rows.append([name, goal, *cells])
    headers = ["figure (instructions per response)", "goal", "S200", "S304", "A200", "A304"]
    return table(headers, rows), checks


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def report(result: Result) -> tuple[str, list[tuple[str, str, bool]]]:
    found = figures(result)
    targets, checks = targets_table(found + spreads(result))
    counts = result.counts
    detail = []
    for (framework, sdk, kind, mode, repeat), value in sorted(counts.items()):
        if repeat != 1:
            continue
        second = counts.get((framework, sdk, kind, mode, 2))
        wall = result.wall.get((framework, sdk, kind, mode))
        detail.append(
            [
                framework,
                sdk,
                kind,
                mode,
                _fmt(value),
                _fmt(second) if second else "",
                f"{(second / value - 1) * 100:+.2f} %" if second else "",
                f"{statistics.median(wall) * 1e6:.1f}" if wall else "",
            ]
        )
    figure_rows = []
    for figure in found:
        wall = ""
        if figure.wall is not None:
            wall = f"{figure.wall * 1e6:.1f} µs" if figure.kilo else figure.text(figure.wall)
        figure_rows.append(
            [
                figure.framework,
                figure.kind,
                figure.name,
                " / ".join(figure.text(v, 1) for v in figure.values),
                wall,
                figure.goal_text(),
            ]
        )
    wall_aa = []
    for (framework, sdk, kind, mode), values in sorted(result.wall.items()):
        if mode.endswith("_again"):
            twin = result.wall[(framework, sdk, kind, mode[: -len("_again")])]
            ratios = sorted(a / b for a, b in zip(values, twin, strict=True))
            wall_aa.append(
                f"{framework} {kind}{' no SDK' if sdk == 'nosdk' else ''} "
                f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})"
            )
    wall_note = (
        "Wall time A/A (`*_again` / its twin, median and range of the rounds): "
        + "; ".join(wall_aa)
        + ". Figures made of differences (added cost, span path) are below this "
        "resolution in wall time on a shared machine; the instruction counts are the "
        "figures the targets are checked on."
        if wall_aa
        else ""
    )
    captured = [[fw, kind, text] for (fw, kind), text in sorted(result.captured.items())]
    text = (
        f"{result.responses} responses per mode and pass, after {WARM_UP_AGAIN} warm-up "
        f"responses (and a first pass of {WARM_UP} + {WARM_UP} per mode, not kept). "
        "A figure with a goal is the less favourable of the two passes; a figure "
        "shown without one is their mean. S200 / S304 / A200 / A304: Starlette and "
        "aiohttp, a 100 kB file (200) and its 304; the non-file rows: the Starlette "
        "sync endpoint (anyio's `run_sync`) under S200, the aiohttp handler awaiting "
        "`run_in_executor` under A200.\n\n"
        + targets
        + "\n\nEvery figure, pass 1 / pass 2 (instructions) and wall time (median of "
        f"{result.rounds} rounds of the per-round figure; about {result.seconds} s per "
        "batch):\n\n"
        + table(
            ["framework", "response", "figure", "instructions (pass 1 / 2)", "wall", "goal"],
            figure_rows,
        )
        + ("\n\n" + wall_note if wall_note else "")
        + "\n\nInstructions per response, by mode (wall: median µs per response):\n\n"
        + table(
            ["framework", "sdk", "response", "mode", "pass 1", "pass 2", "pass 2 / 1", "wall µs"],
            detail,
        )
        + "\n\nWhat the replays replay (the calls this package made for one recorded, "
        "and one unsampled, response):\n\n" + table(["framework", "response", "calls"], captured)
    )
    return text, checks


def save(result: Result, path: Path) -> None:
    """The counts and wall times as JSON, for ``--report``."""
    data = {
        "counts": [[*key, value] for key, value in result.counts.items()],
        "wall": [[*key, values] for key, values in result.wall.items()],
        "captured": [[*key, text] for key, text in result.captured.items()],
        "responses": result.responses,
        "rounds": result.rounds,
        "seconds": result.seconds,
    }
    path.write_text(json.dumps(data), encoding="utf-8")


def load(path: Path) -> Result:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Result(
        {tuple(row[:-1]): row[-1] for row in data["counts"]},  # type: ignore[misc]
        {tuple(row[:-1]): row[-1] for row in data["wall"]},  # type: ignore[misc]
        {tuple(row[:-1]): row[-1] for row in data["captured"]},  # type: ignore[misc]
        data["responses"],
        data["rounds"],
        data["seconds"],
    )


def main(argv: list[str] | None = None) -> int:
    """This section alone: ``python benchmarks/instructions.py --run``
    (``--save FILE``: the counts as JSON; ``--report FILE``: the report of
    saved counts, without running)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--save", type=Path, help="write the counts to this JSON file")
    parser.add_argument("--report", type=Path, help="report the counts of this JSON file")
    args = parser.parse_args(argv)
    from _common import make_site

    if args.report:
        result = load(args.report)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = make_site(Path(tmp) / "static")
            result = run(
                root, args.responses, lambda s: print(s, file=sys.stderr), rounds=args.rounds
            )
    if args.save:
        save(result, args.save)
    print(report(result)[0])
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        sys.exit(main(sys.argv[2:]))
    sys.exit(_child(sys.argv[1:]))
