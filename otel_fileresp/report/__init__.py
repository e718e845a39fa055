# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Summarize ``fileresp.*`` spans from exported trace files.

Command line::

    otel-fileresp report [--top N] [--check [--allow-empty]] [--format text|json] FILE...
    python -m otel_fileresp report FILE...

Python::

    from otel_fileresp.report import summarize

    report = summarize(["traces.jsonl"], top=5)
    report.durations["aiohttp"]["send"].p99_ns
    report.opens_by_status()  # {"aiohttp": {200: 41, 304: 1}, ...}
    assert report.not_modified_opened_count == 0

Per framework (``fileresp.framework`` of the ``fileresp.response`` span) and
per phase (``response``, ``stat``, ``precondition``, ``open``,
``threadpool.wait``, ``send``) the report gives the count, p50, p95, p99 and
maximum of the span durations. A phase span gets its framework from its
parent ``fileresp.response`` span in the same trace. It also counts
``fileresp.response`` spans and file opens (``fileresp.opened=true``) per
``http.response.status_code``, lists the N slowest responses, and finds the
responses that answered 304 yet opened the file (``--check`` exits 1 if
there is any, and 3 if there is no file response at all).

Percentiles are nearest-rank, always an observed duration (see
:mod:`otel_fileresp.report.aggregate`). Inputs: OTLP JSON (Collector ``file``
exporter, Tempo), Jaeger JSON and the OpenTelemetry Python SDK's console
exporter output, log lines and all; large documents are streamed (see
:mod:`otel_fileresp.report.readers`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from otel_fileresp.report.aggregate import DEFAULT_TOP, ReportBuilder
from otel_fileresp.report.model import (
    CheckResult,
    DurationStats,
    Report,
    SpanRecord,
    StatusCounts,
)
from otel_fileresp.report.readers import InputError, display_name, read_file

__all__ = [
    "CheckResult",
    "DurationStats",
    "InputError",
    "Report",
    "SpanRecord",
    "StatusCounts",
    "summarize",
]


def summarize(paths: Iterable[str | os.PathLike[str]], *, top: int = DEFAULT_TOP) -> Report:
    """Read the trace files at ``paths`` and summarize their ``fileresp.*`` spans.

    ``top`` is how many of the slowest responses the report keeps. Raises
    :class:`InputError` for the first file that cannot be read.
    ``report.check()`` gives the verdict of ``--check``.
    """
    builder = ReportBuilder(top=top)
    names: list[str] = []
    ignored_lines = 0
    for path in paths:
        path_text = os.fspath(path)
        ignored_lines += read_file(path_text, builder)
        names.append(display_name(path_text))
    return builder.build(tuple(names), ignored_lines=ignored_lines)
