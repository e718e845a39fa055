"""Worker-pool occupancy gauges under a saturated pool, on real servers.

The pool is made small (2 tokens / 2 workers) and saturated by requests whose
worker-thread job blocks on an event, so its true occupancy is known by
construction; the gauges read by the SDK's metric reader must report it.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio.to_thread
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from support.harness import Reply, Telemetry, instrumenting, serve_aiohttp, serve_asgi

from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

BORROWED = "fileresp.threadpool.borrowed"
BUSY = "fileresp.threadpool.busy"
LIMIT = "fileresp.threadpool.limit"
QUEUED = "fileresp.threadpool.queued"
GAUGES = (BORROWED, BUSY, LIMIT, QUEUED)
WAIT_TIMEOUT = 10.0
BLOCKERS = 4  # requests holding a worker; the pool has 2


def gauges(telemetry: Telemetry, framework: str) -> dict[str, float]:
    """One collection: the pool gauges' values for ``framework``."""
    values: dict[str, float] = {}
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name not in GAUGES:
                    continue
                for point in metric.data.data_points:
                    if point.attributes.get("fileresp.framework") == framework:
                        assert metric.name not in values, "one point per framework"
                        values[metric.name] = point.value
    return values


def units(telemetry: Telemetry) -> dict[str, str]:
    data = telemetry.metric_reader.get_metrics_data()
    return {
        metric.name: metric.unit
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name in GAUGES
    }


def collected(ref: weakref.ref[Any], timeout: float = WAIT_TIMEOUT) -> bool:
    """Whether ``ref``'s object is garbage collected (the server's thread may
    still be finishing under load: bounded wait)."""
    deadline = time.monotonic() + timeout
    while gc.collect() >= 0 and ref() is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return ref() is None


def assert_not_kept_alive(loop_ref: weakref.ref[Any], serve_uninstrumented: Any) -> None:
    """The gauges do not keep a stopped server's loop alive: it is collected,
    or, where the framework's own stack keeps it (Starlette 0.16 with anyio 3
    does), an uninstrumented server's loop is kept alive just the same.

    A loop not collected within a second is compared with the baseline first,
    so a framework that keeps every loop costs 3 s here, not 12; a loop the
    baseline does not share gets the full timeout to be collected."""
    if collected(loop_ref, timeout=1.0):
        return
    with serve_uninstrumented() as server:
        assert server.request("GET", "/static/small.txt").status == 200
        baseline = weakref.ref(server.loop)
    del server
    if not collected(baseline, timeout=2.0):
        return  # the framework's own stack keeps the uninstrumented loop too
    assert collected(loop_ref), "only the instrumented loop is kept alive"


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def settled(telemetry: Telemetry, framework: str, expected: dict[str, float]) -> dict[str, float]:
    """The gauges once they show ``expected`` (or after the timeout): a job
    that belongs to a finished response (a file's close) may still run a
    moment after the client got the last byte."""
    values = gauges(telemetry, framework)
    deadline = time.monotonic() + WAIT_TIMEOUT
    while values != expected and time.monotonic() < deadline:
        time.sleep(0.005)
        values = gauges(telemetry, framework)
    return values


class Clients:
    """Requests sent from their own threads, collected at the end."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.threads: list[threading.Thread] = []
        self.replies: list[Reply] = []

    def send(self, path: str) -> threading.Thread:
        def run() -> None:
            self.replies.append(self.server.request("GET", path, timeout=WAIT_TIMEOUT))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def join(self) -> list[Reply]:
        for thread in self.threads:
            thread.join(WAIT_TIMEOUT)
        return self.replies


# -- Starlette: anyio's default thread limiter -----------------------------


def starlette_app(files: Path, gate: threading.Event, running: list[int]) -> Starlette:
    def block(request: Request) -> PlainTextResponse:
        # A sync endpoint: Starlette runs it in a worker thread (one token).
        running.append(1)
        gate.wait(WAIT_TIMEOUT)
        return PlainTextResponse("unblocked")

    return Starlette(
        routes=[Route("/block", block), Mount("/static", StaticFiles(directory=str(files)))]
    )


def limit_tokens(server: Any, tokens: int) -> Any:
    """Set the server loop's default limiter to ``tokens``; return the limiter."""

    def set_tokens() -> Any:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = tokens
        return limiter

    return server.call(set_tokens)


