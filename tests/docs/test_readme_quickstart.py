"""The Quickstart, run literally in a fresh virtualenv, from a clone.

The section under the heading ``## Quickstart`` is taken from README.md, or
from docs/quickstart.md while README.md has no such section. In that section:

- every fenced ``bash`` (or ``sh``, ``shell``) block is run, in order, as one
  script under ``bash -euo pipefail``, with a fresh virtualenv first on
  ``PATH`` (as if activated) and ``PORT`` set to a free port on 127.0.0.1;
- every fenced ``text`` block is the documented output: each of its non-empty
  lines must appear in what the script prints, in that order (compared
  without surrounding whitespace or a trailing comma).

The script runs where a user runs it: in the root of a clone of this
repository, with the virtualenv at ``.venv`` in it. The clone is a copy of the
working tree (without virtualenvs, caches and build output, so the block's
install builds nothing into the working tree). Nothing is installed before
the block: its own ``pip install`` line installs this package and the rest
(from the configured index), and the test then checks that the installed
package is this checkout's. ``TMPDIR`` points into the test's temporary
directory, so whatever the block writes with ``mktemp`` is removed with it.

The block must finish by itself and stop what it started: it runs in its own
process group, which must be empty when it returns; on a timeout the whole
group is killed and the test fails. Creating the virtualenv takes seconds;
the block, install included, 15-90 s against a local package mirror; every
step has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.processes import free_port, group_alive

REPO = Path(__file__).resolve().parents[2]
SECTION = "Quickstart"
RUNNABLE = {"bash", "sh", "shell"}
OUTPUT = {"text"}
VENV_TIMEOUT = 120.0
# The whole block, its pip install included.
RUN_TIMEOUT = 600.0
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venvs",
    ".nox",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<info>[\w+-]*)")


def section(markdown: str, title: str) -> str | None:
    """The text under ``## title`` up to the next heading of level 1 or 2."""
    lines = markdown.splitlines()
    body: list[str] | None = None
    fence: str | None = None
    for line in lines:
        match = FENCE.match(line)
        if match and (fence is None or line.strip() == fence):
            fence = match["fence"] if fence is None else None
        elif fence is None and re.match(r"^#{1,2}\s", line):
            if body is not None:
                break
            if line.lstrip("#").strip() == title:
                body = []
                continue
        if body is not None:
            body.append(line)
    return None if body is None else "\n".join(body)


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(info string, content)`` of each fenced code block."""
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    info = ""
    content: list[str] = []
    for line in markdown.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, info, content = match["fence"], match["info"].lower(), []
        elif fence is not None and line.strip() == fence:
            blocks.append((info, "\n".join(content)))
            fence = None
        elif fence is not None:
            content.append(line)
    return blocks


def quickstart() -> tuple[Path, str]:
    """Where the Quickstart is read from, and its section text."""
    readme = REPO / "README.md"
    if readme.exists():
        text = section(readme.read_text(encoding="utf-8"), SECTION)
        if text is not None:
            return readme, text
    doc = REPO / "docs" / "quickstart.md"
    text = section(doc.read_text(encoding="utf-8"), SECTION)
    assert text is not None, f"no '## {SECTION}' section in README.md or {doc}"
    return doc, text


def _normalize(line: str) -> str:
    return line.strip().removesuffix(",").strip()


def missing_in_order(expected: list[str], output: str) -> list[str]:
    """The expected lines not found, in order, among the output's lines."""
    lines = [_normalize(line) for line in output.splitlines()]
    position = 0
    missing: list[str] = []
    for wanted in expected:
        try:
            position = lines.index(_normalize(wanted), position) + 1
        except ValueError:
            missing.append(wanted)
    return missing


def test_section_parsing() -> None:
    markdown = "\n".join(
        [
            "# Title",
            "## Quickstart",
            "```bash",
            "## not a heading: a comment in the block",
            "echo hi",
            "```",
            "### Sub-heading stays in the section",
            "~~~text",
            "hi",
            "~~~",
            "## Next",
            "```bash",
            "echo not run",
            "```",
        ]
    )
    text = section(markdown, "Quickstart")
    assert text is not None
    assert fenced_blocks(text) == [
        ("bash", "## not a heading: a comment in the block\necho hi"),
        ("text", "hi"),
    ]
    assert section(markdown, "Missing") is None
    assert missing_in_order(["a", "c,"], " a\nb\n  c\n") == []
    assert missing_in_order(["c", "a"], "a\nb\nc\n") == ["a"]


