# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Compare two sets of traces: ``report NEW --baseline OLD`` and ``report FILE --by ATTRIBUTE``.

Two reports are put side by side, framework by framework:

* per phase (``response``, ``stat``, ``precondition``, ``open``,
  ``threadpool.wait``, ``send``): count, p50, p95, p99 and max of the span
  durations (nearest rank, as in the report) on both sides, and how p99
  changed;
* per status code: responses and file opens on both sides.

What fails the comparison (exit status 4):

* **a status that never opened the file now opens it**: the new side has
  responses with that status that opened the file, and the baseline has
  responses with that status and none opened it. For 304 and 412 an open
  fails even when the baseline has no such response, since those never need
  the file. A status the baseline does not have at all (other than 304 and
  412) is shown and not judged: there is nothing to compare it with;
* **a phase's p99 grew by more than** ``--max-p99-growth``, given as a factor
  (``1.5``: the new p99 may be at most 1.5 times the baseline's) or as a
  percentage of growth (``50%``: the same), with at least ``--min-samples``
  durations of that phase on **both** sides (default 100: below that a
  nearest-rank p99 is simply one of the slowest few). Without
  ``--max-p99-growth`` durations are shown and never judged.

``--by ATTRIBUTE`` reads the files once and splits the responses by an
attribute of the ``fileresp.response`` span or, when the span does not have
it, of its resource (``service.version``, ``deployment.environment``,
``k8s.pod.name``...; Jaeger's process tags, and its ``serviceName`` as
``service.name``). Phase spans go with their response. Responses without the
attribute form the group ``(none)``, which is never compared. The baseline
group is ``--baseline-group VALUE``; without it the input must hold exactly
two groups, and the one with more responses is the baseline (a canary takes
the smaller share of the traffic).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from otel_fileresp.report.aggregate import DEFAULT_TOP, ReportBuilder
from otel_fileresp.report.model import (
    NO_GROUP,
    PHASES,
    DurationStats,
    Report,
    StatusCounts,
    split_grouped_framework,
)
from otel_fileresp.report.readers import display_name, read_file
from otel_fileresp.report.render import SAMPLE_NOTE, format_ms, report_as_dict, stats_as_dict

#: Statuses whose response never needs the file.
NO_FILE_STATUSES: Final = frozenset({304, 412})
DEFAULT_MIN_SAMPLES: Final = 100
T = TypeVar("T")


class GroupError(ValueError):
    """``--by`` cannot pick the two groups to compare (the message says why)."""


@dataclass(frozen=True)
class PhaseChange:
    """One phase of one framework, on both sides."""

    framework: str
    phase: str
    baseline: DurationStats | None
    now: DurationStats | None
    #: now p99 / baseline p99 (None when a side is missing or the baseline p99 is 0).
    p99_growth: float | None
    #: Whether ``--max-p99-growth`` judged it (enough samples on both sides).
    judged: bool
    worse: bool


@dataclass(frozen=True)
class OpensChange:
    """Responses and opens of one status code of one framework, on both sides."""

    framework: str
    status: int | None
    baseline: StatusCounts | None
    now: StatusCounts | None
    worse: bool
    #: Why it is not judged, when it is not.
    note: str | None = None


@dataclass
class Comparison:
    """Two reports side by side, and what got worse."""

    baseline_label: str
    now_label: str
    baseline: Report
    now: Report
    phases: list[PhaseChange] = field(default_factory=list)
    opens: list[OpensChange] = field(default_factory=list)
    #: Frameworks on one side only.
    notes: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        """One line per regression."""
        found = [
            f"{o.framework}: status {o.status} opened the file {o.now.opened} time(s); {_never(o)}"
            for o in self.opens
            if o.worse and o.now is not None
        ]
        found += [
            f"{p.framework}: {p.phase} p99 {format_ms(p.baseline.p99_ns)}"
            f" -> {format_ms(p.now.p99_ns)} ms"
            f" (x{p.p99_growth:.2f})"
            for p in self.phases
            if p.worse and p.baseline and p.now and p.p99_growth is not None
        ]
        return found

    @property
    def failed(self) -> bool:
        return bool(self.reasons)


def _never(change: OpensChange) -> str:
    if change.baseline is None or change.baseline.responses == 0:
        return "a response that never needs the file"
    return f"the baseline's {change.baseline.responses} never did"


def parse_growth(text: str) -> float:
    """``--max-p99-growth``: ``1.5`` (a factor) or ``50%`` (growth in percent) -> 1.5."""
    value = text.strip()
    try:
        factor = 1.0 + float(value[:-1]) / 100.0 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"not a factor (1.5) or a percentage (50%): {text!r}") from None
    if not factor >= 1.0:
        raise ValueError(f"a p99 growth factor is at least 1 (0%): {text!r}")
    return factor


def summarize_groups(
    paths: Iterable[str | os.PathLike[str]], attribute: str, *, top: int = DEFAULT_TOP
) -> dict[str, Report]:
    """Read ``paths`` and split their file responses by ``attribute``: group -> report."""
    builder = ReportBuilder(top=top)
    names: list[str] = []
    ignored = 0
    for path in paths:
        text = os.fspath(path)
        ignored += read_file(text, builder, group_by=attribute)
        names.append(display_name(text))
    return split_by_group(builder.build(tuple(names), ignored_lines=ignored))


