"""Fixtures shared by the suite: telemetry, a directory of files to serve."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import Telemetry

SMALL_SIZE = 1024
LARGE_SIZE = 10 * 1024 * 1024


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.shutdown()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory to serve: a 1 KB file, a 10 MB file, an empty file and a subdirectory."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "small.txt").write_bytes(bytes(range(256)) * (SMALL_SIZE // 256))
    with open(root / "large.bin", "wb") as large:
        block = os.urandom(64 * 1024)
        for _ in range(LARGE_SIZE // len(block)):
            large.write(block)
    (root / "empty.txt").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "page.html").write_text("<h1>page</h1>")
    return root


@pytest.fixture
def examples_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """examples/ importable, as when running from that directory; the example
    modules are imported afresh for each test."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    yield
    for name in ("starlette_app", "fastapi_app", "aiohttp_app", "otel_setup"):
        sys.modules.pop(name, None)
