# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Aggregate ``fileresp.*`` spans into a :class:`~otel_fileresp.report.model.Report`.

What is kept per span is small: one 8-byte duration in an array per
(framework, phase), a counter per (framework, status code), and a heap of
the N slowest responses.

A phase span finds its framework through its parent ``fileresp.response``
span (same trace, ``parentSpanId``). Exporters write children before their
parent (a child ends first), so a phase span whose parent has not been read
yet waits in a per-trace pending map until the parent comes. Parents are
remembered for the whole unit they are read in (one resource group or
Jaeger trace) and, after it, among at least the last
:data:`RECENT_RESPONSES` responses (at most twice as many). A trace split
across many lines or files is therefore resolved as its parts arrive, at
the latest at the end of the input. A Jaeger trace arrives whole, so its
phase spans still waiting at its end give up at once, which bounds the
pending map by one trace. Phase spans that never find their parent are
counted under the framework ``(unknown)`` and reported as unresolved.

Percentiles use the nearest-rank method. For ``n`` durations sorted in
ascending order, the p-th percentile is the one at (1-based) rank
``ceil(p / 100 * n)``: always an observed duration, never an interpolation.
With 20 durations, p95 is the 19th smallest and p99 the 20th (the maximum);
with a single duration every percentile is that duration. The rank is
computed in integer arithmetic, so no rounding error can move it.
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from collections import defaultdict
from collections.abc import Sequence
from typing import Final

from otel_fileresp.report.model import (
    PHASE_RESPONSE,
    PHASES,
    UNKNOWN_FRAMEWORK,
    DurationStats,
    Report,
    SpanRecord,
    StatusCounts,
)

NOT_MODIFIED: Final = 304
#: Responses remembered as parents after the unit they were read in (at least).
RECENT_RESPONSES: Final = 5_000
#: 304 responses that opened the file listed in a report (all are counted).
MAX_LISTED_VIOLATIONS: Final = 1000
DEFAULT_TOP: Final = 10
PERCENTILES: Final = (50, 95, 99)


