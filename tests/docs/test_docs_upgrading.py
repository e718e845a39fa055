"""docs/upgrading.md: every ```bash block runs, in order, in one temporary
directory, with the installed package (``otel-fileresp`` next to this
interpreter), and exits 0.

The canary step reads trace files an export would have written; the test puts
them in the directory first (``traces-stable.jsonl``, ``traces-canary.jsonl``
and ``traces.jsonl`` with both versions as ``service.version`` resources, in
the Collector's file-exporter format), drawn from one distribution, so the
comparison passes as the page says a healthy canary does. The fences that
are not ``bash`` (sample output, the PromQL) are not run here; the PromQL
fences are run by ``test_the_promql_compares_two_versions``: a real
Prometheus (Debian's, as in tests/support/prometheus.py) scrapes two versions
of an aiohttp app in two processes, the canary with a simulated regression.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.trace_files import draw, write_otlp

from otel_fileresp.probe.scenarios import PAGE as PAGE_FILE
from otel_fileresp.probe.scenarios import make_files

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
PAGE = ROOT / "docs" / "upgrading.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def bash_blocks() -> list[str]:
    return [body for language, body in FENCE.findall(PAGE.read_text()) if language == "bash"]


def test_the_page_has_the_whole_path() -> None:
    blocks = bash_blocks()
    joined = "\n".join(blocks)
    for command in ("probe --runs 5 --save", "probe --runs 5 --against", "--baseline", "--by"):
        assert command in joined, command
    assert re.search(r"^```promql$", PAGE.read_text(), re.MULTILINE)


def test_the_page_is_linked() -> None:
    assert "(docs/upgrading.md)" in (ROOT / "README.md").read_text()
    assert "(upgrading.md)" in (ROOT / "docs" / "cli.md").read_text()


def test_the_commands_run(tmp_path: Path) -> None:
    write_otlp(tmp_path / "traces-stable.jsonl", draw(1, 400))
    write_otlp(tmp_path / "traces-canary.jsonl", draw(2, 150))
    write_otlp(
        tmp_path / "traces.jsonl",
        draw(1, 400, resource={"service.version": "1.4.2"})
        + draw(2, 150, resource={"service.version": "1.5.0"}),
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    blocks = bash_blocks()
    assert len(blocks) >= 4
    for block in blocks:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{block}\n{result.stdout}\n{result.stderr}"
        if "--against" in block:
            assert "nothing got worse" in result.stdout
        if "report" in block:
            assert "nothing worse than the baseline" in result.stdout
    assert (tmp_path / "probe-baseline.json").exists()


@pytest.mark.parametrize(
    "anchor", ["1-before-the-bump-save-a-baseline", "what-each-step-can-and-cannot-prove"]
)
def test_anchors_exist(anchor: str) -> None:
    headings = re.findall(r"^#+ (.+)$", PAGE.read_text(), re.MULTILINE)
    slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
    assert anchor in slugs


# -- the PromQL of step 4, on a real Prometheus ---------------------------------------


def promql_blocks() -> list[str]:
    return [
        body.strip() for language, body in FENCE.findall(PAGE.read_text()) if language == "promql"
    ]


@contextmanager
def running_app(root: Path, version: str, metrics_port: int, regression: str | None = None):
    """One version of the app in its own process; yields its HTTP port."""
    args = [sys.executable, str(DATA / "upgrading_app.py"), str(root), version, str(metrics_port)]
    process = subprocess.Popen(
        args + ([regression] if regression else []),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def prometheus_scraping(workdir: Path, stable: int, canary: int):
    """Prometheus scraping both versions twice: job ``shop`` with a
    ``service_version`` target label (as a promoted resource attribute would
    be), and job ``shop-plain`` without it (for the ``target_info`` join)."""
    prometheus_support = pytest.importorskip("support.prometheus")
    binary, _ = prometheus_support.binaries()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "shop",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{stable}"], "labels": {"service_version": "1.4.2"}},
                    {"targets": [f"127.0.0.1:{canary}"], "labels": {"service_version": "1.5.0"}},
                ],
            },
            {
                "job_name": "shop-plain",
                "static_configs": [{"targets": [f"127.0.0.1:{stable}", f"127.0.0.1:{canary}"]}],
            },
        ],
    }
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    port = prometheus_support.free_port()
    log = workdir / "prometheus.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = prometheus_support.Prometheus(f"http://127.0.0.1:{port}", log, process)
    try:
        assert prometheus_support._ready(server), server.log_tail()
        yield server
    finally:
        prometheus_support._stop(process)


def _get(port: int, headers: dict[str, str] | None = None) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", f"/static/{PAGE_FILE}", headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("ETag")
    finally:
        connection.close()


def _traffic(port: int, ok: int, not_modified: int) -> None:
    status, etag = _get(port)
    assert status == 200 and etag
    for _ in range(ok - 1):
        assert _get(port)[0] == 200
    for _ in range(not_modified):
        assert _get(port, {"If-None-Match": etag})[0] == 304


def _wait(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_the_promql_compares_two_versions(tmp_path: Path) -> None:
    """The stable version (1.4.2) is healthy; the canary (1.5.0) opens the file
    for its 304s (the simulated aiohttp #10101 regression). Each expression of
    the page, as written, must tell them apart."""
    # CI installs Debian's prometheus (.ci/run): missing, this fails, never skips.
    assert shutil.which("prometheus"), "Debian's prometheus is needed (apt-get install prometheus)"
    import support.prometheus as prometheus_support

    root = tmp_path / "files"
    root.mkdir()
    make_files(root)
    stable_metrics, canary_metrics = prometheus_support.free_port(), prometheus_support.free_port()
    with (
        running_app(root, "1.4.2", stable_metrics) as stable,
        running_app(root, "1.5.0", canary_metrics, "opens-on-304") as canary,
    ):
        # Every series exists before the first scrape (a first sample is no increase).
        _traffic(stable, 1, 1)
        _traffic(canary, 1, 1)
        with prometheus_scraping(tmp_path / "prometheus", stable_metrics, canary_metrics) as prom:
            _wait(lambda: sum(s.value for s in prom.query("up")) == 4)
            _wait(lambda: len(prom.query("fileresp_opens_total")) >= 4)
            _traffic(stable, 20, 10)
            _traffic(canary, 20, 10)
            time.sleep(3)  # three more scrapes
            results = [prom.query(block) for block in promql_blocks()]
    by_version, ratio, shares, alarm, joined = results

    def versions(samples: list[Any]) -> dict[str, float]:
        return {
            s.labels["service_version"]: s.value for s in samples if s.labels.get("service_version")
        }

    # p99 per version, labelled or joined with target_info: both versions, in (0, 1 s].
    for found in (versions(by_version), versions(joined)):
        assert set(found) == {"1.4.2", "1.5.0"}, found
        assert all(0 < value <= 1 for value in found.values()), found
    (only,) = ratio
    assert 0 < only.value < float("inf")
    opened = {
        (s.labels["service_version"], s.labels["http_response_status_code"]): s.value
        for s in shares
        if s.labels.get("service_version")
    }
    assert opened[("1.4.2", "200")] == pytest.approx(1, rel=0.2)
    assert opened[("1.4.2", "304")] == 0
    assert opened[("1.5.0", "200")] == pytest.approx(1, rel=0.2)
    assert opened[("1.5.0", "304")] == pytest.approx(1, rel=0.2)
    assert list(versions(alarm)) == ["1.5.0"]
