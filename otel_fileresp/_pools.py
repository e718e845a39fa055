# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Worker-pool occupancy gauges: how full the pool that serves file I/O is.

A file response waits for a worker thread when the pool is saturated; the
``fileresp.threadpool.wait`` span and the ``threadpool.wait`` phase of
``fileresp.phase.duration`` show that wait per response. These observable
gauges show the pool itself, read when the metric reader collects:

======================================= ============ ==================================
instrument                              unit         value (attribute ``fileresp.framework``)
======================================= ============ ==================================
``fileresp.threadpool.borrowed``        ``{token}``  ``starlette``: tokens borrowed from
                                                     anyio's default thread limiter
                                                     (worker-thread jobs running now)
``fileresp.threadpool.busy``            ``{thread}`` ``aiohttp``: threads of asyncio's
                                                     default executor running a job now
``fileresp.threadpool.limit``           ``{thread}`` ``starlette``: the limiter's total
                                                     tokens; ``aiohttp``: the executor's
                                                     ``max_workers``
``fileresp.threadpool.queued``          ``{job}``    ``starlette``: tasks waiting for a
                                                     token; ``aiohttp``: jobs submitted
                                                     and not yet picked up by a worker
======================================= ============ ==================================

They cover the whole pool (every job of the application, not only file I/O),
because a file response waits behind all of them.

Which pools: the pools of the event loops that served at least one
instrumented file response, noted when the response starts (a dictionary
lookup per response; no job, no system call). Starlette's pool is anyio's
default thread limiter of the running loop (``anyio.to_thread`` on asyncio);
aiohttp's is the loop's default executor (``loop.run_in_executor(None, ...)``,
including one set with ``loop.set_default_executor``), read at collection
time. Pools are held through weak references: a collected or closed loop, or
a shut-down executor, is skipped, so an idle process reports nothing rather
than a stale value. With several live loops (several servers in one process)
the point is the sum over them.

Not covered: Starlette on trio (no asyncio loop; no points), and uvloop's
default executor (not visible from Python; no ``aiohttp`` points). An
infinite limiter (``total_tokens = math.inf``) reports no ``limit`` point.

The callbacks run in the metric reader's thread. They read the limiter's
public statistics, and the executor's ``_max_workers``, ``_threads``,
``_work_queue`` and ``_shutdown`` (private attributes of
:class:`concurrent.futures.ThreadPoolExecutor`, read defensively); a worker is
busy when its thread is not waiting in the executor's worker loop for the
next job (from :func:`sys._current_frames`, once per collection). Any failure
is logged once and reported as no point.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import thread as _futures_thread
from types import CodeType
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_fileresp import _names as n
from otel_fileresp._log import failed

_STARLETTE_ATTRIBUTES: Final = {n.ATTR_FRAMEWORK: n.FRAMEWORK_STARLETTE}
_AIOHTTP_ATTRIBUTES: Final = {n.ATTR_FRAMEWORK: n.FRAMEWORK_AIOHTTP}

# The code of the executor's worker loop: a worker whose innermost Python frame
# runs it is waiting for a job (or between two), any other frame is a job.
_WORKER_CODE: Final[CodeType | None] = getattr(
    getattr(_futures_thread, "_worker", None), "__code__", None
)

LoopRef = weakref.ReferenceType[asyncio.AbstractEventLoop]


def _live_loop(loop_ref: LoopRef) -> asyncio.AbstractEventLoop | None:
    loop = loop_ref()
    if loop is None or loop.is_closed():
        return None
    return loop


