# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Summarize ``fileresp.*`` spans from exported trace files.

Command line::

    otel-fileresp report [--top N] [--check] [--format text|json] FILE...
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
there is any).

Percentiles use the nearest-rank method: for n durations sorted in
ascending order, the p-th percentile is the one at 1-based rank
``ceil(p / 100 * n)``; it is always an observed duration, never an
interpolation (see :mod:`otel_fileresp.report.stats`).

Input formats, detected for each file and, in JSON lines, for each line:
OTLP JSON from the Collector's ``file`` exporter (one ``{"resourceSpans":
[...]}`` per line), Tempo's trace-by-ID API (``{"batches": [...]}`` or
``{"trace": {"resourceSpans": [...]}}``, IDs in hex or base64) and Jaeger JSON
(``{"data": [...]}`` from the query API or the UI's "Download Results").
Files are streamed span by span, so memory does not grow with the file size
(see :mod:`otel_fileresp.report.readers` and
:mod:`otel_fileresp.report.aggregate`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from otel_fileresp.report.aggregate import DEFAULT_TOP, ReportBuilder
from otel_fileresp.report.errors import InputError
from otel_fileresp.report.model import DurationStats, Report, SpanRecord, StatusCounts
from otel_fileresp.report.readers import display_name, read_file

__all__ = [
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
    """
    builder = ReportBuilder(top=top)
    names: list[str] = []
    for path in paths:
        path_text = os.fspath(path)
        read_file(path_text, builder)
        names.append(display_name(path_text))
    return builder.build(tuple(names))
