# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The ``otel-fileresp`` command line.

::

    otel-fileresp report [--top N] [--check [--allow-empty]] [--format text|json] FILE...
    python -m otel_fileresp report FILE...

Exit status:

* 0: success (and with ``--check``, the check passed);
* 1: ``--check`` found a ``fileresp.response`` span with status 304 and
  ``fileresp.opened=true``;
* 2: a file cannot be read (one line on standard error:
  ``otel-fileresp: error: FILE: reason``) or the arguments are wrong;
* 3: ``--check`` found no ``fileresp.response`` span at all, so it checked
  nothing (an export pipeline that lost the spans, say); ``--allow-empty``
  lets such an input pass.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Final

from otel_fileresp.probe import cli as probe_cli
from otel_fileresp.report import summarize
from otel_fileresp.report.aggregate import DEFAULT_TOP
from otel_fileresp.report.model import CheckResult
from otel_fileresp.report.readers import InputError
from otel_fileresp.report.render import render_json, render_text

PROG: Final = "otel-fileresp"
EXIT_OK: Final = 0
EXIT_NOT_MODIFIED_OPENED: Final = 1
EXIT_ERROR: Final = 2
EXIT_NO_FILE_RESPONSES: Final = 3
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
            " 2 unreadable file or bad arguments; 3 --check found no file response"
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
    probe_cli.add_parser(commands)
    return parser


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as the docs of
        # the signal module recommend.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
