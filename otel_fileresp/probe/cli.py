# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""``otel-fileresp probe``: the arguments and the exit status."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Final

from otel_fileresp._argtypes import int_at_least
from otel_fileresp.probe.compare import BaselineError, compare, load_baseline
from otel_fileresp.probe.render import render_comparison, render_result
from otel_fileresp.probe.runner import FRAMEWORKS, ProbeError, installed, run_probe

EXIT_OK: Final = 0
EXIT_WORSE: Final = 1
EXIT_ERROR: Final = 2
DEFAULT_RUNS: Final = 5
CHOICES: Final = ("starlette", "fastapi", "aiohttp", "all")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``probe`` to the ``otel-fileresp`` command line."""
    probe = commands.add_parser(
        "probe",
        help="run the installed frameworks through fixed file-response scenarios",
        description=(
            "Serve a fixed set of file-response scenarios (200, HEAD, ranges, If-Range,"
            " 304, 412, 416, 404, empty, large, directory; aiohttp: .gz/.br siblings)"
            " with the installed Starlette, FastAPI and/or aiohttp, in process, with"
            " this package's instrumentation and an in-memory SDK, and print per"
            " scenario: status, body bytes, whether the file was opened, pool jobs,"
            " phases, the precondition header that decided, median phase durations."
            " Needs opentelemetry-sdk (the 'test' extra)."
        ),
        epilog=(
            "exit status: 0 success (with --against: nothing got worse); 1 --against"
            " found something worse; 2 bad arguments, unreadable baseline, or a"
            " framework asked for is not installed"
        ),
    )
    probe.add_argument(
        "--framework",
        choices=CHOICES,
        default="all",
        help=(
            "what to probe (default all installed); starlette includes FastAPI when it is installed"
        ),
    )
    probe.add_argument(
        "--runs",
        type=int_at_least(1),
        default=DEFAULT_RUNS,
        metavar="N",
        help=f"run every scenario N times; durations are medians (default {DEFAULT_RUNS})",
    )
    probe.add_argument("--save", metavar="FILE", help="write the result as a JSON baseline")
    probe.add_argument(
        "--against",
        metavar="FILE",
        help="compare with a baseline saved by --save; exit 1 if a fact got worse",
    )
    probe.add_argument(
        "--max-slowdown",
        type=_factor,
        metavar="FACTOR",
        help=(
            "with --against: also fail when a phase's median duration grew by more than"
            " FACTOR (2 = twice as slow); without it timings are shown, never judged"
        ),
    )
    probe.add_argument(
        "--strict-opens",
        action="store_true",
        help="with --against: any scenario that opens the file where it did not is worse",
    )


def run(args: argparse.Namespace, prog: str) -> int:
    """Run ``probe`` with parsed arguments; the exit status."""
    if (args.max_slowdown is not None or args.strict_opens) and not args.against:
        print(f"{prog}: error: --max-slowdown and --strict-opens need --against", file=sys.stderr)
        return EXIT_ERROR
    baseline = None
    if args.against:
        try:
            baseline = load_baseline(args.against)
        except BaselineError as exc:
            print(f"{prog}: error: {exc.path}: {exc.reason}", file=sys.stderr)
            return EXIT_ERROR
    try:
        frameworks = _frameworks(args.framework)
        result = run_probe(frameworks, args.runs)
    except ProbeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(render_result(result))
    if args.save:
        try:
            Path(args.save).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"{prog}: error: {args.save}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
        print(f"\nsaved to {args.save}")
    if baseline is None:
        return EXIT_OK
    comparison = compare(
        baseline, result, max_slowdown=args.max_slowdown, strict_opens=args.strict_opens
    )
    if not comparison.versions:
        print(
            f"{prog}: error: {args.against}: no framework in common with this run",
            file=sys.stderr,
        )
        return EXIT_ERROR
    sys.stdout.write(
        render_comparison(comparison, baseline, args.against, max_slowdown=args.max_slowdown)
    )
    return EXIT_WORSE if comparison.failed else EXIT_OK


def _frameworks(choice: str) -> list[str]:
    if choice == "all":
        chosen = [f for f in FRAMEWORKS if installed(f)]
        if not chosen:
            raise ProbeError("none of starlette, fastapi, aiohttp is installed")
        return chosen
    if not installed(choice):
        raise ProbeError(f"{choice} is not installed")
    if choice == "starlette" and installed("fastapi"):
        return ["starlette", "fastapi"]
    return [choice]


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"a slowdown factor is at least 1: {text}")
    return value
