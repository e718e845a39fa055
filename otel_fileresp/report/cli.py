# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The ``otel-fileresp`` command line.

::

    otel-fileresp report [--top N] [--check [--allow-empty]] [--format text|json] FILE...
    otel-fileresp report NEW... --baseline OLD [--max-p99-growth G] [--min-samples N]
    otel-fileresp report FILE... --by ATTRIBUTE [--baseline-group VALUE] [...]
    otel-fileresp probe [--framework starlette|fastapi|aiohttp|all] [--runs N]
                        [--save FILE] [--against FILE [--max-slowdown F] [--strict-opens]]
    python -m otel_fileresp report FILE...

``report --baseline`` and ``--by`` are described in
:mod:`otel_fileresp.report.baseline`, ``probe`` in :mod:`otel_fileresp.probe`.

Exit status:

* 0: success (and with ``--check``, the check passed);
* 1: ``--check`` found a ``fileresp.response`` span with status 304 and
  ``fileresp.opened=true``;
* 2: a file cannot be read (one line on standard error:
  ``otel-fileresp: error: FILE: reason``) or the arguments are wrong;
* 3: ``--check`` found no ``fileresp.response`` span at all, so it checked
  nothing (an export pipeline that lost the spans, say); ``--allow-empty``
  lets such an input pass;
* 4: ``--baseline`` or ``--by``: the new traces are worse than the baseline
  (a status that never opened the file opens it, or a p99 grew by more than
  ``--max-p99-growth``). ``--check`` still applies to the new traces and
  its status (1 or 3) comes first.

``probe`` exits 0, 1 when ``--against`` found something worse, 2 on bad
arguments or an unreadable baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Final

from otel_fileresp._argtypes import int_at_least
from otel_fileresp.probe import cli as probe_cli
from otel_fileresp.report import summarize
from otel_fileresp.report.aggregate import DEFAULT_TOP
from otel_fileresp.report.baseline import (
    DEFAULT_MIN_SAMPLES,
    GroupError,
    compare_reports,
    parse_growth,
    pick_groups,
    summarize_groups,
)
from otel_fileresp.report.baseline import render_json as render_comparison_json
from otel_fileresp.report.baseline import render_text as render_comparison_text
from otel_fileresp.report.model import CheckResult
from otel_fileresp.report.readers import InputError
from otel_fileresp.report.render import render_json, render_text

