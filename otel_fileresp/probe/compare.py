# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Compare a probe result with a saved baseline: what got worse, what got better.

Each scenario is judged on its facts, framework by framework (a framework in
only one of the two is named and skipped). The rules, in order:

1. **Status.** A status that changed to one RFC 9110 prefers over the old
   one (the scenario's ``expected_status`` lists the acceptable answers, the
   preferred first; any other status ranks last) is an improvement: the
   framework gained the feature the request uses (Starlette 0.39+ answering
   ``Range`` with 206 where 0.38 sent the whole file, 416 where it sent 200).
   The other facts of that scenario are then listed, not judged, since the
   two responses are not the same response. Any other status change is a
   regression.
2. **Body length** (same status) changed: a regression, unless the
   ``Content-Encoding`` changed with it (another pre-compressed sibling
   served), which is listed as a change.
3. **Recorded.** The package recorded a file response before and does not
   now: a regression (the instrumentation lost this path on the new release).
4. **Opened.** An open that disappeared is an improvement. A new open is a
   regression when the status is 304 or 412 (a response that proves the
   client's copy current, or that fails, never needs the file), when it
   comes with more pool jobs, or always with ``--strict-opens``. Otherwise
   (a HEAD, a 416 or a 0-byte file that now opens the file inside the pool
   jobs it already had, as aiohttp 3.11.10+ does in its one
   ``_make_response`` job) it is listed as a change: the new release moved
   the open, it did not add work a thread pool can queue behind.
5. **Pool jobs.** More: a regression. Fewer: an improvement.
6. **Phases.** A phase span that is gone is a regression (the package no
   longer sees that phase on the new release), unless the change explains it:
   ``open`` gone with the open, ``threadpool.wait`` gone with the last job,
   ``send`` gone with the body. A new phase span is listed.
7. **Precondition header, outcome, stability across runs**: listed when
   they change.
8. **Timings** (medians) are shown side by side for the whole response, and
   judged only with ``--max-slowdown FACTOR``: a phase present on both sides
   whose median grew by more than FACTOR (``2`` = twice as slow) is a
   regression. Without it timings never fail a comparison; they are noisy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from otel_fileresp.probe.runner import SCHEMA, SCHEMA_VERSION, TIMED_PHASES

WORSE: Final = "worse"
BETTER: Final = "better"
CHANGED: Final = "changed"
#: Statuses whose response never needs the file: a new open there always fails.
NO_FILE_STATUSES: Final = frozenset({304, 412})


class BaselineError(Exception):
    """A baseline that cannot be read: ``path`` and a one-line ``reason``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Finding:
    """One difference between the baseline and now."""

    kind: str
    framework: str
    scenario: str
    message: str


@dataclass(frozen=True)
class Timing:
    """The median of one phase of one scenario, before and now (milliseconds)."""

    framework: str
    scenario: str
    phase: str
    baseline_ms: float
    now_ms: float

    @property
    def ratio(self) -> float:
        return self.now_ms / self.baseline_ms if self.baseline_ms > 0 else float("inf")


@dataclass
class Comparison:
    """Everything ``--against`` found."""

    findings: list[Finding] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    #: framework -> (baseline versions, versions now)
    versions: dict[str, tuple[dict[str, str], dict[str, str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def failed(self) -> bool:
        return bool(self.of(WORSE))


def load_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline saved with ``--save``; raises :class:`BaselineError` if it is not one."""
    name = str(path)
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(name, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(name, str(exc)) from None
    except json.JSONDecodeError as exc:
        raise BaselineError(name, f"not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise BaselineError(name, f'not a probe baseline (no "schema": "{SCHEMA}")')
    version = document.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise BaselineError(
            name, f"schema_version {version!r} is not one this release reads (1..{SCHEMA_VERSION})"
        )
    if not isinstance(document.get("frameworks"), list):
        raise BaselineError(name, "no frameworks list")
    return document


def compare(
    baseline: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    max_slowdown: float | None = None,
    strict_opens: bool = False,
) -> Comparison:
    """Judge ``now`` (a :func:`~otel_fileresp.probe.runner.run_probe` result) by ``baseline``."""
    result = Comparison()
    old_frameworks = {f["framework"]: f for f in baseline["frameworks"]}
    new_frameworks = {f["framework"]: f for f in now["frameworks"]}
    for name in old_frameworks.keys() - new_frameworks.keys():
        result.notes.append(f"{name}: in the baseline, not measured now; not compared")
    for name in new_frameworks.keys() - old_frameworks.keys():
        result.notes.append(f"{name}: measured now, not in the baseline; not compared")
    for name, new in new_frameworks.items():
        old = old_frameworks.get(name)
        if old is None:
            continue
        result.versions[name] = (dict(old.get("versions", {})), dict(new.get("versions", {})))
        old_scenarios = {s["name"]: s for s in old["scenarios"]}
        for scenario in new["scenarios"]:
            before = old_scenarios.pop(scenario["name"], None)
            if before is None:
                result.notes.append(f"{name}: scenario {scenario['name']} is not in the baseline")
                continue
            _compare_scenario(result, name, before, scenario, strict_opens)
            _compare_timings(result, name, before, scenario, max_slowdown)
        for missing in old_scenarios:
            result.notes.append(f"{name}: scenario {missing} of the baseline was not run now")
    return result


def _compare_scenario(
    result: Comparison,
    framework: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    strict_opens: bool,
) -> None:
    name = new["name"]

    def add(kind: str, message: str) -> None:
        result.findings.append(Finding(kind, framework, name, message))

    expected = list(new.get("expected_status") or old.get("expected_status") or ())
    if old["status"] != new["status"]:
        if _rank(new["status"], expected) < _rank(old["status"], expected):
            add(
                BETTER,
                f"status {old['status']} -> {new['status']}, as RFC 9110 asks"
                f" ({_others_listed(old, new)})",
            )
        else:
            add(WORSE, f"status {old['status']} -> {new['status']} ({_others_listed(old, new)})")
        return
    status = new["status"]
    if old["body_bytes"] != new["body_bytes"]:
        if old.get("content_encoding") != new.get("content_encoding"):
            add(
                CHANGED,
                f"serves Content-Encoding {new.get('content_encoding')} now"
                f" (was {old.get('content_encoding')}): body {old['body_bytes']}"
                f" -> {new['body_bytes']} bytes",
            )
        else:
            add(WORSE, f"body {old['body_bytes']} -> {new['body_bytes']} bytes (status {status})")
    if old["recorded"] and not new["recorded"]:
        add(WORSE, "no file response recorded any more: the instrumentation lost this path")
        return
    if not old["recorded"]:
        if new["recorded"]:
            add(CHANGED, "a file response is recorded now (none was)")
        return
    old_jobs, new_jobs = old["pool_jobs"] or 0, new["pool_jobs"] or 0
    if not old["opened"] and new["opened"]:
        if status in NO_FILE_STATUSES:
            add(WORSE, f"opens the file now, on a {status} that never needs it")
        elif strict_opens or new_jobs > old_jobs:
            add(WORSE, f"opens the file now (status {status}, {new['method']})")
        else:
            add(
                CHANGED,
                f"opens the file now (status {status}, {new['method']}), inside the"
                f" {new_jobs} pool job(s) it already had; --strict-opens judges this worse",
            )
    elif old["opened"] and not new["opened"]:
        add(BETTER, "no longer opens the file")
    if new_jobs > old_jobs:
        add(WORSE, f"pool jobs {old_jobs} -> {new_jobs}")
    elif new_jobs < old_jobs:
        add(BETTER, f"pool jobs {old_jobs} -> {new_jobs}")
    old_phases, new_phases = list(old["phases"]), list(new["phases"])
    for phase in old_phases:
        if phase in new_phases or _explained(phase, old, new):
            continue
        add(WORSE, f"phase span gone: {phase} (the package no longer sees it)")
    opened_now = not old["opened"] and new["opened"]
    added = [
        phase
        for phase in new_phases
        if phase not in old_phases and not (phase == "open" and opened_now)
    ]
    if added:
        add(CHANGED, f"new phase span(s): {', '.join(added)}")
    for key, label in (
        ("precondition_header", "precondition decided by"),
        ("precondition_result", "precondition result"),
        ("outcome", "outcome"),
    ):
        if old.get(key) != new.get(key):
            add(CHANGED, f"{label} {old.get(key) or '-'} -> {new.get(key) or '-'}")
    if old.get("stable", True) and not new.get("stable", True):
        add(CHANGED, "its facts now differ between runs (the worst run is compared)")


def _rank(status: int, expected: list[int]) -> int:
    """How much RFC 9110 prefers ``status`` for the scenario (0 best)."""
    return expected.index(status) if status in expected else len(expected)


def _explained(phase: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a phase span that is gone went with the work it measured."""
    if phase == "open":
        return bool(old["opened"]) and not new["opened"]
    if phase == "threadpool.wait":
        return (new["pool_jobs"] or 0) == 0
    if phase == "send":
        return bool(new["body_bytes"] == 0)
    return False


def _others_listed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The other facts of a scenario whose status changed: listed, not judged."""
    parts = [f"body {old['body_bytes']} -> {new['body_bytes']}"]
    if old["opened"] != new["opened"]:
        parts.append(f"opened {_yes_no(old['opened'])} -> {_yes_no(new['opened'])}")
    if old["pool_jobs"] != new["pool_jobs"]:
        parts.append(f"pool jobs {old['pool_jobs']} -> {new['pool_jobs']}")
    return "; ".join(parts) + "; not judged: a different response"


def _yes_no(value: object) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _compare_timings(
    result: Comparison,
    framework: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    max_slowdown: float | None,
) -> None:
    old_medians, new_medians = old.get("median_ms", {}), new.get("median_ms", {})
    for phase in TIMED_PHASES:
        if phase not in old_medians or phase not in new_medians:
            continue
        timing = Timing(framework, new["name"], phase, old_medians[phase], new_medians[phase])
        result.timings.append(timing)
        # A baseline median of 0 (below the resolution) has no ratio to judge.
        if max_slowdown is not None and timing.baseline_ms > 0 and timing.ratio > max_slowdown:
            result.findings.append(
                Finding(
                    WORSE,
                    framework,
                    new["name"],
                    f"median {phase} {timing.baseline_ms:.3f} -> {timing.now_ms:.3f} ms"
                    f" (x{timing.ratio:.2f} > --max-slowdown {max_slowdown:g})",
                )
            )