class ReportBuilder:
    """Takes the ``fileresp.*`` spans the readers decode, and builds the Report."""

    def __init__(self, top: int = DEFAULT_TOP) -> None:
        if top < 0:
            raise ValueError("top must not be negative")
        self._top = top
        self._span_count = 0
        self._response_count = 0
        self._durations: defaultdict[tuple[str, str], array[int]] = defaultdict(lambda: array("q"))
        # (framework, status) -> [responses, opened]
        self._status_counts: defaultdict[tuple[str, int | None], list[int]] = defaultdict(
            lambda: [0, 0]
        )
        # Min-heap of (duration, -sequence, span): the root is the fastest kept.
        self._slowest: list[tuple[int, int, SpanRecord]] = []
        self._sequence = itertools.count()
        self._violations: list[SpanRecord] = []
        self._violation_count = 0
        # trace+span id of responses -> framework: the generation being
        # filled, and the one before it (dropped whole, which is O(1)).
        self._responses: dict[str, str] = {}
        self._older_responses: dict[str, str] = {}
        # trace id -> parent span id -> (phase, duration) of the phase spans
        # waiting for that parent, and the traces that got some in this unit.
        self._pending: dict[str, dict[str, list[tuple[str, int]]]] = {}
        self._pending_in_unit: set[str] = set()
        self._unresolved = 0

    def add(self, span: SpanRecord) -> None:
        """Count one span."""
        self._span_count += 1
        if span.phase == PHASE_RESPONSE:
            self._add_response(span)
            return
        if span.parent_span_id is None:
            self._count_unresolved([(span.phase, span.duration_ns)])
            return
        parent_key = span.trace_id + span.parent_span_id
        framework = self._responses.get(parent_key) or self._older_responses.get(parent_key)
        if framework is not None:
            self._durations[framework, span.phase].append(span.duration_ns)
            return
        waiting = self._pending.setdefault(span.trace_id, {})
        waiting.setdefault(span.parent_span_id, []).append((span.phase, span.duration_ns))
        self._pending_in_unit.add(span.trace_id)

    def end_unit(self, *, complete_traces: bool = False) -> None:
        """A unit ends: forget old responses, keeping at least :data:`RECENT_RESPONSES`.

        ``complete_traces`` says the unit held whole traces (a Jaeger trace):
        phase spans of those traces still waiting for a parent are unresolved.
        """
        if complete_traces:
            for trace_id in self._pending_in_unit:
                for waiting in self._pending.pop(trace_id, {}).values():
                    self._count_unresolved(waiting)
        self._pending_in_unit.clear()
        if len(self._responses) >= RECENT_RESPONSES:
            self._older_responses = self._responses
            self._responses = {}

    def build(self, files: tuple[str, ...], *, ignored_lines: int = 0) -> Report:
        """The report of every span added so far; phase spans still waiting are unresolved.

        ``ignored_lines`` is how many lines of the files were not JSON.
        """
        unresolved: defaultdict[str, array[int]] = defaultdict(lambda: array("q"))
        for by_parent in self._pending.values():
            for waiting in by_parent.values():
                for phase, duration in waiting:
                    unresolved[phase].append(duration)
        durations = dict(self._durations)
        for phase, extra in unresolved.items():
            key = (UNKNOWN_FRAMEWORK, phase)
            # A new array, so that building twice does not count twice.
            durations[key] = durations.get(key, array("q")) + extra
        return Report(
            files=files,
            span_count=self._span_count,
            response_count=self._response_count,
            durations=_duration_table(durations),
            status_counts=self._status_table(),
            slowest=tuple(span for _, _, span in sorted(self._slowest, reverse=True)),
            not_modified_opened=tuple(self._violations),
            not_modified_opened_count=self._violation_count,
            unresolved_phase_spans=self._unresolved + sum(map(len, unresolved.values())),
            ignored_lines=ignored_lines,
        )

    def _add_response(self, span: SpanRecord) -> None:
        self._response_count += 1
        framework = span.framework or UNKNOWN_FRAMEWORK
        self._durations[framework, PHASE_RESPONSE].append(span.duration_ns)
        counts = self._status_counts[framework, span.status_code]
        counts[0] += 1
        if span.opened:
            counts[1] += 1
            if span.status_code == NOT_MODIFIED:
                self._violation_count += 1
                if len(self._violations) < MAX_LISTED_VIOLATIONS:
                    self._violations.append(span)
        self._keep_if_slow(span)
        self._responses[span.trace_id + span.span_id] = framework
        by_parent = self._pending.get(span.trace_id)
        if by_parent is not None:
            for phase, duration in by_parent.pop(span.span_id, ()):
                self._durations[framework, phase].append(duration)
            if not by_parent:
                del self._pending[span.trace_id]

    def _count_unresolved(self, waiting: list[tuple[str, int]]) -> None:
        self._unresolved += len(waiting)
        for phase, duration in waiting:
            self._durations[UNKNOWN_FRAMEWORK, phase].append(duration)

    def _keep_if_slow(self, span: SpanRecord) -> None:
        if self._top == 0:
            return
        # Among equal durations the span read first ranks slower.
        entry = (span.duration_ns, -next(self._sequence), span)
        if len(self._slowest) < self._top:
            heapq.heappush(self._slowest, entry)
        elif entry[:2] > self._slowest[0][:2]:
            heapq.heapreplace(self._slowest, entry)

    def _status_table(self) -> dict[str, dict[int | None, StatusCounts]]:
        table: dict[str, dict[int | None, StatusCounts]] = {}
        for framework, status in sorted(self._status_counts, key=_framework_status_order):
            responses, opened = self._status_counts[framework, status]
            table.setdefault(framework, {})[status] = StatusCounts(responses, opened)
        return table


def _duration_table(
    durations: dict[tuple[str, str], array[int]],
) -> dict[str, dict[str, DurationStats]]:
    table: dict[str, dict[str, DurationStats]] = {}
    for framework in sorted({f for f, _ in durations}, key=_framework_order):
        table[framework] = {
            phase: duration_stats(durations[framework, phase])
            for phase in PHASES
            if (framework, phase) in durations
        }
    return table


def _framework_order(framework: str) -> tuple[bool, str]:
    return framework == UNKNOWN_FRAMEWORK, framework


def _framework_status_order(key: tuple[str, int | None]) -> tuple[bool, str, bool, int]:
    framework, status = key
    return framework == UNKNOWN_FRAMEWORK, framework, status is None, status or 0


def nearest_rank(sorted_values: Sequence[int], percentile: int) -> int:
    """The ``percentile``-th percentile (0 < percentile <= 100) of ascending values."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile} is not in (0, 100]")
    rank = -(-percentile * len(sorted_values) // 100)  # ceil(p * n / 100)
    return sorted_values[rank - 1]


def duration_stats(durations_ns: Sequence[int]) -> DurationStats:
    """Count, p50, p95, p99 and max of durations (in any order)."""
    ordered = sorted(durations_ns)
    p50, p95, p99 = (nearest_rank(ordered, p) for p in PERCENTILES)
    return DurationStats(count=len(ordered), p50_ns=p50, p95_ns=p95, p99_ns=p99, max_ns=ordered[-1])
