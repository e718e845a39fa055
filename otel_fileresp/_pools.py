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
lookup per response; no job, no system call), by pool kind. An adapter says
which kind its framework uses, and the points carry that framework:
Starlette's pool is anyio's default thread limiter of the running loop
(:data:`POOL_ANYIO_THREADS`: ``anyio.to_thread`` on asyncio); aiohttp's is
the loop's default executor (:data:`POOL_ASYNCIO_EXECUTOR`:
``loop.run_in_executor(None, ...)``, including one set with
``loop.set_default_executor``), read at collection time. A third framework
on anyio would note the same pool kind under its own name. Pools are held
through weak references: a collected or closed loop, or
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

#: The kinds of worker pool a framework hands file I/O to.
POOL_ANYIO_THREADS: Final = "anyio.threads"  # anyio's default thread limiter
POOL_ASYNCIO_EXECUTOR: Final = "asyncio.executor"  # the loop's default executor

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
        # thread id -> (kind, framework, loop) that thread noted last (see note)
        self._thread_noted: dict[int, tuple[str, str, LoopRef]] = {}
        # (id(loop), framework) -> (loop, anyio's default limiter of that loop)
        self._limiters: dict[tuple[int, str], tuple[LoopRef, weakref.ReferenceType[Any]]] = {}
        # (id(loop), framework) -> loop (its default executor is read at collection time)
        self._executor_loops: dict[tuple[int, str], LoopRef] = {}

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

    def note(self, kind: str, framework: str) -> None:
        """The running loop's pool of ``kind`` serves ``framework``'s file
        responses. What this thread noted last, on a loop still running (the
        one running here), is noted already: a dictionary lookup and
        ``is_running()`` per response, no further call."""
        thread = threading.get_ident()
        last = self._thread_noted.get(thread)
        if last is not None and last[0] == kind and last[1] == framework:
            loop = last[2]()
            if loop is not None and loop.is_running():
                return
        if kind == POOL_ANYIO_THREADS:
            self._note_anyio_limiter(framework)
        elif kind == POOL_ASYNCIO_EXECUTOR:
            self._note_asyncio_executor(framework)
        loop_ref = self._thread_loops.get(thread)
        if loop_ref is not None:  # the loop _running_loop found (None: not asyncio)
            self._thread_noted[thread] = (kind, framework, loop_ref)

    def _note_anyio_limiter(self, framework: str) -> None:
        try:
            loop = self._running_loop()
            if loop is None:
                return
            key = (id(loop), framework)
            entry = self._limiters.get(key)
            if entry is not None and entry[0]() is loop:
                return
            from anyio.to_thread import current_default_thread_limiter

            limiter_ref = weakref.ref(current_default_thread_limiter())
            with self._lock:
                self._prune()
                self._limiters[key] = (weakref.ref(loop), limiter_ref)
        except Exception:
            failed("pools.anyio")

    def _note_asyncio_executor(
        self, framework: str, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        try:
            if loop is None:
                loop = self._running_loop()
                if loop is None:
                    return
            key = (id(loop), framework)
            loop_ref = self._executor_loops.get(key)
            if loop_ref is not None and loop_ref() is loop:
                return
            with self._lock:
                self._prune()
                self._executor_loops[key] = weakref.ref(loop)
        except Exception:
            failed("pools.asyncio")

    def after_fork_in_child(self) -> None:
        """A forked child starts with a new lock (the parent's may have been held
        by its metric reader at the fork) and none of the parent's loops."""
        self._lock = threading.Lock()
        self._thread_loops = {}
        self._thread_noted = {}
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

    def limiters(self) -> list[tuple[str, Any]]:
        """anyio limiters of live loops, with the framework each serves."""
        with self._lock:
            entries = list(self._limiters.items())
        found = []
        for (_, framework), (loop_ref, limiter_ref) in entries:
            limiter = limiter_ref()
            if limiter is not None and _live_loop(loop_ref) is not None:
                found.append((framework, limiter))
        return found

    def executors(self) -> list[tuple[str, ThreadPoolExecutor]]:
        """Default executors of live loops that are not shut down, with the
        framework each serves."""
        with self._lock:
            entries = list(self._executor_loops.items())
        found = []
        for (_, framework), loop_ref in entries:
            loop = _live_loop(loop_ref)
            executor = getattr(loop, "_default_executor", None)
            if isinstance(executor, ThreadPoolExecutor) and not getattr(
                executor, "_shutdown", True
            ):
                found.append((framework, executor))
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


class PoolGauges:
    """The occupancy gauges of one meter; :meth:`note` captures a loop's pool."""

    __slots__ = ("gauges",)

    def __init__(self, meter: Meter) -> None:
        self.gauges = [
            meter.create_observable_gauge(
                name,
                callbacks=[_guarded(name, observe)],
                unit=unit,
                description=description,
            )
            for name, observe, unit, description in _GAUGES
        ]

    #: On the event loop: the running loop's pool of ``kind``
    #: (:data:`POOL_ANYIO_THREADS`, :data:`POOL_ASYNCIO_EXECUTOR`) serves
    #: ``framework``'s file responses; its points carry that framework. The
    #: registry's own method (a bound method is no descriptor: one call).
    note: Final = _REGISTRY.note


Observe = Callable[[], Iterable[Observation]]


def _guarded(name: str, observe: Observe) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return list(observe())
        except Exception:
            failed(f"pools.observe.{name}")
            return []

    return callback


Pool = Any
Measure = Callable[[Pool], "float | None"]


def _per_framework(pools: Iterable[tuple[str, Pool]], measure: Measure) -> list[Observation]:
    """One point per framework: ``measure`` summed over its pools (none when
    no pool of the framework could be measured)."""
    totals: dict[str, float] = {}
    for framework, pool in pools:
        value = measure(pool)
        if value is not None:
            totals[framework] = totals.get(framework, 0) + value
    return [Observation(value, {n.ATTR_FRAMEWORK: name}) for name, value in totals.items()]


def _observe_borrowed() -> Iterable[Observation]:
    return _per_framework(_REGISTRY.limiters(), lambda limiter: _limiter_counts(limiter)[0])


def _observe_busy() -> Iterable[Observation]:
    executors = _REGISTRY.executors()
    if not executors:
        return []
    frames = sys._current_frames()
    return _per_framework(executors, lambda executor: _busy_workers(executor, frames))


def _observe_limit() -> Iterable[Observation]:
    tokens = _per_framework(_REGISTRY.limiters(), lambda limiter: _limiter_counts(limiter)[1])
    return [
        *(point for point in tokens if not math.isinf(point.value)),
        *_per_framework(_REGISTRY.executors(), _max_workers),
    ]


def _observe_queued() -> Iterable[Observation]:
    return [
        *_per_framework(_REGISTRY.limiters(), lambda limiter: _limiter_counts(limiter)[2]),
        *_per_framework(_REGISTRY.executors(), _queued_jobs),
    ]


# name, callback, unit, description
_GAUGES: Final[tuple[tuple[str, Observe, str, str], ...]] = (
    (
        n.METRIC_POOL_BORROWED,
        _observe_borrowed,
        "{token}",
        "Tokens borrowed from anyio's default thread limiter "
        "(worker-thread jobs running), Starlette.",
    ),
    (
        n.METRIC_POOL_BUSY,
        _observe_busy,
        "{thread}",
        "Threads of asyncio's default executor running a job, aiohttp.",
    ),
    (
        n.METRIC_POOL_LIMIT,
        _observe_limit,
        "{thread}",
        "Worker threads the pool allows at once: anyio's total tokens "
        "(Starlette), the executor's max_workers (aiohttp).",
    ),
    (
        n.METRIC_POOL_QUEUED,
        _observe_queued,
        "{job}",
        "Jobs waiting for a worker thread: tasks waiting for a token "
        "(Starlette), jobs not yet picked up by a worker (aiohttp).",
    ),
)
