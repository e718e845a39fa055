"""docs/upgrading.md: every ```bash block runs, in order, in one temporary
directory, with the installed package (``otel-fileresp`` next to this
interpreter), and exits 0.

The canary step reads trace files an export would have written; the test puts
them in the directory first (``traces-stable.jsonl``, ``traces-canary.jsonl``
and ``traces.jsonl`` with both versions as ``service.version`` resources, in
the Collector's file-exporter format), drawn from one distribution, so the
comparison passes as the page says a healthy canary does. The fences that
are not ``bash`` (sample output, the PromQL) are not run here; the PromQL
fences are the ones tests/test_prometheus.py looks for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_baseline import draw, write_otlp

ROOT = Path(__file__).resolve().parents[1]
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
