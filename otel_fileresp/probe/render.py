# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Text for people: the probe's tables and the comparison with a baseline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from otel_fileresp.probe.compare import BETTER, CHANGED, WORSE, Comparison
from otel_fileresp.probe.runner import TIMED_PHASES

_SHORT: Final = {
    "stat": "stat",
    "precondition": "pre",
    "open": "open",
    "threadpool.wait": "wait",
    "send": "send",
    "response": "response",
}
_MISSING: Final = "-"


def render_result(result: Mapping[str, Any]) -> str:
    """One table per framework: the facts of each scenario and its median phase durations."""
    out = [
        f"otel-fileresp probe: otel-fileresp {result['package_version']},"
        f" Python {result['python']} ({result['python_implementation']}),"
        f" {result['runs']} run(s) per scenario; durations are medians in ms",
    ]
    for framework in result["frameworks"]:
        out.append("")
        out.append(f"{framework['framework']} {_versions(framework['versions'])}")
        out.append(f"  served by: {framework['served_by']}")
        header = [
            "scenario",
            "status",
            "body",
            "opened",
            "jobs",
            "phases",
            "decided by",
            *(f"{_SHORT[p]} ms" for p in TIMED_PHASES),
        ]
        rows = [header]
        for s in framework["scenarios"]:
            medians = s["median_ms"]
            decided = s["precondition_header"] or _MISSING
            if s["precondition_header"] and s["precondition_result"]:
                decided = f"{s['precondition_header']}: {s['precondition_result']}"
            rows.append(
                [
                    s["name"] + ("" if s["stable"] else " (*)"),
                    str(s["status"]),
                    str(s["body_bytes"])
                    + ("" if s["content_encoding"] == "identity" else f" {s['content_encoding']}"),
                    _yes_no(s["opened"]),
                    _MISSING if s["pool_jobs"] is None else str(s["pool_jobs"]),
                    "+".join(_SHORT[p] for p in s["phases"]) or _MISSING,
                    decided,
                    *(_ms(medians.get(p)) for p in TIMED_PHASES),
                ]
            )
        out.extend("  " + line for line in _table(rows, numeric_from=7))
        if not all(s["stable"] for s in framework["scenarios"]):
            out.append("  (*) the facts differed between runs: the worst run is shown")
        if not all(s["recorded"] for s in framework["scenarios"]):
            out.append(
                "  opened/jobs '-': the package recorded no file response"
                " (the framework answered before serving a file)"
            )
    return "\n".join(out) + "\n"


def render_comparison(
    comparison: Comparison,
    baseline: Mapping[str, Any],
    baseline_name: str,
    *,
    max_slowdown: float | None,
) -> str:
    """The readable diff of ``--against``, ending with the verdict."""
    out = [
        "",
        f"against {baseline_name}: saved {baseline.get('created', '?')} with otel-fileresp"
        f" {baseline.get('package_version', '?')}, Python {baseline.get('python', '?')}",
    ]
    for note in comparison.notes:
        out.append(f"  note: {note}")
    for framework, (old, new) in comparison.versions.items():
        out.append("")
        out.append(f"{framework}: {_version_change(old, new)}")
        findings = [f for f in comparison.findings if f.framework == framework]
        if not findings:
            out.append("  no difference in the facts")
        rows = [[f.kind.upper(), f.scenario, f.message] for f in _ordered(findings)]
        if rows:
            out.extend("  " + line for line in _table(rows, numeric_from=99))
        timings = [
            t for t in comparison.timings if t.framework == framework and t.phase == "response"
        ]
        if timings:
            label = (
                f"judged with --max-slowdown {max_slowdown:g}, every phase"
                if max_slowdown is not None
                else "not judged: pass --max-slowdown FACTOR to judge them"
            )
            out.append(f"  median response time, ms ({label}):")
            table = [["scenario", "baseline", "now", "ratio"]] + [
                [t.scenario, _ms(t.baseline_ms), _ms(t.now_ms), f"x{t.ratio:.2f}"] for t in timings
            ]
            out.extend("    " + line for line in _table(table, numeric_from=1))
    worse, better, changed = (len(comparison.of(kind)) for kind in (WORSE, BETTER, CHANGED))
    verdict = "FAILED: something got worse" if comparison.failed else "passed: nothing got worse"
    out.append("")
    out.append(f"{worse} worse, {better} better, {changed} changed: {verdict}")
    return "\n".join(out) + "\n"


def _ordered(findings: Sequence[Any]) -> list[Any]:
    rank = {WORSE: 0, BETTER: 1, CHANGED: 2}
    return sorted(findings, key=lambda f: rank[f.kind])


def _version_change(old: Mapping[str, str], new: Mapping[str, str]) -> str:
    parts = []
    for name in dict.fromkeys([*new, *old]):
        before, after = old.get(name, "absent"), new.get(name, "absent")
        parts.append(f"{name} {before}" if before == after else f"{name} {before} -> {after}")
    return ", ".join(parts)


def _versions(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def _yes_no(value: object) -> str:
    return _MISSING if value is None else ("yes" if value else "no")


def _ms(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.3f}"


def _table(rows: Sequence[Sequence[str]], *, numeric_from: int) -> list[str]:
    """Aligned columns; columns from ``numeric_from`` on are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i >= numeric_from else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines
