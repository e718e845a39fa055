# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""What the report reads and what it returns.

:class:`SpanRecord` is one ``fileresp.*`` span as the readers decode it, with
only the fields the report needs. :class:`Report` is the result of
:func:`otel_fileresp.report.summarize`; durations in it are integer
nanoseconds (Jaeger's microseconds are multiplied by 1000).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, NamedTuple

from otel_fileresp import _names

#: Phase names, in the order the report lists them, keyed by span name. The
#: whole response is the phase ``response``; the others are the values of the
#: ``fileresp.phase`` metric attribute.
PHASE_RESPONSE: Final = "response"
PHASE_BY_SPAN_NAME: Final[dict[str, str]] = {
    _names.SPAN_RESPONSE: PHASE_RESPONSE,
    **_names.PHASE_OF_SPAN,
}
PHASES: Final[tuple[str, ...]] = tuple(PHASE_BY_SPAN_NAME.values())

#: Framework label for a response without ``fileresp.framework``, and for
#: phase spans whose ``fileresp.response`` parent is not in the input.
UNKNOWN_FRAMEWORK: Final = "(unknown)"
#: ``report --by``: the group of a response without the attribute.
NO_GROUP: Final = "(none)"
#: Between group and framework in a grouped framework key (never in a value).
GROUP_SEPARATOR: Final = "\x1f"


def grouped_framework(group: str | None, framework: str | None) -> str:
    """The framework key of a response in a group (``report --by``)."""
    return f"{group or NO_GROUP}{GROUP_SEPARATOR}{framework or UNKNOWN_FRAMEWORK}"


def split_grouped_framework(key: str) -> tuple[str | None, str]:
    """``(group, framework)`` of a framework key; group None for an ungrouped key."""
    group, separator, framework = key.partition(GROUP_SEPARATOR)
    return (group, framework) if separator else (None, key)


class CheckResult(enum.Enum):
    """The verdict of ``--check``; the value is how ``--format json`` spells a failure."""

    PASSED = "passed"
    #: A ``fileresp.response`` span with status 304 and ``fileresp.opened=true``.
    NOT_MODIFIED_OPENED = "not_modified_opened"
    #: No ``fileresp.response`` span at all: nothing was checked.
    NO_FILE_RESPONSES = "no_file_responses"


class SpanRecord(NamedTuple):
    """One ``fileresp.*`` span. Response attributes are None on phase spans.

    A named tuple: immutable, and made once per span read, which costs a
    sixth of what a frozen dataclass does.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    phase: str
    duration_ns: int
    framework: str | None = None
    status_code: int | None = None
    outcome: str | None = None
    opened: bool | None = None
    #: ``file.name``, or ``file.path`` when only the full path was captured.
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class DurationStats:
    """Count and nearest-rank percentiles of span durations, in nanoseconds."""

    count: int
    p50_ns: int
    p95_ns: int
    p99_ns: int
    max_ns: int


@dataclass(frozen=True, slots=True)
class StatusCounts:
    """``fileresp.response`` spans with one status code, and how many opened the file."""

    responses: int
    opened: int


@dataclass(frozen=True)
class Report:
    """Summary of the ``fileresp.*`` spans of one or more trace files."""

    files: tuple[str, ...]
    #: ``fileresp.*`` spans read (other spans are skipped).
    span_count: int
    #: ``fileresp.response`` spans read.
    response_count: int
    #: framework -> phase -> durations; phases in :data:`PHASES` order.
    durations: dict[str, dict[str, DurationStats]]
    #: framework -> ``http.response.status_code`` (None if absent) -> counts.
    status_counts: dict[str, dict[int | None, StatusCounts]]
    #: The slowest ``fileresp.response`` spans, slowest first.
    slowest: tuple[SpanRecord, ...]
    #: ``fileresp.response`` spans with status 304 and ``fileresp.opened=true``
    #: (at most :data:`otel_fileresp.report.aggregate.MAX_LISTED_VIOLATIONS`).
    not_modified_opened: tuple[SpanRecord, ...]
    #: How many such spans there were in all, listed or not.
    not_modified_opened_count: int
    #: Phase spans whose ``fileresp.response`` parent was not in the input;
    #: they are counted under :data:`UNKNOWN_FRAMEWORK`.
    unresolved_phase_spans: int
    #: Non-blank lines outside any JSON document (log lines mixed with the
    #: console exporter's spans, for example), skipped.
    ignored_lines: int = 0

    def check(self, *, allow_empty: bool = False) -> CheckResult:
        """The verdict of ``--check``: no 304 opened the file, and there were file responses.

        ``allow_empty`` lets an input without any ``fileresp.response`` span pass.
        """
        if self.not_modified_opened_count:
            return CheckResult.NOT_MODIFIED_OPENED
        if self.response_count == 0 and not allow_empty:
            return CheckResult.NO_FILE_RESPONSES
        return CheckResult.PASSED

    def opens_by_status(self) -> dict[str, dict[int | None, int]]:
        """framework -> status code -> responses that opened the file (non-zero only)."""
        return {
            framework: {status: c.opened for status, c in by_status.items() if c.opened}
            for framework, by_status in self.status_counts.items()
        }