class _PoolRegistry:
    """The pools of the loops that served file responses, held weakly.

    Noting happens on event loops (several threads), reading in the metric
    reader's thread: updates take a lock, the per-response check does not.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # thread id -> the loop that thread noted last (see _running_loop)
        self._thread_loops: dict[int, LoopRef] = {}
        # id(loop) -> (loop, anyio's default limiter of that loop)
        self._limiters: dict[int, tuple[LoopRef, weakref.ReferenceType[Any]]] = {}
        # id(loop) -> loop (its default executor is read at collection time)
        self._executor_loops: dict[int, LoopRef] = {}

    # -- on the event loop, when a file response starts ----------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop running in this thread, without a system call.

        ``asyncio.get_running_loop()`` calls ``getpid()`` on Python 3.11 (its
        check against a loop inherited through ``fork``); the loop this thread
        noted last is reused while it runs, so a response costs a dictionary
        lookup and ``is_running()``. Only a thread's first response on a new
        loop asks asyncio."""
        thread = threading.get_ident()
        noted = self._thread_loops.get(thread)
        loop = None if noted is None else noted()
        if loop is not None and loop.is_running():
            return loop
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None  # not asyncio (trio): not covered
        self._thread_loops[thread] = weakref.ref(loop)
        return loop

    def note_anyio_limiter(self) -> None:
        try:
            loop = self._running_loop()
            if loop is None:
                return
            entry = self._limiters.get(id(loop))
            if entry is not None and entry[0]() is loop:
                return
            from anyio.to_thread import current_default_thread_limiter

            limiter_ref = weakref.ref(current_default_thread_limiter())
            with self._lock:
                self._prune()
                self._limiters[id(loop)] = (weakref.ref(loop), limiter_ref)
        except Exception:
            failed("pools.anyio")

    def note_asyncio_executor(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        try:
            if loop is None:
                loop = self._running_loop()
                if loop is None:
                    return
            loop_ref = self._executor_loops.get(id(loop))
            if loop_ref is not None and loop_ref() is loop:
                return
            with self._lock:
                self._prune()
                self._executor_loops[id(loop)] = weakref.ref(loop)
        except Exception:
            failed("pools.asyncio")

    def after_fork_in_child(self) -> None:
        """A forked child starts with a new lock (the parent's may have been held
        by its metric reader at the fork) and none of the parent's loops."""
        self._lock = threading.Lock()
        self._thread_loops = {}
        self._limiters = {}
        self._executor_loops = {}

    def _prune(self) -> None:
        """Forget dead loops and pools (called with the lock held)."""
        for key, (loop_ref, limiter_ref) in list(self._limiters.items()):
            if _live_loop(loop_ref) is None or limiter_ref() is None:
                del self._limiters[key]
        for key, loop_ref in list(self._executor_loops.items()):
            if _live_loop(loop_ref) is None:
                del self._executor_loops[key]

    # -- in the metric reader's thread ---------------------------------------

    def limiters(self) -> list[Any]:
        """anyio limiters of live loops."""
        with self._lock:
            entries = list(self._limiters.values())
        found = []
        for loop_ref, limiter_ref in entries:
            limiter = limiter_ref()
            if limiter is not None and _live_loop(loop_ref) is not None:
                found.append(limiter)
        return found

    def executors(self) -> list[ThreadPoolExecutor]:
        """Default executors of live loops that are not shut down."""
        with self._lock:
            loop_refs = list(self._executor_loops.values())
        found = []
        for loop_ref in loop_refs:
            loop = _live_loop(loop_ref)
            executor = getattr(loop, "_default_executor", None)
            if isinstance(executor, ThreadPoolExecutor) and not getattr(
                executor, "_shutdown", True
            ):
                found.append(executor)
        return found


# One registry per process: pools are process-wide, and a meter returns the
# instrument registered first when both instrumentors create the same gauges,
# so whichever callback survives must see both frameworks' pools.
_REGISTRY: Final = _PoolRegistry()
os.register_at_fork(after_in_child=_REGISTRY.after_fork_in_child)


def _limiter_counts(limiter: Any) -> tuple[int, float, int]:
    statistics = limiter.statistics()
    return statistics.borrowed_tokens, statistics.total_tokens, statistics.tasks_waiting


def _busy_workers(executor: ThreadPoolExecutor, frames: dict[int, Any]) -> int | None:
    if _WORKER_CODE is None:
        return None
    busy = 0
    for worker in tuple(getattr(executor, "_threads", ())):
        frame = frames.get(worker.ident) if worker.ident is not None else None
        if frame is not None and frame.f_code is not _WORKER_CODE:
            busy += 1
    return busy


def _queued_jobs(executor: ThreadPoolExecutor) -> int | None:
    queue = getattr(executor, "_work_queue", None)
    qsize = getattr(queue, "qsize", None)
    return qsize() if callable(qsize) else None


def _max_workers(executor: ThreadPoolExecutor) -> int | None:
    value = getattr(executor, "_max_workers", None)
    return value if isinstance(value, int) else None


def _total(values: Iterable[float | None]) -> float | None:
    """The sum of the known values; None when none is known."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None


class PoolGauges:
    """The occupancy gauges of one meter; ``note_*`` capture a loop's pool."""

    __slots__ = ("borrowed", "busy", "limit", "queued")

    def __init__(self, meter: Meter) -> None:
        self.borrowed = meter.create_observable_gauge(
            n.METRIC_POOL_BORROWED,
            callbacks=[_guarded("borrowed", _observe_borrowed)],
            unit="{token}",
            description="Tokens borrowed from anyio's default thread limiter "
            "(worker-thread jobs running), Starlette.",
        )
        self.busy = meter.create_observable_gauge(
            n.METRIC_POOL_BUSY,
            callbacks=[_guarded("busy", _observe_busy)],
            unit="{thread}",
            description="Threads of asyncio's default executor running a job, aiohttp.",
        )
        self.limit = meter.create_observable_gauge(
            n.METRIC_POOL_LIMIT,
            callbacks=[_guarded("limit", _observe_limit)],
            unit="{thread}",
            description="Worker threads the pool allows at once: anyio's total tokens "
            "(Starlette), the executor's max_workers (aiohttp).",
        )
        self.queued = meter.create_observable_gauge(
            n.METRIC_POOL_QUEUED,
            callbacks=[_guarded("queued", _observe_queued)],
            unit="{job}",
            description="Jobs waiting for a worker thread: tasks waiting for a token "
            "(Starlette), jobs not yet picked up by a worker (aiohttp).",
        )

    @staticmethod
    def note_anyio_limiter() -> None:
        """On the event loop: note the running loop's default anyio thread limiter."""
        _REGISTRY.note_anyio_limiter()

    @staticmethod
    def note_asyncio_executor(loop: asyncio.AbstractEventLoop | None = None) -> None:
        """On the event loop: note ``loop`` (default: the running one) for its executor."""
        _REGISTRY.note_asyncio_executor(loop)


Observe = Callable[[], Iterable[Observation]]


def _guarded(name: str, observe: Observe) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return list(observe())
        except Exception:
            failed(f"pools.observe.{name}")
            return []

    return callback


def _observe_borrowed() -> Iterable[Observation]:
    limiters = _REGISTRY.limiters()
    if limiters:
        yield Observation(sum(_limiter_counts(lim)[0] for lim in limiters), _STARLETTE_ATTRIBUTES)


def _observe_busy() -> Iterable[Observation]:
    executors = _REGISTRY.executors()
    if executors:
        frames = sys._current_frames()
        busy = _total(_busy_workers(executor, frames) for executor in executors)
        if busy is not None:
            yield Observation(busy, _AIOHTTP_ATTRIBUTES)


def _observe_limit() -> Iterable[Observation]:
    limiters = _REGISTRY.limiters()
    if limiters:
        tokens = sum(_limiter_counts(lim)[1] for lim in limiters)
        if not math.isinf(tokens):
            yield Observation(tokens, _STARLETTE_ATTRIBUTES)
    executors = _REGISTRY.executors()
    workers = _total(_max_workers(executor) for executor in executors)
    if workers is not None:
        yield Observation(workers, _AIOHTTP_ATTRIBUTES)


def _observe_queued() -> Iterable[Observation]:
    limiters = _REGISTRY.limiters()
    if limiters:
        yield Observation(sum(_limiter_counts(lim)[2] for lim in limiters), _STARLETTE_ATTRIBUTES)
    executors = _REGISTRY.executors()
    queued = _total(_queued_jobs(executor) for executor in executors)
    if queued is not None:
        yield Observation(queued, _AIOHTTP_ATTRIBUTES)
