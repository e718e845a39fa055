"""The instrumentation adds no work: the same worker-pool jobs and the same
file-system calls per response as without it.

Each framework serves the same files over a real loopback server twice,
without and with the instrumentation (SDK providers, recording). Counters
are installed before instrumenting, so they see exactly what the framework
asks for, under our wrappers:

- worker-pool jobs: Starlette, a counting wrapper around
  ``anyio.to_thread.run_sync``; aiohttp, a counting ``ThreadPoolExecutor``
  subclass as the loop's default executor (both from ``support.serve``);
- file-system calls: counting wrappers of ``os.stat``, ``os.lstat``,
  ``os.fstat``, ``builtins.open`` and ``io.open`` (``pathlib.Path.open``,
  which aiohttp uses, calls ``io.open``), installed in-process for the test
  and restored after.

Every request kind is sent several times after a warm-up (StaticFiles checks
its directory once, on the first request); each request's counts are read
once the server has completely finished it (aiohttp closes the file in a
deferred job).
"""

from __future__ import annotations

import builtins
import io
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.apps import FRAMEWORKS, serve
from support.harness import Telemetry, responses

FILE = "page.txt"
BODY = bytes(range(256)) * 16  # 4 KiB: one read in Starlette, sendfile in aiohttp
MTIME = 1_600_000_000
REPEATS = 3
KINDS = ("200", "304", "HEAD", "Range")
FS_CALLS = ("os.stat", "os.lstat", "os.fstat", "open")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / FILE).write_bytes(BODY)
    os.utime(root / FILE, (MTIME, MTIME))
    return root


@contextmanager
def counting_fs_calls() -> Iterator[Counter[str]]:
    """Count the file-system calls made anywhere in this process."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    originals = {
        (os, "stat"): os.stat,
        (os, "lstat"): os.lstat,
        (os, "fstat"): os.fstat,
        (builtins, "open"): builtins.open,
        (io, "open"): io.open,
    }

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with lock:
                counts[name] += 1
            return fn(*args, **kwargs)

        return counted

    counted_open = counting("open", builtins.open)
    os.stat = counting("os.stat", os.stat)
    os.lstat = counting("os.lstat", os.lstat)
    os.fstat = counting("os.fstat", os.fstat)
    builtins.open = counted_open
    io.open = counted_open
    try:
        yield counts
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


def request_headers(kind: str, etag: str) -> dict[str, str]:
    if kind == "304":
        return {"If-None-Match": etag}
    if kind == "Range":
        return {"Range": "bytes=0-99"}
    return {}


Work = tuple[int, int, tuple[int, ...]]  # status, pool jobs, fs calls


def work_per_request(
    framework: str, root: Path, telemetry: Telemetry | None
) -> dict[str, list[Work]]:
    """Status, pool jobs and file-system calls of each request, per kind."""
    found: dict[str, list[Work]] = {kind: [] for kind in KINDS}
    path = f"/static/{FILE}"
    # The fs counters go in first, then serve() installs the job counter,
    # builds and serves the app, and only then instruments.
    with counting_fs_calls() as fs, serve(framework, root, telemetry) as served:
        first = served.request("GET", path)
        assert first.status == 200 and first.body == BODY
        etag = first.header("etag")
        assert etag
        for kind in KINDS:  # warm-up: every kind once
            served.request("HEAD" if kind == "HEAD" else "GET", path, request_headers(kind, etag))
        assert served.settled()
        for _ in range(REPEATS):
            for kind in KINDS:
                jobs_before, fs_before = served.jobs(), Counter(fs)
                reply = served.request(
                    "HEAD" if kind == "HEAD" else "GET", path, request_headers(kind, etag)
                )
                assert served.settled(), "the server did not finish the request"
                fs_calls = tuple(fs[name] - fs_before[name] for name in FS_CALLS)
                found[kind].append((reply.status, served.jobs() - jobs_before, fs_calls))
    return found


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_jobs_and_file_system_calls(framework: str, site: Path, telemetry: Telemetry) -> None:
    without = work_per_request(framework, site, None)
    with_instrumentation = work_per_request(framework, site, telemetry)

    # The instrumentation really recorded every response of its run.
    requests_sent = 1 + len(KINDS) * (1 + REPEATS)
    assert len(telemetry.wait_for("fileresp.response", requests_sent)) == requests_sent
    assert len(responses(telemetry)) == requests_sent

    for kind in KINDS:
        # Identical requests do identical work, with or without us.
        assert len(set(without[kind])) == 1, (kind, without[kind])
        assert with_instrumentation[kind] == without[kind], kind

    # The counters see the work: a 200 opens the file once and runs jobs, a
    # 304 opens nothing (both frameworks decide it before opening).
    status, jobs, fs_calls = without["200"][0]
    assert status == 200 and jobs >= 1
    assert fs_calls[FS_CALLS.index("open")] == 1
    assert fs_calls[FS_CALLS.index("os.stat")] + fs_calls[FS_CALLS.index("os.lstat")] >= 1
    status, jobs, fs_calls = without["304"][0]
    assert status == 304 and jobs >= 1
    assert fs_calls[FS_CALLS.index("open")] == 0
