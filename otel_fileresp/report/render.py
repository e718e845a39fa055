# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Render a :class:`~otel_fileresp.report.model.Report` as text or JSON.

Text is a set of aligned tables for people; durations are in milliseconds
with microsecond precision. JSON is one object for programs, with the same
content and durations in milliseconds (``*_ms`` keys, unrounded)::

    {
      "files": [...], "spans": 412, "responses": 60, "unresolved_phase_spans": 0,
      "ignored_lines": 0, "duration_unit": "ms", "percentile_method": "nearest-rank",
      "frameworks": {
        "aiohttp": {
          "phases": {"response": {"count": 30, "p50_ms": 1.2, "p95_ms": 4.1,
                                  "p99_ms": 5.0, "max_ms": 5.0}, ...},
          "status_codes": {"200": {"responses": 20, "opened": 20}, ...}
        }, ...
      },
      "slowest": [{"trace_id": ..., "span_id": ..., "framework": ...,
                   "status_code": 200, "outcome": "sent", "file_name": ...,
                   "duration_ms": 5.0}, ...],
      "not_modified_opened": {"count": 1, "listed": [...same fields...]},
      "check": null | "passed" | "failed",
      "check_failure": null | "not_modified_opened" | "no_file_responses"
    }

A status code missing from a span is keyed ``"unknown"``. ``check`` is null
without ``--check``; ``check_failure`` says why a check failed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

from otel_fileresp.report.model import CheckResult, DurationStats, Report, SpanRecord

_NS_PER_MS: Final = 1_000_000
_MISSING: Final = "-"


def render_json(report: Report, *, check: CheckResult | None) -> str:
    """The report as one JSON object (with a trailing newline)."""
    return json.dumps(report_as_dict(report, check=check), indent=2) + "\n"


def report_as_dict(report: Report, *, check: CheckResult | None) -> dict[str, object]:
    """The JSON-ready form of the report, with the verdict of ``--check`` (None: not checked)."""
    frameworks: dict[str, object] = {}
    for framework in _frameworks(report):
        frameworks[framework] = {
            "phases": {
                phase: stats_as_dict(stats)
                for phase, stats in report.durations.get(framework, {}).items()
            },
            "status_codes": {
                _status_key(status): {"responses": counts.responses, "opened": counts.opened}
                for status, counts in report.status_counts.get(framework, {}).items()
            },
        }
    verdict = failure = None
    if check is not None:
        verdict = "passed" if check is CheckResult.PASSED else "failed"
        failure = None if check is CheckResult.PASSED else check.value
    return {
        "files": list(report.files),
        "spans": report.span_count,
        "responses": report.response_count,
        "unresolved_phase_spans": report.unresolved_phase_spans,
        "ignored_lines": report.ignored_lines,
        "duration_unit": "ms",
        "percentile_method": "nearest-rank",
        "frameworks": frameworks,
        "slowest": [_span_as_dict(span) for span in report.slowest],
        "not_modified_opened": {
            "count": report.not_modified_opened_count,
            "listed": [_span_as_dict(span) for span in report.not_modified_opened],
        },
        "check": verdict,
        "check_failure": failure,
    }


#: Spans are a sample: head sampling and a full SDK queue leave responses out.
#: Ends the text output of every report (also ``--baseline``) that has responses.
SAMPLE_NOTE: Final = (
    "Traces may be sampled or dropped (head sampling, a full span queue): these are the "
    "responses that were exported, not all; the metric fileresp.opens is the complete count."
)


def render_text(report: Report, *, check: CheckResult | None) -> str:
    """The report as aligned tables (with a trailing newline)."""
    lines = [
        f"otel-fileresp report: {_plural(len(report.files), 'file')}, "
        f"{_plural(report.span_count, 'fileresp span')}, "
        f"{_plural(report.response_count, 'file response')}"
    ]
    if report.ignored_lines:
        lines.append(
            f"Ignored {_plural(report.ignored_lines, 'line')} that"
            f" {'is' if report.ignored_lines == 1 else 'are'} not JSON (log lines, for example)."
        )
    if report.span_count == 0:
        lines += ["", "No file responses found: the input has no fileresp.* spans."]
    else:
        lines += _durations_section(report)
        lines += _status_section(report)
        lines += _slowest_section(report)
        lines += ["", SAMPLE_NOTE]
    if check is not None:
        lines += _check_section(report, check)
    return "\n".join(lines) + "\n"


