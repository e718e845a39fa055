"""Overhead benchmarks of otel_fileresp: one command, one process run.

    python3 dev.py bench                # from a fresh clone: own virtualenv, full run
    python benchmarks/run.py            # full run (about 25 minutes on 2 cores)
    python benchmarks/run.py --quick    # routine run: fewer rounds and responses

Sections (``--section``/``--only`` picks some, comma-separated; the default
runs ``instructions``, ``profile``, ``work``, ``e2e``, ``memory`` and
``quantiles``):

- ``instructions``: every figure of issue 18's table (m1 the app alone, m2
  with contrib's middleware, m3 with this package; m4, m5 recorded; the
  SDK calls we make, replayed; both denominators; no SDK; non-file; A/A),
  in one markdown table with goals and met marks: instructions per
  response counted by valgrind (callgrind, two passes), wall time as a
  secondary figure (``instructions.py``; skipped without valgrind and gcc).
  Runs on its own in 7 to 8 minutes on 2 shared cores:
  ``python3 dev.py bench --section instructions``;
- ``work``: worker-pool jobs, file-system calls and Python function calls per
  response, instrumented / not (``work.py``);
- ``e2e``: uvicorn + contrib ASGI middleware and aiohttp + contrib
  aiohttp-server under 16 keep-alive connections on loopback, servers in
  their own processes, plus stat/open/read system calls per response with
  ``strace -f -c`` when strace is installed (``e2e.py``);
- ``memory``: RSS and open descriptors over 100 000 responses (5 000 with
  ``--quick``) (``memory.py``);
- ``profile``: where "our own work" of the ``instructions`` table goes:
  this package's own instructions per unsampled response, by group (hooks,
  record verbs, closures and coroutines made per response, the telemetry
  decision, emission, guards) and function by function, from
  ``callgrind_annotate --inclusive=yes``, the SDK's ``Histogram.record``
  apart, and the C-level work (wrapt, ContextVar, ``perf_counter_ns``,
  objects made) instrumented less not (``per_function.py``; about 2
  minutes);
- ``ablation`` (only when asked for): what each observation costs: this
  package's own work per unsampled response with one observation switched
  off (the pool jobs, the send observer, the head observer, the client-gone
  flag, the audit hook), against all on (``ablation.py``; about
  5 minutes);
- ``micro`` (only when asked for): issue 6's in-process wall-time modes,
  interleaved A/B, without contrib's middleware (``micro.py``);
- ``quantiles``: issue 18's quantile error of the documented PromQL over
  the default buckets, the old ones and the SDK's exponential histogram, for
  latency mixes from 1 ms to 5 s, through a real Prometheus (Debian's
  ``prometheus`` and ``promtool``; skipped without them), and the series
  each layout costs (``quantiles.py``; about 15 s, 5 s with ``--quick``).

Everything is bounded in count and in time, and talks to 127.0.0.1 only.
``--markdown FILE`` also writes the report to FILE. Needs the packages of
``benchmarks/requirements.txt``; the package itself is imported from this
checkout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # this checkout's otel_fileresp

from _common import environment, loadavg, make_site, table  # noqa: E402

SECTIONS = (
    "instructions",
    "profile",
    "work",
    "e2e",
    "memory",
    "quantiles",
    "micro",
    "ablation",
)
DEFAULT_SECTIONS = SECTIONS[:6]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and responses")
    parser.add_argument(
        "--only",
        "--section",
        default=",".join(DEFAULT_SECTIONS),
        help=f"sections, comma-separated, of: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--responses",
        type=int,
        help="instructions and profile: responses counted per mode and pass (30, quick 20)",
    )
    parser.add_argument(
        "--wall-rounds", type=int, help="instructions: wall-time rounds (7, quick 3; 0: none)"
    )
    parser.add_argument("--rounds", type=int, help="micro: A/B rounds (31, quick 9)")
    parser.add_argument(
        "--quantile-samples", type=int, help="quantiles: samples per mix (20000, quick 5000)"
    )
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="end to end: the Python load generator even when wrk is installed",
    )
    parser.add_argument(
        "--e2e-seconds", type=float, help="end to end: seconds per load batch (2, quick 1)"
    )
    parser.add_argument(
        "--memory-responses", type=int, help="memory: responses (100000, quick 5000)"
    )
    parser.add_argument(
        "--memory-baseline",
        action="store_true",
        help="memory: also run without instrumentation, for reference",
    )
    parser.add_argument(
        "--wait-for-quiet",
        type=float,
        default=0.0,
        help="wait up to this many seconds for a 1-minute load average below 0.5",
    )
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--save-counts",
        type=Path,
        help="instructions: also write the counts as JSON (report them again with "
        "benchmarks/instructions.py --run --report FILE)",
    )
    return parser


def _wait_for_quiet(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.getloadavg()[0] < 0.5:
            return
        time.sleep(5)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    # instrument() runs once per batch with the same meter provider: the SDK
    # warns that the instruments exist already (they are reused).
    logging.getLogger("opentelemetry.sdk.metrics").setLevel(logging.ERROR)
    if args.wait_for_quiet:
        _wait_for_quiet(args.wait_for_quiet)

    parts: list[str] = []
    checks: list[tuple[str, str, bool]] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        parts.append(text)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    env = environment()
    emit("# otel_fileresp overhead benchmarks\n")
    emit("\n".join(f"- {key}: {value}" for key, value in env.items()))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fileresp-bench-") as tmp:
        root = make_site(Path(tmp) / "static")
        if "micro" in sections:
            import micro

            rounds = args.rounds or (9 if quick else 31)
            config = micro.Config(
                rounds=rounds,
                batch_seconds=0.03 if quick else 0.12,
                deadline_seconds=20 if quick else 240,
            )
            log(f"micro: up to {rounds} rounds per case")
            text, found = micro.report(micro.run(root, config, log))
            emit("\n## In-process overhead (interleaved A/B)\n\n" + micro.__doc__.strip())
            emit("\n" + text)
            checks += found
        if {"instructions", "profile", "ablation"} & set(sections):
            import instructions

            missing = instructions.missing_tools()
        if "instructions" in sections:
            emit("\n## Instructions per response (valgrind)\n\n" + instructions.__doc__.strip())
            if missing:
                emit(f"\nSkipped: this machine has no {', '.join(missing)}.")
            else:
                rounds = args.wall_rounds if args.wall_rounds is not None else (3 if quick else 7)
                result = instructions.run(
                    root,
                    args.responses or (20 if quick else 30),
                    log,
                    timeout=1800,
                    rounds=rounds,
                )
                if args.save_counts:
                    instructions.save(result, args.save_counts)
                text, found = instructions.report(result)
                emit("\n" + text)
                checks += found
        if "profile" in sections:
            import per_function

            emit("\n## Per function, unsampled (valgrind)\n\n" + per_function.__doc__.strip())
            if missing:
                emit(f"\nSkipped: this machine has no {', '.join(missing)}.")
            else:
                profiled = per_function.run(root, args.responses or 30, log)
                emit("\n" + per_function.report(profiled))
        if "ablation" in sections:
            import ablation

            emit("\n## What each observation costs (valgrind)\n\n" + ablation.__doc__.strip())
            if missing:
                emit(f"\nSkipped: this machine has no {', '.join(missing)}.")
            else:
                emit("\n" + ablation.report(ablation.run(root, args.responses or 30, log)))
        if "work" in sections:
            import work

            log("work")
            text, found = work.report(work.run(root, 20 if quick else 100))
            emit("\n## No extra work (in-process counts)\n\n" + work.__doc__.strip())
            emit("\n" + text)
            checks += found
        if "e2e" in sections:
            import e2e

            log("e2e")
            syscall_requests = 50 if quick else 200
            results, syscalls = e2e.run(
                root,
                rounds=5 if quick else 7,
                duration=args.e2e_seconds or (1.0 if quick else 2.0),
                max_requests=1_000_000,
                use_wrk=not args.python_load,
                paths=("200", "304"),
                log=log,
                syscall_requests=syscall_requests,
            )
            text, found = e2e.report(results, syscalls, syscall_requests)
            emit("\n## End to end under load\n\n" + e2e.__doc__.strip())
            emit("\n" + text)
            checks += found
        if "memory" in sections:
            import memory

            responses = args.memory_responses or (5_000 if quick else 100_000)
            log(f"memory: {responses} responses per framework")
            results_memory = memory.run(
                root, responses, args.memory_baseline, 300 if quick else 900, log
            )
            text, found = memory.report(results_memory)
            emit("\n## Memory and descriptors\n\n" + memory.__doc__.strip())
            emit("\n" + text)
            checks += found
    if "quantiles" in sections:
        import quantiles

        emit("\n## Quantile error of the documented PromQL\n\n" + quantiles.__doc__.strip())
        if quantiles.prometheus_binaries() is None:
            emit("\nSkipped: this machine has no prometheus and promtool (Debian: prometheus).")
        else:
            samples = args.quantile_samples or (5_000 if quick else 20_000)
            log(f"quantiles: {samples} samples per mix")
            text, found = quantiles.run(samples, log)
            emit("\n" + text)
            checks += found
    emit(
        f"\n## Targets\n\nRun took {time.monotonic() - started:.0f} s; load average at the "
        f"end (1/5/15 min): {loadavg()}.\n\n"
        + table(["target", "figure", "met"], [[n, f, "yes" if m else "NO"] for n, f, m in checks])
    )
    if args.markdown:
        args.markdown.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