def test_starlette_gauges_report_the_limiter(telemetry: Telemetry, files: Path) -> None:
    gate = threading.Event()
    running: list[int] = []
    app = starlette_app(files, gate, running)
    with (
        instrumenting(StarletteFileResponseInstrumentor(), telemetry),
        serve_asgi(app) as server,
    ):
        limiter = limit_tokens(server, 2)
        # Nothing is reported before a file response noted the pool.
        assert gauges(telemetry, "starlette") == {}

        assert server.request("GET", "/static/small.txt").status == 200
        assert settled(telemetry, "starlette", {BORROWED: 0, LIMIT: 2, QUEUED: 0}) == {
            BORROWED: 0,
            LIMIT: 2,
            QUEUED: 0,
        }
        assert units(telemetry) == {BORROWED: "{token}", LIMIT: "{thread}", QUEUED: "{job}"}

        clients = Clients(server)
        try:
            for _ in range(BLOCKERS):
                clients.send("/block")
            # The truth, read on the loop: 2 jobs run, 2 wait for a token.
            wait_until(lambda: len(running) == 2 and limiter.statistics().tasks_waiting == 2)
            assert server.call(limiter.statistics).borrowed_tokens == 2
            assert gauges(telemetry, "starlette") == {BORROWED: 2, LIMIT: 2, QUEUED: 2}

            # A file response now waits for a token behind them.
            file_client = clients.send("/static/small.txt")
            wait_until(lambda: limiter.statistics().tasks_waiting == 3)
            assert server.call(limiter.statistics).tasks_waiting == 3
            assert gauges(telemetry, "starlette") == {BORROWED: 2, LIMIT: 2, QUEUED: 3}
            assert file_client.is_alive()
            assert len(running) == 2
        finally:
            gate.set()
            replies = clients.join()
        assert sorted(r.status for r in replies) == [200] * (BLOCKERS + 1)
        assert settled(telemetry, "starlette", {BORROWED: 0, LIMIT: 2, QUEUED: 0}) == {
            BORROWED: 0,
            LIMIT: 2,
            QUEUED: 0,
        }
        loop_ref = weakref.ref(server.loop)

    # The loop is closed: its pool is gone and reported no more, and the
    # gauges did not keep the loop alive.
    assert gauges(telemetry, "starlette") == {}
    del server, clients
    assert_not_kept_alive(loop_ref, lambda: serve_asgi(app))


def test_starlette_gauges_sum_over_live_loops(telemetry: Telemetry, files: Path) -> None:
    app = starlette_app(files, threading.Event(), [])
    with (
        instrumenting(StarletteFileResponseInstrumentor(), telemetry),
        serve_asgi(app) as first,
        serve_asgi(app) as second,
    ):
        limit_tokens(first, 3)
        limit_tokens(second, 5)
        assert first.request("GET", "/static/small.txt").status == 200
        assert gauges(telemetry, "starlette")[LIMIT] == 3
        assert second.request("GET", "/static/small.txt").status == 200
        assert settled(telemetry, "starlette", {BORROWED: 0, LIMIT: 8, QUEUED: 0})[LIMIT] == 8
    assert gauges(telemetry, "starlette") == {}


# -- aiohttp: asyncio's default executor -----------------------------------


def aiohttp_app(
    files: Path, gates: list[threading.Event], running: list[int], submitted: list[int]
):
    def blocking_job() -> str:
        running.append(1)
        gates[-1].wait(WAIT_TIMEOUT)
        return "unblocked"

    async def block(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, blocking_job)
        submitted.append(1)  # run_in_executor has submitted the job
        return web.Response(text=await future)

    def make_app() -> web.Application:
        app = web.Application()
        app.router.add_get("/block", block)
        app.router.add_static("/static", files)
        return app

    return make_app


def small_executor(server: Any, workers: int) -> ThreadPoolExecutor:
    executor = ThreadPoolExecutor(max_workers=workers)
    server.call(lambda: asyncio.get_running_loop().set_default_executor(executor))
    return executor


