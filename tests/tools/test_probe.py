"""``otel-fileresp probe``: its facts against what the installed frameworks do,
and ``--against`` on simulated regressions and on real upgrades.

Every matrix session runs this file with its own framework releases. The
probe runs in a subprocess (as a user runs it); the simulated regressions
(tests/data/probe_regressions.py) patch the frameworks in that subprocess
before the probe starts. tests/data/probe-baseline-mid-a.json was saved by
the probe with the mid-a releases (Starlette 0.38.6, aiohttp 3.11.9):

    otel-fileresp probe --runs 5 --save tests/data/probe-baseline-mid-a.json

and is compared in the sessions that have the "after" release of a real
upgrade: aiohttp 3.11.10 (mid-b) and Starlette 1.10.0 (latest).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from otel_fileresp.probe.compare import BETTER, CHANGED, WORSE, compare
from otel_fileresp.probe.scenarios import SCENARIOS, make_files, scenarios_for

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data"
BASELINE_MID_A = DATA / "probe-baseline-mid-a.json"
PROBE_TIMEOUT = 600


def _version(distribution: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", metadata.version(distribution))[:3])


STARLETTE = _version("starlette")
AIOHTTP = _version("aiohttp")


def probe(*args: str, regression: str | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from otel_fileresp.report.cli import main; sys.exit(main(sys.argv[1:]))"
    if regression is not None:
        code = (
            f"import sys; sys.path.insert(0, {str(DATA)!r}); import probe_regressions;"
            f" probe_regressions.apply({regression!r}); {code}"
        )
    return subprocess.run(
        [sys.executable, "-c", code, "probe", *args],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=False,
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """One probe of every installed framework, saved: (path, result, printed table)."""
    path = tmp_path_factory.mktemp("probe") / "baseline.json"
    result = probe("--runs", "2", "--save", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    return path, json.loads(path.read_text()), result.stdout


def facts(result: dict[str, Any], framework: str) -> dict[str, dict[str, Any]]:
    found = next(f for f in result["frameworks"] if f["framework"] == framework)
    return {s["name"]: s for s in found["scenarios"]}


def section(output: str, framework: str) -> str:
    """The part of a comparison about one framework."""
    return output.split(f"\n{framework}: ", 1)[1].split("\n\n", 1)[0]


def findings(output: str, kind: str) -> list[str]:
    """The lines of the comparison of one kind (``WORSE``, ``BETTER``, ``CHANGED``)."""
    return [line.strip() for line in output.splitlines() if line.strip().startswith(kind + " ")]


# -- what the probe measures ---------------------------------------------------


def test_the_result_names_what_was_measured(saved: tuple[Path, dict[str, Any], str]) -> None:
    _, result, printed = saved
    assert result["schema"] == "otel-fileresp-probe"
    assert result["schema_version"] == 1
    assert result["package_version"] == metadata.version("otel-fileresp")
    assert result["python"] == ".".join(map(str, sys.version_info[:3]))
    measured = {f["framework"]: f["versions"] for f in result["frameworks"]}
    assert measured["starlette"]["starlette"] == metadata.version("starlette")
    assert measured["aiohttp"]["aiohttp"] == metadata.version("aiohttp")
    assert f"starlette {metadata.version('starlette')}" in printed
    assert f"aiohttp {metadata.version('aiohttp')}" in printed
    for framework in measured:
        names = [s["name"] for s in facts(result, framework).values()]
        assert names == [s.name for s in scenarios_for(framework)]
        for name in names:
            assert name in printed
    assert set(facts(result, "aiohttp")) == {s.name for s in SCENARIOS}


def test_the_facts_are_what_the_frameworks_do(
    saved: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    """Status and file opens, checked against the same requests to uninstrumented
    servers (uvicorn, an aiohttp runner) with an audit hook on ``open``."""
    _, result, _ = saved
    make_files(tmp_path)
    truth = subprocess.run(
        [sys.executable, str(DATA / "probe_truth.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT,
        check=True,
        env={**__import__("os").environ, "PYTHONPATH": str(TESTS)},
    )
    observed = json.loads(truth.stdout)
    for framework, by_scenario in observed.items():
        probed = facts(result, framework)
        for name, seen in by_scenario.items():
            assert probed[name]["status"] == seen["status"], (framework, name)
            assert bool(probed[name]["opened"]) == seen["opened"], (framework, name)


def test_fastapi_serves_as_starlette_does(saved: tuple[Path, dict[str, Any], str]) -> None:
    _, result, _ = saved
    if "fastapi" not in {f["framework"] for f in result["frameworks"]}:
        pytest.skip("FastAPI is not installed in this framework set")
    starlette, fastapi = facts(result, "starlette"), facts(result, "fastapi")
    for name, fact in starlette.items():
        same = ("status", "opened", "pool_jobs", "phases", "precondition_header")
        assert {k: fastapi[name][k] for k in same} == {k: fact[k] for k in same}, name


def test_release_facts(saved: tuple[Path, dict[str, Any], str]) -> None:
    """The facts the upgrade docs rely on, for the installed releases."""
    _, result, _ = saved
    for framework in ("starlette", "aiohttp"):
        probed = facts(result, framework)
        for name in ("not_modified_etag", "not_modified_date"):
            assert probed[name]["status"] == 304
            assert probed[name]["opened"] is False, (framework, name)
            assert "open" not in probed[name]["phases"]
        for name in ("failed_if_match", "failed_unmodified"):
            if probed[name]["status"] == 412:
                assert probed[name]["opened"] is False, (framework, name)
        assert probed["head"]["status"] == 200
        assert probed["head"]["body_bytes"] == 0
        assert all(s["stable"] for s in probed.values()), framework
    starlette = facts(result, "starlette")
    # StaticFiles passes the method (or the scope) on: HEAD never opens there;
    # a bare FileResponse reads the whole file for HEAD before 0.34.
    assert starlette["head"]["opened"] is False
    assert starlette["handler_head"]["opened"] is (STARLETTE < (0, 34))
    assert starlette["handler_head"]["body_bytes"] == (10_000 if STARLETTE < (0, 34) else 0)
    assert starlette["handler_not_modified"]["status"] == 200  # never 304 from a bare one
    assert starlette["range"]["status"] == (206 if STARLETTE >= (0, 39) else 200)
    assert starlette["range_unsatisfiable"]["status"] == (416 if STARLETTE >= (0, 39) else 200)
    aiohttp = facts(result, "aiohttp")
    opens_early = AIOHTTP >= (
        3,
        11,
        10,
    )  # one _make_response job: open before the range/HEAD checks
    assert aiohttp["head"]["opened"] is opens_early
    assert aiohttp["range_unsatisfiable"]["status"] == 416
    assert aiohttp["range_unsatisfiable"]["opened"] is opens_early
    assert aiohttp["empty_file"]["opened"] is opens_early
    assert aiohttp["failed_if_match"]["status"] == 412
    assert aiohttp["compressed_gzip"]["content_encoding"] == "gzip"
    assert aiohttp["compressed_br"]["content_encoding"] == ("br" if AIOHTTP >= (3, 10) else "gzip")


# -- --against -------------------------------------------------------------------


def test_against_the_same_releases_passes(saved: tuple[Path, dict[str, Any], str]) -> None:
    path, _, _ = saved
    result = probe("--runs", "1", "--against", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 worse, 0 better" in result.stdout
    assert "passed: nothing got worse" in result.stdout


def test_against_fails_when_a_304_opens_the_file(
    saved: tuple[Path, dict[str, Any], str],
) -> None:
    path, _, _ = saved
    result = probe("--runs", "1", "--against", str(path), regression="opens-on-304")
    assert result.returncode == 1, result.stdout + result.stderr
    for framework in ("starlette", "aiohttp"):
        worse = findings(section(result.stdout, framework), "WORSE")
        for scenario in ("not_modified_etag", "not_modified_date"):
            assert any(
                line.split()[1] == scenario and "opens the file now, on a 304" in line
                for line in worse
            ), (framework, worse)
    # aiohttp's early open (PR #10101's shape) adds no job: the 304 rule alone caught it.
    aiohttp_worse = findings(section(result.stdout, "aiohttp"), "WORSE")
    assert not [line for line in aiohttp_worse if "pool jobs" in line]
    assert "FAILED: something got worse" in result.stdout


def test_against_fails_on_an_extra_pool_job(saved: tuple[Path, dict[str, Any], str]) -> None:
    path, _, _ = saved
    result = probe("--runs", "1", "--against", str(path), regression="extra-job")
    assert result.returncode == 1, result.stdout + result.stderr
    worse = findings(result.stdout, "WORSE")
    assert worse
    assert all("pool jobs" in line for line in worse), worse
    assert any(line.split()[1] == "not_modified_etag" for line in worse)


def test_timings_are_judged_only_with_max_slowdown(
    saved: tuple[Path, dict[str, Any], str], tmp_path: Path
) -> None:
    _, baseline, _ = saved
    fast = copy.deepcopy(baseline)
    for framework in fast["frameworks"]:
        for scenario in framework["scenarios"]:
            scenario["median_ms"] = {k: v / 1e6 for k, v in scenario["median_ms"].items()}
    fast_path = tmp_path / "fast.json"
    fast_path.write_text(json.dumps(fast))
    unjudged = probe("--runs", "1", "--framework", "aiohttp", "--against", str(fast_path))
    assert unjudged.returncode == 0, unjudged.stdout + unjudged.stderr
    assert "not judged: pass --max-slowdown" in unjudged.stdout
    judged = probe(
        "--runs", "1", "--framework", "aiohttp", "--against", str(fast_path), "--max-slowdown", "2"
    )
    assert judged.returncode == 1
    assert any("--max-slowdown 2" in line for line in findings(judged.stdout, "WORSE"))


@pytest.mark.skipif(
    AIOHTTP != (3, 11, 10), reason="the aiohttp 3.11.9 -> 3.11.10 upgrade needs aiohttp 3.11.10"
)
def test_aiohttp_3_11_9_to_3_11_10_is_not_a_regression() -> None:
    result = probe("--runs", "2", "--framework", "aiohttp", "--against", str(BASELINE_MID_A))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "aiohttp: aiohttp 3.11.9 -> 3.11.10" in out
    assert "note: starlette: in the baseline, not measured now; not compared" in out
    assert findings(out, "WORSE") == []
    better = findings(out, "BETTER")
    assert any(line.split()[1] == "get" and "pool jobs 3 -> 2" in line for line in better)
    changed = findings(out, "CHANGED")
    for scenario in ("head", "range_unsatisfiable", "empty_file"):
        assert any(
            line.split()[1] == scenario and "opens the file now" in line for line in changed
        ), (scenario, changed)
    # The 304s and 412s are untouched: no finding at all for them.
    for line in findings(out, "CHANGED") + better:
        assert line.split()[1] not in {"not_modified_etag", "not_modified_date", "failed_if_match"}
    strict = probe(
        "--runs", "1", "--framework", "aiohttp", "--against", str(BASELINE_MID_A), "--strict-opens"
    )
    assert strict.returncode == 1
    assert any("head" in line for line in findings(strict.stdout, "WORSE"))


@pytest.mark.skipif(
    STARLETTE != (1, 10, 0), reason="the Starlette 0.38 -> 1.10 upgrade needs Starlette 1.10.0"
)
def test_starlette_0_38_to_1_10_is_not_a_regression() -> None:
    result = probe("--runs", "2", "--framework", "starlette", "--against", str(BASELINE_MID_A))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "starlette: starlette 0.38.6 -> 1.10.0" in out
    assert findings(out, "WORSE") == []
    better = findings(out, "BETTER")
    for scenario, status in (("range", 206), ("if_range_fresh", 206), ("range_unsatisfiable", 416)):
        assert any(
            line.split()[1] == scenario and f"status 200 -> {status}, as RFC 9110 asks" in line
            for line in better
        ), (scenario, better)


@pytest.mark.skipif(
    (STARLETTE, AIOHTTP) != ((0, 38, 6), (3, 11, 9)),
    reason="the baseline's own releases are Starlette 0.38.6 and aiohttp 3.11.9",
)
def test_the_committed_baseline_matches_its_releases() -> None:
    result = probe("--runs", "1", "--against", str(BASELINE_MID_A))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 worse, 0 better" in result.stdout


# -- the rules, on results edited by hand ------------------------------------------


def test_rules(saved: tuple[Path, dict[str, Any], str]) -> None:
    _, baseline, _ = saved
    now = copy.deepcopy(baseline)
    edited = facts(now, "aiohttp")
    edited["not_modified_etag"]["status"] = 200  # a 304 lost
    edited["get"]["body_bytes"] += 1  # a body changed
    edited["head"]["phases"].remove("stat")  # the stat span gone
    edited["handler_get"]["pool_jobs"] = 0  # fewer jobs
    found = compare(baseline, now)
    by_kind = {
        kind: {(f.scenario, f.message.split(" ")[0]) for f in found.findings if f.kind == kind}
        for kind in (WORSE, BETTER, CHANGED)
    }
    assert ("not_modified_etag", "status") in by_kind[WORSE]
    assert ("get", "body") in by_kind[WORSE]
    assert ("head", "phase") in by_kind[WORSE]
    assert ("handler_get", "pool") in by_kind[BETTER]
    assert found.failed
    # The other way round, the lost 304 comes back: an improvement.
    assert ("not_modified_etag", "status") in {
        (f.scenario, f.message.split(" ")[0]) for f in compare(now, baseline).of(BETTER)
    }


def test_bad_arguments_and_baselines(tmp_path: Path) -> None:
    missing = probe("--against", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "nope.json: no such file" in missing.stderr
    other = tmp_path / "other.json"
    other.write_text('{"resourceSpans": []}')
    wrong = probe("--against", str(other))
    assert wrong.returncode == 2
    assert "not a probe baseline" in wrong.stderr
    alone = probe("--max-slowdown", "2")
    assert alone.returncode == 2
    assert "need --against" in alone.stderr