PROG: Final = "otel-fileresp"
EXIT_OK: Final = 0
EXIT_NOT_MODIFIED_OPENED: Final = 1
EXIT_ERROR: Final = 2
EXIT_NO_FILE_RESPONSES: Final = 3
EXIT_WORSE_THAN_BASELINE: Final = 4
_EXIT_STATUS: Final = {
    CheckResult.PASSED: EXIT_OK,
    CheckResult.NOT_MODIFIED_OPENED: EXIT_NOT_MODIFIED_OPENED,
    CheckResult.NO_FILE_RESPONSES: EXIT_NO_FILE_RESPONSES,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "probe":
        return probe_cli.run(args, PROG)
    if args.baseline or args.by:
        return _compare(args)
    for option in ("max_p99_growth", "baseline_group"):
        if getattr(args, option) is not None:
            return _usage_error(f"--{option.replace('_', '-')} needs --baseline or --by")
    try:
        report = summarize(args.files, top=args.top)
    except InputError as exc:
        print(f"{PROG}: error: {exc.path}: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    check = report.check(allow_empty=args.allow_empty) if args.check else None
    render = render_json if args.format == "json" else render_text
    _write(render(report, check=check))
    return EXIT_OK if check is None else _EXIT_STATUS[check]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Tools for otel_fileresp telemetry.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="summarize fileresp spans from exported trace files",
        description=(
            "Summarize fileresp.* spans from OTLP JSON (Collector file exporter),"
            " Tempo or Jaeger JSON files, or the OpenTelemetry Python SDK's console"
            " exporter output: durations per framework and phase (nearest-rank"
            " percentiles), file opens by status code, the slowest responses."
        ),
        epilog=(
            "exit status: 0 success; 1 --check found a 304 that opened the file;"
            " 2 unreadable file or bad arguments; 3 --check found no file response;"
            " 4 --baseline/--by: worse than the baseline"
        ),
    )
    report.add_argument("files", nargs="+", metavar="FILE", help="trace file; '-' reads stdin")
    report.add_argument(
        "--top",
        type=_non_negative_int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"list the N slowest file responses (default {DEFAULT_TOP})",
    )
    report.add_argument(
        "--check",
        action="store_true",
        help=(
            "exit 1 if any response with status 304 opened the file, listing each;"
            " exit 3 if there is no file response (fileresp.response span) at all"
        ),
    )
    report.add_argument(
        "--allow-empty",
        action="store_true",
        help="with --check: pass when there is no file response (none expected)",
    )
    report.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    compared = report.add_argument_group(
        "comparing",
        "compare the FILEs with a baseline (--baseline) or their groups (--by): per phase"
        " p50/p95/p99/max and opens by status on both sides; exit 4 when a status that"
        " never opened the file now opens it, or a p99 grew by more than --max-p99-growth",
    )
    compared.add_argument(
        "--baseline",
        action="append",
        metavar="FILE",
        help="trace file(s) of the version before (repeat for several)",
    )
    compared.add_argument(
        "--by",
        metavar="ATTRIBUTE",
        help=(
            "split the FILEs by a fileresp.response span or resource attribute"
            " (service.version, say) and compare the groups"
        ),
    )
    compared.add_argument(
        "--baseline-group",
        metavar="VALUE",
        help="with --by: the group that is the baseline (default: of two, the larger)",
    )
    compared.add_argument(
        "--max-p99-growth",
        type=_growth,
        metavar="GROWTH",
        help=(
            "fail when a phase's p99 grew more: a factor (1.5) or a percentage (50%%);"
            " without it p99 is shown, not judged"
        ),
    )
    compared.add_argument(
        "--min-samples",
        type=_non_negative_int,
        default=DEFAULT_MIN_SAMPLES,
        metavar="N",
        help=f"judge a p99 only with N durations on both sides (default {DEFAULT_MIN_SAMPLES})",
    )
    probe_cli.add_parser(commands)
    return parser


def _compare(args: argparse.Namespace) -> int:
    """``--baseline`` / ``--by``: the comparison, its exit status."""
    if args.baseline and args.by:
        return _usage_error("use either --baseline or --by")
    if args.baseline_group is not None and not args.by:
        return _usage_error("--baseline-group needs --by")
    try:
        now = summarize(args.files, top=args.top)
        if args.by:
            groups = summarize_groups(args.files, args.by, top=args.top)
            try:
                baseline_group, others = pick_groups(groups, args.baseline_group)
            except GroupError as exc:
                return _usage_error(f"--by {args.by}: {exc}")
            pairs = [
                (
                    f"{args.by}={baseline_group}",
                    groups[baseline_group],
                    f"{args.by}={group}",
                    groups[group],
                )
                for group in others
            ]
        else:
            old = summarize(args.baseline, top=args.top)
            pairs = [(", ".join(old.files), old, ", ".join(now.files), now)]
    except InputError as exc:
        print(f"{PROG}: error: {exc.path}: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    comparisons = [
        compare_reports(
            old_report,
            new_report,
            baseline_label=old_label,
            now_label=new_label,
            max_p99_growth=args.max_p99_growth,
            min_samples=args.min_samples,
        )
        for old_label, old_report, new_label, new_report in pairs
    ]
    if args.format == "json":
        _write(render_comparison_json(comparisons, by=args.by))
    else:
        _write(render_comparison_text(comparisons, max_p99_growth=args.max_p99_growth))
    check = now.check(allow_empty=args.allow_empty) if args.check else None
    if check is not None and check is not CheckResult.PASSED:
        _write(f"--check: {check.value}\n")
        return _EXIT_STATUS[check]
    return EXIT_WORSE_THAN_BASELINE if any(c.failed for c in comparisons) else EXIT_OK


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_ERROR


def _growth(text: str) -> float:
    try:
        return parse_growth(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_non_negative_int: Final = int_at_least(0)


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as the docs of
        # the signal module recommend.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