def test_aiohttp_gauges_report_the_default_executor(telemetry: Telemetry, files: Path) -> None:
    gate = threading.Event()
    gates = [gate]
    running: list[int] = []
    submitted: list[int] = []
    make_app = aiohttp_app(files, gates, running, submitted)
    with (
        instrumenting(AiohttpFileResponseInstrumentor(), telemetry),
        serve_aiohttp(make_app) as server,
    ):
        small_executor(server, 2)
        assert gauges(telemetry, "aiohttp") == {}

        assert server.request("GET", "/static/small.txt").status == 200
        assert settled(telemetry, "aiohttp", {BUSY: 0, LIMIT: 2, QUEUED: 0}) == {
            BUSY: 0,
            LIMIT: 2,
            QUEUED: 0,
        }
        assert units(telemetry) == {BUSY: "{thread}", LIMIT: "{thread}", QUEUED: "{job}"}

        clients = Clients(server)
        try:
            for _ in range(BLOCKERS):
                clients.send("/block")
            # The truth: 4 jobs submitted, 2 running (both workers), 2 queued.
            wait_until(lambda: len(submitted) == BLOCKERS and len(running) == 2)
            assert (len(submitted), len(running)) == (BLOCKERS, 2)
            assert gauges(telemetry, "aiohttp") == {BUSY: 2, LIMIT: 2, QUEUED: 2}

            # A file response's job queues behind them.
            file_client = clients.send("/static/small.txt")
            assert settled(telemetry, "aiohttp", {BUSY: 2, LIMIT: 2, QUEUED: 3}) == {
                BUSY: 2,
                LIMIT: 2,
                QUEUED: 3,
            }
            assert file_client.is_alive()
            assert len(running) == 2
        finally:
            gate.set()
            replies = clients.join()
        assert sorted(r.status for r in replies) == [200] * (BLOCKERS + 1)
        assert settled(telemetry, "aiohttp", {BUSY: 0, LIMIT: 2, QUEUED: 0}) == {
            BUSY: 0,
            LIMIT: 2,
            QUEUED: 0,
        }

        # One job on a pool that was saturated: one busy worker, one idle
        # (the executor's idle-thread semaphore over-counts by now).
        gates.append(threading.Event())
        running.clear()
        clients = Clients(server)
        try:
            clients.send("/block")
            wait_until(lambda: len(running) == 1)
            assert gauges(telemetry, "aiohttp") == {BUSY: 1, LIMIT: 2, QUEUED: 0}
        finally:
            gates[-1].set()
            assert [r.status for r in clients.join()] == [200]
        loop_ref = weakref.ref(server.loop)

    # Loop closed and its default executor shut down: no point.
    assert gauges(telemetry, "aiohttp") == {}
    del server, clients
    assert_not_kept_alive(loop_ref, lambda: serve_aiohttp(make_app))


def test_aiohttp_gauges_skip_a_shut_down_executor(telemetry: Telemetry, files: Path) -> None:
    make_app = aiohttp_app(files, [threading.Event()], [], [])
    with (
        instrumenting(AiohttpFileResponseInstrumentor(), telemetry),
        serve_aiohttp(make_app) as server,
    ):
        executor = small_executor(server, 3)
        assert server.request("GET", "/static/small.txt").status == 200
        assert settled(telemetry, "aiohttp", {BUSY: 0, LIMIT: 3, QUEUED: 0})[LIMIT] == 3
        executor.shutdown(wait=True)
        assert gauges(telemetry, "aiohttp") == {}
        # A new default executor on the same loop is read at collection time.
        small_executor(server, 4)
        assert server.request("GET", "/static/small.txt").status == 200
        assert settled(telemetry, "aiohttp", {BUSY: 0, LIMIT: 4, QUEUED: 0})[LIMIT] == 4


def test_both_frameworks_share_one_set_of_gauges(telemetry: Telemetry, files: Path) -> None:
    """Both instrumentors on one meter provider: the gauges are registered
    once (the SDK keeps the first registration) and report both pools."""
    with (
        instrumenting(StarletteFileResponseInstrumentor(), telemetry),
        instrumenting(AiohttpFileResponseInstrumentor(), telemetry),
        serve_asgi(starlette_app(files, threading.Event(), [])) as asgi,
        serve_aiohttp(aiohttp_app(files, [threading.Event()], [], [])) as aio,
    ):
        limit_tokens(asgi, 6)
        small_executor(aio, 7)
        assert asgi.request("GET", "/static/small.txt").status == 200
        assert aio.request("GET", "/static/small.txt").status == 200
        assert settled(telemetry, "starlette", {BORROWED: 0, LIMIT: 6, QUEUED: 0}) == {
            BORROWED: 0,
            LIMIT: 6,
            QUEUED: 0,
        }
        assert settled(telemetry, "aiohttp", {BUSY: 0, LIMIT: 7, QUEUED: 0}) == {
            BUSY: 0,
            LIMIT: 7,
            QUEUED: 0,
        }


def test_a_pool_is_reported_under_the_framework_that_noted_it(telemetry: Telemetry) -> None:
    """Pools are keyed by pool kind: a third framework on anyio's threads (say
    Litestar) would note the same kind under its own name, and its points
    carry that name, not Starlette's."""
    from otel_fileresp._instruments import instruments_for
    from otel_fileresp._pools import POOL_ANYIO_THREADS, POOL_ASYNCIO_EXECUTOR

    pools = instruments_for(telemetry.meter_provider).pools

    async def serve_a_while() -> None:
        pools.note(POOL_ANYIO_THREADS, "litestar")
        pools.note(POOL_ASYNCIO_EXECUTOR, "sanic")
        await asyncio.get_running_loop().run_in_executor(None, lambda: None)
        limiter = anyio.to_thread.current_default_thread_limiter()
        expected = {BORROWED: 0, LIMIT: limiter.total_tokens, QUEUED: 0}
        assert gauges(telemetry, "litestar") == expected
        assert gauges(telemetry, "starlette") == {}
        assert set(gauges(telemetry, "sanic")) == {BUSY, LIMIT, QUEUED}

    asyncio.run(serve_a_while())