def _run(argv: list[str], timeout: float, env: dict[str, str]) -> None:
    result = subprocess.run(
        argv,
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"


def _environment(venv: Path, port: int) -> dict[str, str]:
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PORT", "PYTHONSTARTUP"}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("OTEL_")}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", "")])
    env["PORT"] = str(port)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


@pytest.mark.quickstart
def test_readme_quickstart(tmp_path: Path) -> None:
    source, text = quickstart()
    blocks = fenced_blocks(text)
    script = "\n\n".join(content for info, content in blocks if info in RUNNABLE)
    expected = [
        line
        for info, content in blocks
        if info in OUTPUT
        for line in content.splitlines()
        if line.strip()
    ]
    assert script.strip(), f"no runnable block in the Quickstart of {source}"
    assert expected, f"no documented output in the Quickstart of {source}"

    # A clone of this checkout, a fresh virtualenv in it, nothing installed.
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=NOT_COPIED)
    venv = clone / ".venv"
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    port = free_port()
    env = _environment(venv, port)
    env["TMPDIR"] = str(temporary)
    _run([sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT, env)

    # The block, literally, from the root of the clone.
    script_path = tmp_path / "quickstart.sh"
    script_path.write_text(script + "\n", encoding="utf-8")
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", str(script_path)],
        cwd=clone,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=30)
        pytest.fail(f"the Quickstart did not finish within {RUN_TIMEOUT} s:\n{stdout}\n{stderr}")
    finally:
        deadline = time.monotonic() + 10
        while group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        left_behind = group_alive(process.pid)
        if left_behind:
            os.killpg(process.pid, signal.SIGKILL)

    logs = "\n".join(
        f"--- {path.name}:\n{path.read_text(errors='replace')[-4000:]}"
        for path in sorted(temporary.glob("*/*"))
        if path.is_file() and path.suffix in {".log", ".json"}
    )
    report = f"stdout:\n{stdout}\nstderr:\n{stderr[-4000:]}\n{logs}"
    assert process.returncode == 0, report
    assert not left_behind, f"the Quickstart left processes running\n{report}"
    assert missing_in_order(expected, stdout) == [], report
    installed = _installed_package(venv)
    assert installed.is_relative_to(venv), f"otel_fileresp imports from {installed}"
    ours = REPO / "otel_fileresp"
    differing = [
        str(name)
        for name in sorted(path.relative_to(ours) for path in ours.rglob("*.py"))
        if not (installed / name).is_file()
        or (installed / name).read_bytes() != (ours / name).read_bytes()
    ]
    assert differing == [], f"the block did not install this checkout: {differing} differ"

    # The CI gate on what the block wrote: the report reads the console
    # exporter's spans.json (uvicorn's log lines mixed in) and the check
    # passes; on an empty file it fails, with its own status.
    [spans] = sorted(temporary.glob("*/spans.json"))
    # Each fileresp.response is the child of its request's server span (the
    # block installs a server instrumentation), not a root span.
    console = _console_spans(spans.read_text())
    responses = [s for s in console.values() if s["name"] == "fileresp.response"]
    assert len(responses) == 2, sorted(s["name"] for s in console.values())
    for response in responses:
        parent = console.get(response["parent_id"] or "")
        assert parent is not None, f"fileresp.response has no parent: {response}"
        assert parent["kind"] == "SpanKind.SERVER", parent
        assert parent["context"]["trace_id"] == response["context"]["trace_id"]
    # Without the `report` extra (the block installs none): the console
    # exporter's spans are read whole, so ijson is not needed.
    no_ijson = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import ijson"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "ModuleNotFoundError" in no_ijson.stderr, no_ijson.stderr
    passed = _report(venv, spans)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Check passed" in passed.stdout, passed.stdout
    empty = tmp_path / "empty.json"
    empty.write_text("")
    failed = _report(venv, empty)
    assert failed.returncode == 3, failed.stdout + failed.stderr


def _console_spans(text: str) -> dict[str, dict[str, Any]]:
    """The console exporter's spans in ``text`` (JSON objects one after another), by span ID."""
    spans: dict[str, dict[str, Any]] = {}
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at >= 0:
        span, end = decoder.raw_decode(text, at)
        spans[span["context"]["span_id"]] = span
        at = text.find("{", end)
    return spans


def _report(venv: Path, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "otel-fileresp"), "report", "--check", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _installed_package(venv: Path) -> Path:
    """Where the virtualenv's python imports ``otel_fileresp`` from."""
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import otel_fileresp; print(otel_fileresp.__file__)"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=venv,
    )
    assert found.returncode == 0, found.stderr
    return Path(found.stdout.strip()).parent
