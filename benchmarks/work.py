"""No extra work, counted in-process: worker-pool jobs, file-system calls and
Python function calls per response, without and with the instrumentation.

Counters are installed before instrumenting (so they see exactly what the
framework does, under our wrappers) and removed after:

- worker-pool jobs: Starlette, a counting wrapper around
  ``anyio.to_thread.run_sync``; aiohttp, a counting ``ThreadPoolExecutor``
  subclass as the loop's default executor;
- file-system calls: counting wrappers of ``os.stat``, ``os.lstat``,
  ``os.fstat``, ``builtins.open`` and ``io.open`` (Python-level calls, what
  the frameworks and pathlib call; the system calls are counted with strace
  in the end-to-end section);
- Python function calls: a profile function (``sys.setprofile`` and
  ``threading.setprofile``, so worker threads started for this section count
  too) counting ``call`` events: a deterministic measure of the Python work
  added, immune to the machine's noise.

Modes: ``off`` (not instrumented), ``nosdk`` (instrumented, no SDK),
``unsampled_nometrics`` (SDK tracer, no-op meter, unsampled parent),
``unsampled`` (SDK tracer and meter, unsampled parent) and ``recording``
(sampled parent); the SDK's own calls count too.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
from _common import TRACEPARENT_SAMPLED, TRACEPARENT_UNSAMPLED, sdk_pipeline, table
from drivers import FRAMEWORKS, AiohttpDriver, StarletteDriver, etag_of, instrumentor_for
from drivers import requests_for as make_requests
from opentelemetry.metrics import NoOpMeterProvider

KINDS = ("200", "304", "HEAD", "Range")
MODES = ("off", "nosdk", "unsampled_nometrics", "unsampled", "recording")
FS_CALLS = ("os.stat", "os.lstat", "os.fstat", "open")


@dataclass
class Counts:
    jobs: int = 0
    fs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FS_CALLS, 0))
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> tuple[int, dict[str, int], int]:
        with self.lock:
            return self.jobs, dict(self.fs), self.calls


COUNTS = Counts()
_PROFILING = threading.Event()


def _profile(frame: Any, event: str, arg: Any) -> None:
    if event == "call" and _PROFILING.is_set():
        COUNTS.calls += 1  # approximate under threads only if they race; the GIL serialises


def _counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        with COUNTS.lock:
            COUNTS.fs[name] += 1
        return fn(*args, **kwargs)

    return counted


@contextmanager
def counters() -> Iterator[None]:
    """The file-system and Starlette job counters, installed for the duration."""
    originals = {
        (os, "stat"): os.stat,
        (os, "lstat"): os.lstat,
        (os, "fstat"): os.fstat,
        (builtins, "open"): builtins.open,
        (io, "open"): io.open,
        (anyio.to_thread, "run_sync"): anyio.to_thread.run_sync,
    }
    original_run_sync = anyio.to_thread.run_sync

    async def counting_run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with COUNTS.lock:
            COUNTS.jobs += 1
        return await original_run_sync(func, *args, **kwargs)

    counted_open = _counting("open", builtins.open)
    os.stat = _counting("os.stat", os.stat)  # type: ignore[assignment]
    os.lstat = _counting("os.lstat", os.lstat)  # type: ignore[assignment]
    os.fstat = _counting("os.fstat", os.fstat)  # type: ignore[assignment]
    builtins.open = counted_open
    io.open = counted_open
    anyio.to_thread.run_sync = counting_run_sync
    try:
        yield
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor: counts the jobs aiohttp submits."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.submitted = 0
        self.done = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with COUNTS.lock:
            COUNTS.jobs += 1
            self.submitted += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with COUNTS.lock:
            self.done += 1


@dataclass
class Cell:
    framework: str
    kind: str
    mode: str
    responses: int
    jobs: float
    fs: dict[str, float]
    calls: float


async def _run_framework(framework: str, root: Path, responses: int) -> list[Cell]:
    pipeline = sdk_pipeline()
    executor: CountingExecutor | None = None
    driver: StarletteDriver | AiohttpDriver
    if framework == "starlette":
        driver = StarletteDriver(root)
    else:
        driver = AiohttpDriver(root)
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
    await driver.start()
    instrumentor = instrumentor_for(framework)
    cells = []

    async def idle() -> None:
        # aiohttp closes the file in a job after the reply (3.11.10+).
        deadline = time.monotonic() + 10
        await asyncio.sleep(0.01)
        while executor is not None and executor.done < executor.submitted:
            if time.monotonic() > deadline:
                raise RuntimeError("executor jobs did not finish")
            await asyncio.sleep(0.002)

    try:
        etag = await etag_of(driver, TRACEPARENT_UNSAMPLED)
        for kind in KINDS:
            for mode in MODES:
                traceparent = TRACEPARENT_SAMPLED if mode == "recording" else TRACEPARENT_UNSAMPLED
                request = make_requests(etag, traceparent)[kind]
                sdk = {
                    "tracer_provider": pipeline.tracer_provider,
                    "meter_provider": pipeline.meter_provider,
                }
                kwargs: dict[str, Any] | None = {
                    "off": None,
                    "nosdk": {},
                    "unsampled_nometrics": {**sdk, "meter_provider": NoOpMeterProvider()},
                    "unsampled": sdk,
                    "recording": sdk,
                }[mode]
                if kwargs is not None:
                    instrumentor.instrument(**kwargs)
                try:
                    await driver.batch(request, 5)  # warm-up
                    await idle()
                    jobs0, fs0, calls0 = COUNTS.snapshot()
                    _PROFILING.set()
                    await driver.batch(request, responses)
                    await idle()
                    _PROFILING.clear()
                    jobs1, fs1, calls1 = COUNTS.snapshot()
                finally:
                    _PROFILING.clear()
                    if kwargs is not None:
                        instrumentor.uninstrument()
                cells.append(
                    Cell(
                        framework,
                        kind,
                        mode,
                        responses,
                        (jobs1 - jobs0) / responses,
                        {k: (fs1[k] - fs0[k]) / responses for k in FS_CALLS},
                        (calls1 - calls0) / responses,
                    )
                )
    finally:
        await driver.stop()
        pipeline.shutdown()
        if executor is not None:
            executor.shutdown(wait=True)
    return cells


def run(root: Path, responses: int) -> list[Cell]:
    cells: list[Cell] = []
    with counters():
        sys.setprofile(_profile)
        threading.setprofile(_profile)
        try:
            for framework in FRAMEWORKS:
                cells.extend(asyncio.run(_run_framework(framework, root, responses)))
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    return cells


def report(cells: list[Cell]) -> tuple[str, list[tuple[str, str, bool]]]:
    rows = []
    checks = []
    by_key = {(c.framework, c.kind, c.mode): c for c in cells}
    for cell in cells:
        off = by_key[(cell.framework, cell.kind, "off")]
        same = cell.jobs == off.jobs and cell.fs == off.fs
        if cell.mode != "off":
            checks.append(
                (
                    f"same jobs and file-system calls {cell.framework} {cell.kind} {cell.mode}",
                    f"{cell.jobs:g} jobs",
                    same,
                )
            )
        rows.append(
            [
                cell.framework,
                cell.kind,
                cell.mode,
                f"{cell.jobs:g}",
                *[f"{cell.fs[k]:g}" for k in FS_CALLS],
                f"{cell.calls:.0f}",
                f"+{cell.calls - off.calls:.0f}" if cell.mode != "off" else "",
                "" if cell.mode == "off" else ("yes" if same else "NO"),
            ]
        )
    responses = cells[0].responses if cells else 0
    text = (
        f"Per response, over {responses} responses per cell (after 5 warm-up responses):\n\n"
        + table(
            [
                "framework",
                "request",
                "mode",
                "pool jobs",
                *FS_CALLS,
                "Python calls",
                "added calls",
                "same jobs and fs calls as off",
            ],
            rows,
        )
    )
    return text, checks