def split_by_group(report: Report) -> dict[str, Report]:
    """The per-group reports of a report built with ``group_by``, groups sorted."""
    durations: dict[str, dict[str, dict[str, DurationStats]]] = {}
    statuses: dict[str, dict[str, dict[int | None, StatusCounts]]] = {}
    for key, phases in report.durations.items():
        group, framework = split_grouped_framework(key)
        if group is not None:
            durations.setdefault(group, {})[framework] = phases
    for key, counts in report.status_counts.items():
        group, framework = split_grouped_framework(key)
        if group is not None:
            statuses.setdefault(group, {})[framework] = counts
    groups: dict[str, Report] = {}
    for group in sorted(durations.keys() | statuses.keys()):
        by_status = statuses.get(group, {})
        by_phase = durations.get(group, {})

        def in_group(framework: str | None, group: str = group) -> bool:
            return split_grouped_framework(framework or "")[0] == group

        slowest = tuple(
            span._replace(framework=split_grouped_framework(span.framework or "")[1])
            for span in report.slowest
            if in_group(span.framework)
        )
        violations = tuple(
            span._replace(framework=split_grouped_framework(span.framework or "")[1])
            for span in report.not_modified_opened
            if in_group(span.framework)
        )
        responses = sum(c.responses for counts in by_status.values() for c in counts.values())
        groups[group] = Report(
            files=report.files,
            span_count=sum(s.count for phases in by_phase.values() for s in phases.values()),
            response_count=responses,
            durations=by_phase,
            status_counts=by_status,
            slowest=slowest,
            not_modified_opened=violations,
            not_modified_opened_count=sum(
                counts[304].opened for counts in by_status.values() if 304 in counts
            ),
            unresolved_phase_spans=0,
            ignored_lines=report.ignored_lines,
        )
    return groups


def pick_groups(groups: Mapping[str, Report], baseline_group: str | None) -> tuple[str, list[str]]:
    """The baseline group and the groups compared with it; raises :class:`GroupError`."""
    named = {g: r for g, r in groups.items() if g != NO_GROUP}
    listing = ", ".join(f"{g!r} ({r.response_count} responses)" for g, r in groups.items())
    if baseline_group is not None:
        if baseline_group not in named:
            raise GroupError(f"no group {baseline_group!r}; found: {listing or 'none'}")
        others = [g for g in named if g != baseline_group]
        if not others:
            raise GroupError(f"nothing to compare with {baseline_group!r}; found: {listing}")
        return baseline_group, others
    if len(named) != 2:
        raise GroupError(
            f"found {len(named)} groups ({listing or 'none'}): --by compares exactly two,"
            " or name the baseline with --baseline-group"
        )
    first, second = sorted(named, key=lambda g: named[g].response_count, reverse=True)
    if named[first].response_count == named[second].response_count:
        raise GroupError(
            f"groups {first!r} and {second!r} have as many responses: name the baseline"
            " with --baseline-group"
        )
    return first, [second]


