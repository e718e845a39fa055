"""The code blocks of README.md and docs/*.md that a reader is told to run, run verbatim.

**The convention.** A fenced block is run when the line just before its
opening fence (blank lines allowed in between) is an HTML comment, invisible
on the rendered page:

- ``<!-- run: python NAME.py -->``: the block is written to ``NAME.py`` and
  run with ``python NAME.py``;
- ``<!-- run: pytest [OPTIONS] test_NAME.py -->``: written to
  ``test_NAME.py`` and run with ``python -m pytest [OPTIONS] test_NAME.py``
  (pytest loads the package's plugin through its entry point, as for a
  user; no conftest of ours is in reach);
- ``<!-- run: bash -->``: run with ``bash -euo pipefail``;
- ``<!-- run: transcript -->``: a terminal session: each line that starts
  with ``$ `` is a command, run in turn by one ``bash`` (so ``$?`` is the
  previous command's status), and the lines after it, up to the next
  command, are what it must print (standard output and error together,
  exactly, less trailing blanks);
- ``<!-- file: PATH -->``: not run; the block is written to ``PATH`` for
  every run block of the same page that follows it (an ``app.py`` a test
  imports).

After the command, ``;``-separated options: ``exit N`` (the documented exit
status, e.g. a worked example whose tests fail on purpose; default 0) and
``touch PATH`` (a small file the page says to have, such as
``static/app.js``).

Each run block runs in a fresh temporary directory, with this test's Python
(the test virtualenv, whose ``bin`` is first on ``PATH``), no ``OTEL_*``
variable and no ``PYTHONPATH``, bounded by :data:`TIMEOUT`. A block that
fails fails this test, naming the page and line.

**What is not marked.** Blocks that need something this environment does not
have (Jaeger, Tempo, a Collector, docker, an OTLP endpoint, a trace file
from elsewhere) and commands that take minutes (``dev.py test``, the
benchmarks) are left unmarked, and the page says so next to them where a
reader would otherwise expect it to run. README's Quickstart has its own
test (``tests/docs/test_readme_quickstart.py``: a clone, a fresh virtualenv, its
install line).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 120.0
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})")
MARK = re.compile(r"^<!--\s*(?P<kind>run|file):\s*(?P<spec>.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int
    kind: str  # run | file
    spec: str
    text: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def marked_blocks(page: Path) -> list[Block]:
    """The marked blocks of ``page``; run blocks carry the page's files above them."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    files: dict[str, str] = {}
    mark: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        fence = FENCE.match(line)
        if fence is None:
            found = MARK.match(line.strip())
            if found is not None:
                mark = found
            elif line.strip():
                mark = None
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence["fence"]:
            end += 1
        if mark is not None:
            text = "\n".join(lines[index + 1 : end]) + "\n"
            block = Block(page, index + 1, mark["kind"], mark["spec"], text, dict(files))
            if block.kind == "file":
                files[block.spec] = text
            else:
                blocks.append(block)
        mark = None
        index = end + 1
    return blocks


BLOCKS = [block for page in PAGES for block in marked_blocks(page)]


def test_the_convention_finds_blocks() -> None:
    """The pages have run blocks (a renamed marker would silently run nothing)."""
    assert len(BLOCKS) >= 5, [b.id for b in BLOCKS]
    sample = (
        "text\n<!-- file: app.py -->\n```python\nx = 1\n```\n\n"
        "<!-- run: python a.py; exit 2 -->\n\n```python\nimport app\n```\n```python\nno\n```\n"
    )
    page = ROOT / "sample.md"
    blocks = [b for b in _parse_text(sample, page)]
    assert [(b.kind, b.spec, b.text, b.files) for b in blocks] == [
        ("run", "python a.py; exit 2", "import app\n", {"app.py": "x = 1\n"})
    ]


def _parse_text(text: str, page: Path) -> list[Block]:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / page.name
        path.write_text(text)
        blocks = marked_blocks(path)
    for block in blocks:
        block.page = page
    return blocks


def _command(block: Block, directory: Path) -> tuple[list[str], int]:
    command, *options = [part.strip() for part in block.spec.split(";")]
    expected = 0
    for option in options:
        name, _, value = option.partition(" ")
        if name == "exit":
            expected = int(value)
        elif name == "touch":
            target = directory / value
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("console.log('hi')\n")
        else:
            raise AssertionError(f"{block.id}: unknown option {option!r}")
    argv = shlex.split(command)
    if argv[0] == "transcript":
        commands = [c for c, _ in transcript(block.text)]
        (directory / "transcript.sh").write_text(transcript_script(commands))
        return ["bash", "transcript.sh"], expected
    if argv[0] == "bash":
        (directory / "block.sh").write_text(block.text)
        return ["bash", "-euo", "pipefail", "block.sh"], expected
    (directory / argv[-1]).write_text(block.text)
    if argv[0] == "python":
        return [sys.executable, *argv[1:]], expected
    if argv[0] == "pytest":
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *argv[1:]], expected
    raise AssertionError(f"{block.id}: unknown command {command!r}")


PROMPT = "$ "
# Printed by the transcript's script before each command, on a line of its own.
SEPARATOR = "\x1e otel-fileresp transcript command"


def transcript(text: str) -> list[tuple[str, str]]:
    """The (command, expected output) pairs of a transcript block."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(PROMPT):
            pairs.append((line[len(PROMPT) :], []))
        elif pairs:
            pairs[-1][1].append(line)
        else:
            raise AssertionError(f"a transcript starts with a command, not {line!r}")
    return [(command, _lines(output)) for command, output in pairs]


def _lines(lines: list[str]) -> str:
    return "\n".join(line.rstrip() for line in lines).strip("\n")


def transcript_script(commands: list[str]) -> str:
    """One bash script running ``commands`` in turn, standard error merged into
    standard output, :data:`SEPARATOR` printed before each while ``$?`` is kept."""
    lines = ["exec 2>&1"]
    for command in commands:
        lines += [f"__status=$?; printf '\\n%s\\n' '{SEPARATOR}'; (exit $__status)", command]
    return "\n".join(lines) + "\n"


def test_transcript_parsing() -> None:
    pairs = transcript("$ echo a\na\n$ false\n$ echo $?\n1\n")
    assert pairs == [("echo a", "a"), ("false", ""), ("echo $?", "1")]
    done = subprocess.run(
        ["bash", "-c", transcript_script([c for c, _ in pairs])],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert [_lines(o.splitlines()) for o in done.stdout.split(SEPARATOR)[1:]] == ["a", "", "1"]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    for name, text in block.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    argv, expected = _command(block, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        done = subprocess.run(
            argv,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: did not finish within {TIMEOUT} s")
    assert done.returncode == expected, (
        f"{block.id}: exit {done.returncode}, expected {expected}\n"
        f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    )
    if block.spec == "transcript":
        printed = [_lines(o.splitlines()) for o in done.stdout.split(SEPARATOR)[1:]]
        assert printed == [output for _, output in transcript(block.text)], block.id