def _durations_section(report: Report) -> list[str]:
    rows = [
        [framework, phase, str(stats.count), *_ms_cells(stats)]
        for framework, by_phase in report.durations.items()
        for phase, stats in by_phase.items()
    ]
    section = [
        "",
        "Span durations, ms (nearest-rank percentiles)",
        *_table(["framework", "phase", "count", "p50", "p95", "p99", "max"], rows, numeric_from=2),
    ]
    if report.unresolved_phase_spans:
        section.append(
            f"({_plural(report.unresolved_phase_spans, 'phase span')} without their"
            " fileresp.response parent in the input are counted under (unknown).)"
        )
    return section


def _status_section(report: Report) -> list[str]:
    rows = [
        [framework, _status_key(status), str(counts.responses), str(counts.opened)]
        for framework, by_status in report.status_counts.items()
        for status, counts in by_status.items()
    ]
    if not rows:
        return []
    return [
        "",
        "Responses and file opens by status (opened: fileresp.opened=true)",
        *_table(["framework", "status", "responses", "opened"], rows, numeric_from=1),
    ]


def _slowest_section(report: Report) -> list[str]:
    if not report.slowest:
        return []
    rows = [
        [
            format_ms(span.duration_ns),
            span.framework or _MISSING,
            _status_key(span.status_code, missing=_MISSING),
            span.outcome or _MISSING,
            span.file_name or _MISSING,
            span.trace_id,
        ]
        for span in report.slowest
    ]
    headers = ["duration_ms", "framework", "status", "outcome", "file.name", "trace_id"]
    return [
        "",
        f"Slowest {_plural(len(report.slowest), 'file response')}",
        *_table(headers, rows, numeric_columns={0, 2}),
    ]


def _check_section(report: Report, check: CheckResult) -> list[str]:
    if check is CheckResult.NO_FILE_RESPONSES:
        return [
            "",
            "Check FAILED: no file responses (no fileresp.response span), so nothing was checked.",
            "Are the spans exported, and is otel_fileresp instrumenting the app?"
            " Pass --allow-empty if no file response is expected.",
        ]
    if check is CheckResult.PASSED and report.response_count == 0:
        return ["", "Check passed: no file responses, as --allow-empty allows."]
    if check is CheckResult.PASSED:
        return ["", "Check passed: no response with status 304 opened the file."]
    count = report.not_modified_opened_count
    rows = [
        [span.trace_id, span.span_id, span.framework or _MISSING, span.file_name or _MISSING]
        for span in report.not_modified_opened
    ]
    section = [
        "",
        f"Check FAILED: {_plural(count, 'response')} with status 304 opened the file"
        " (fileresp.opened=true):",
        *_table(["trace_id", "span_id", "framework", "file.name"], rows),
    ]
    if count > len(rows):
        section.append(f"... and {count - len(rows)} more not listed.")
    return section


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric_from: int | None = None,
    numeric_columns: set[int] | None = None,
) -> list[str]:
    """Rows under headers, columns two spaces apart, numbers right-aligned."""
    right = set(numeric_columns or ())
    if numeric_from is not None:
        right.update(range(numeric_from, len(headers)))
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _frameworks(report: Report) -> list[str]:
    names = list(report.durations)
    names += [name for name in report.status_counts if name not in report.durations]
    return names


def stats_as_dict(stats: DurationStats) -> dict[str, object]:
    """A phase's count and p50/p95/p99/max in ms, as the JSON output gives them."""
    return {
        "count": stats.count,
        "p50_ms": stats.p50_ns / _NS_PER_MS,
        "p95_ms": stats.p95_ns / _NS_PER_MS,
        "p99_ms": stats.p99_ns / _NS_PER_MS,
        "max_ms": stats.max_ns / _NS_PER_MS,
    }


def _span_as_dict(span: SpanRecord) -> dict[str, object]:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "framework": span.framework,
        "status_code": span.status_code,
        "outcome": span.outcome,
        "file_name": span.file_name,
        "duration_ms": span.duration_ns / _NS_PER_MS,
    }


def _ms_cells(stats: DurationStats) -> list[str]:
    return [format_ms(ns) for ns in (stats.p50_ns, stats.p95_ns, stats.p99_ns, stats.max_ns)]


def format_ms(duration_ns: int) -> str:
    """Nanoseconds as milliseconds, three decimals (the text output's unit)."""
    return f"{duration_ns / _NS_PER_MS:.3f}"


def _status_key(status: int | None, *, missing: str = "unknown") -> str:
    return missing if status is None else str(status)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