def compare_reports(
    baseline: Report,
    now: Report,
    *,
    baseline_label: str,
    now_label: str,
    max_p99_growth: float | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> Comparison:
    """``now`` judged against ``baseline`` (see the module's rules)."""
    result = Comparison(baseline_label, now_label, baseline, now)
    old_frameworks, new_frameworks = set(baseline.status_counts), set(now.status_counts)
    old_frameworks |= set(baseline.durations)
    new_frameworks |= set(now.durations)
    for framework in sorted(old_frameworks - new_frameworks):
        result.notes.append(f"{framework}: only in the baseline")
    for framework in sorted(new_frameworks - old_frameworks):
        result.notes.append(f"{framework}: not in the baseline; its opens are still judged")
    for framework in sorted(old_frameworks | new_frameworks):
        old_phases = baseline.durations.get(framework, {})
        new_phases = now.durations.get(framework, {})
        for phase in PHASES:
            before, after = old_phases.get(phase), new_phases.get(phase)
            if before is None and after is None:
                continue
            growth = (
                after.p99_ns / before.p99_ns
                if before is not None and after is not None and before.p99_ns > 0
                else None
            )
            judged = (
                max_p99_growth is not None
                and before is not None
                and after is not None
                and min(before.count, after.count) >= min_samples
            )
            worse = judged and growth is not None and growth > (max_p99_growth or 0)
            result.phases.append(
                PhaseChange(framework, phase, before, after, growth, judged, worse)
            )
        old_counts = baseline.status_counts.get(framework, {})
        new_counts = now.status_counts.get(framework, {})
        for status in sorted(old_counts.keys() | new_counts.keys(), key=lambda s: (s is None, s)):
            before_counts, after_counts = old_counts.get(status), new_counts.get(status)
            opens_now = after_counts is not None and after_counts.opened > 0
            note = None
            if not opens_now:
                worse = False
            elif status in NO_FILE_STATUSES:
                worse = before_counts is None or before_counts.opened == 0
            elif before_counts is None or before_counts.responses == 0:
                worse, note = False, "not in the baseline: not judged"
            else:
                worse = before_counts.opened == 0
            result.opens.append(
                OpensChange(framework, status, before_counts, after_counts, worse, note)
            )
    return result


# -- rendering -----------------------------------------------------------------


def render_text(comparisons: Sequence[Comparison], *, max_p99_growth: float | None) -> str:
    """The comparisons for people, each with its verdict, then the overall one."""
    out: list[str] = []
    for comparison in comparisons:
        out.append(
            f"baseline: {comparison.baseline_label} ({comparison.baseline.response_count}"
            f" responses)  vs  now: {comparison.now_label} ({comparison.now.response_count}"
            " responses)"
        )
        judged = (
            f"p99 judged: at most x{max_p99_growth:g} with enough samples on both sides"
            if max_p99_growth is not None
            else "p99 not judged (--max-p99-growth)"
        )
        out.append(f"durations in ms, baseline -> now; {judged}")
        for note in comparison.notes:
            out.append(f"  note: {note}")
        frameworks = dict.fromkeys(
            [p.framework for p in comparison.phases] + [o.framework for o in comparison.opens]
        )
        for framework in frameworks:
            out.append("")
            out.append(framework)
            rows = [["phase", "count", "p50", "p95", "p99", "max", "p99 change", "verdict"]]
            for p in comparison.phases:
                if p.framework != framework:
                    continue
                rows.append(
                    [
                        p.phase,
                        _pair(p.baseline, p.now, lambda s: str(s.count)),
                        _pair(p.baseline, p.now, lambda s: format_ms(s.p50_ns)),
                        _pair(p.baseline, p.now, lambda s: format_ms(s.p95_ns)),
                        _pair(p.baseline, p.now, lambda s: format_ms(s.p99_ns)),
                        _pair(p.baseline, p.now, lambda s: format_ms(s.max_ns)),
                        "-" if p.p99_growth is None else f"x{p.p99_growth:.2f}",
                        _phase_verdict(p, max_p99_growth),
                    ]
                )
            out.extend("  " + line for line in _table(rows))
            rows = [["status", "responses", "opened", "verdict"]]
            for o in comparison.opens:
                if o.framework != framework:
                    continue
                rows.append(
                    [
                        "unknown" if o.status is None else str(o.status),
                        _pair(o.baseline, o.now, lambda c: str(c.responses)),
                        _pair(o.baseline, o.now, lambda c: str(c.opened)),
                        "WORSE: opens now" if o.worse else (o.note or "ok"),
                    ]
                )
            out.extend("  " + line for line in _table(rows))
        out.append("")
        if comparison.failed:
            out.append(f"WORSE than the baseline ({len(comparison.reasons)}):")
            out.extend(f"  {reason}" for reason in comparison.reasons)
        else:
            out.append("nothing worse than the baseline")
        out.append("")
    if any(c.baseline.response_count or c.now.response_count for c in comparisons):
        out += [SAMPLE_NOTE, ""]
    return "\n".join(out)


def render_json(comparisons: Sequence[Comparison], *, by: str | None) -> str:
    """The comparisons as one JSON object (durations in ms)."""
    return (
        json.dumps(
            {
                "by": by,
                "failed": any(c.failed for c in comparisons),
                "comparisons": [_comparison_as_dict(c) for c in comparisons],
            },
            indent=2,
        )
        + "\n"
    )


def _comparison_as_dict(comparison: Comparison) -> dict[str, object]:
    return {
        "baseline": comparison.baseline_label,
        "now": comparison.now_label,
        "failed": comparison.failed,
        "reasons": comparison.reasons,
        "notes": comparison.notes,
        "phases": [
            {
                "framework": p.framework,
                "phase": p.phase,
                "baseline": _stats(p.baseline),
                "now": _stats(p.now),
                "p99_growth": p.p99_growth,
                "judged": p.judged,
                "worse": p.worse,
            }
            for p in comparison.phases
        ],
        "opens": [
            {
                "framework": o.framework,
                "status_code": o.status,
                "baseline": None
                if o.baseline is None
                else {"responses": o.baseline.responses, "opened": o.baseline.opened},
                "now": None
                if o.now is None
                else {"responses": o.now.responses, "opened": o.now.opened},
                "worse": o.worse,
                "note": o.note,
            }
            for o in comparison.opens
        ],
        "baseline_report": report_as_dict(comparison.baseline, check=None),
        "now_report": report_as_dict(comparison.now, check=None),
    }


def _stats(stats: DurationStats | None) -> dict[str, object] | None:
    return None if stats is None else stats_as_dict(stats)


def _phase_verdict(change: PhaseChange, max_p99_growth: float | None) -> str:
    if change.worse:
        return "WORSE: p99 grew"
    if max_p99_growth is None or change.baseline is None or change.now is None:
        return "-"
    return "ok" if change.judged else "too few samples"


def _pair(before: T | None, after: T | None, show: Callable[[T], str]) -> str:
    def one(value: T | None) -> str:
        return "-" if value is None else show(value)

    return f"{one(before)} -> {one(after)}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
