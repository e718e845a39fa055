"""What the aiohttp tests share: the files served, the app, and a server probe.

The app is built (routes, ``web.static`` resource, executor) on the server's
loop *before* the tests instrument, the way an application that builds its
app at import time would be.

``ServerProbe`` sees the server from outside the instrumentation:

- a ``ThreadPoolExecutor`` subclass installed as the loop's default executor
  counts every job aiohttp submits (our wrapper sits *under* it, on
  ``ThreadPoolExecutor.submit``, so the count is what aiohttp asked for);
- an access logger tells when aiohttp has completely finished a request
  (``log_access`` runs after ``prepare`` and ``write_eof`` return), so a test
  waits for that event instead of sleeping.
"""

from __future__ import annotations

import asyncio
import ctypes
import http.client
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web, web_fileresponse
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_urldispatcher import StaticResource
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import ReadableSpan

from support.harness import (
    LoopbackServer,
    Reply,
    Telemetry,
    instrumenting,
    responses,
    serve_aiohttp,
)

AIOHTTP_VERSION = aiohttp.__version__
# Release shapes (tests/../notes/upstream-internals.md), detected by feature:
# 3.11.10+: stat, checks, open and fstat in one `_make_response` job; the file
# is opened before the range and method checks.
COMBINED_JOB = hasattr(web.FileResponse, "_make_response")
# 3.10+: `.br` variants, 404 for a missing file and 403 for a non-regular one
# decided by FileResponse itself.
FILE_RESPONSE_HANDLES_ERRORS = hasattr(web.FileResponse, "_get_file_path_stat_encoding")
# 3.10+: a static route resolves the path in an executor job that builds the
# FileResponse; before, it decides 404/403 on the loop before any FileResponse.
STATIC_LOOKUP_JOB = hasattr(StaticResource, "_resolve_path_to_response")
# 3.10+: `.br` variants are served too (before, only `.gz`).
BROTLI_VARIANTS = hasattr(web_fileresponse, "ENCODING_EXTENSIONS")

# A request with this header is served under suppress_instrumentation().
SUPPRESS_HEADER = "X-Suppress-Telemetry"
WAIT = "fileresp.threadpool.wait"

# A fixed modification time, so conditional requests are reproducible.
MTIME = 1_600_000_000  # 2020-09-13T12:26:40Z
BEFORE_MTIME = formatdate(MTIME - 3600, usegmt=True)
AFTER_MTIME = formatdate(MTIME + 3600, usegmt=True)

SMALL = b"".join(bytes([i % 251]) for i in range(1024))
PAGE = b"<html>" + b"p" * 500 + b"</html>"
PAGE_GZ = b"gzip-bytes-of-page"
PAGE_BR = b"brotli-bytes-of-page"
BIG_SIZE = 10 * 1024 * 1024
CHUNK = 256 * 1024  # aiohttp's default FileResponse chunk size


def make_site(root: Path) -> Path:
    """The files served: every kind of answer aiohttp can give."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "small.txt").write_bytes(SMALL)
    (root / "empty.txt").write_bytes(b"")
    (root / "page.html").write_bytes(PAGE)
    (root / "page.html.gz").write_bytes(PAGE_GZ)
    (root / "page.html.br").write_bytes(PAGE_BR)
    block = bytes(range(256)) * 4096  # 1 MiB, deterministic
    with open(root / "big.bin", "wb") as big:
        for _ in range(BIG_SIZE // len(block)):
            big.write(block)
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "inner.txt").write_bytes(b"inner")
    os.mkfifo(root / "fifo")
    for path in root.rglob("*"):
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return root


def etag_of(path: Path) -> str:
    """aiohttp's ETag: hex mtime in ns, hex size."""
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


class EarlyOpenFileResponse(web.FileResponse):
    """A test double of aiohttp PR #10101 (never released): the file is opened
    before the precondition checks, so a 304 or 412 has opened it.

    It opens inside the executor job that precedes the checks: ``_make_response``
    from 3.11.10, the stat job before (``_get_file_path_stat_encoding`` or
    ``_get_file_path_stat_and_gzip``). The early file object is closed again
    before returning, so aiohttp's own flow is otherwise unchanged.
    """

    if COMBINED_JOB:

        def _make_response(self, request: Any, accept_encoding: str) -> Any:
            with self._path.open("rb"):
                return super()._make_response(request, accept_encoding)

    elif FILE_RESPONSE_HANDLES_ERRORS:

        def _get_file_path_stat_encoding(self, accept_encoding: str) -> Any:
            with self._path.open("rb"):
                return super()._get_file_path_stat_encoding(accept_encoding)

    else:

        def _get_file_path_stat_and_gzip(self, check_for_gzipped_file: bool) -> Any:
            with self._path.open("rb"):
                return super()._get_file_path_stat_and_gzip(check_for_gzipped_file)


def build_app(root: Path, probe: ServerProbe) -> web.Application:
    """The app; call it on the server's loop (``serve_aiohttp`` does)."""
    asyncio.get_running_loop().set_default_executor(probe.executor)

    async def file_handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(root / request.match_info["name"])

    async def compressed_handler(request: web.Request) -> web.StreamResponse:
        # Compression makes aiohttp send the body with executor reads.
        response = web.FileResponse(root / request.match_info["name"])
        response.enable_compression()
        return response

    async def early_open_handler(request: web.Request) -> web.StreamResponse:
        return EarlyOpenFileResponse(root / request.match_info["name"])

    async def plain_handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="not a file")

    @web.middleware
    async def suppress_when_asked(request: web.Request, handler: Any) -> web.StreamResponse:
        if SUPPRESS_HEADER in request.headers:
            with suppress_instrumentation():
                return await handler(request)
        return await handler(request)

    app = web.Application(
        middlewares=[suppress_when_asked],
        handler_args={"access_log_class": probe.access_log_class},
    )
    app.router.add_get("/file/{name:.+}", file_handler)
    app.router.add_get("/compressed/{name:.+}", compressed_handler)
    app.router.add_get("/early/{name:.+}", early_open_handler)
    app.router.add_get("/plain", plain_handler)
    app.add_routes([web.static("/static", root)])
    return app


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor: counts submitted and finished jobs."""

    def __init__(self, initializer: Callable[[], None] | None = None) -> None:
        super().__init__(max_workers=4, initializer=initializer)
        self._lock = threading.Lock()
        self.submitted = 0
        self.done = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self.submitted += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self.done += 1


class ServerProbe:
    """Counts executor jobs and requests aiohttp has finished."""

    WAIT_TIMEOUT = 10.0

    def __init__(self, worker_initializer: Callable[[], None] | None = None) -> None:
        self.executor = CountingExecutor(worker_initializer)
        self._finished = threading.Condition()
        self.finished_requests = 0
        probe = self

        class FinishedLogger(AbstractAccessLogger):
            def log(self, request: Any, response: Any, time: float) -> None:
                with probe._finished:
                    probe.finished_requests += 1
                    probe._finished.notify_all()

            @property
            def enabled(self) -> bool:
                return True

        self.access_log_class = FinishedLogger

    def wait_finished(self, count: int) -> bool:
        with self._finished:
            return self._finished.wait_for(
                lambda: self.finished_requests >= count, self.WAIT_TIMEOUT
            )

    def wait_idle(self) -> None:
        """Wait until every submitted job has run (3.11.10+ closes after ``prepare``)."""
        deadline = time.monotonic() + self.WAIT_TIMEOUT
        while self.executor.done < self.executor.submitted:
            assert time.monotonic() < deadline, "executor jobs did not finish"
            time.sleep(0.002)


@dataclass
class Exchange:
    """One request: the reply (None if aiohttp dropped the connection) and
    the executor jobs aiohttp submitted for it."""

    reply: Reply | None
    jobs: int

    @property
    def status(self) -> int | None:
        return None if self.reply is None else self.reply.status

    @property
    def body(self) -> bytes:
        assert self.reply is not None
        return self.reply.body


class Site:
    """A running server for the app, with its probe."""

    def __init__(self, server: LoopbackServer, probe: ServerProbe, root: Path) -> None:
        self.server = server
        self.probe = probe
        self.root = root

    def request(
        self, path: str, headers: Mapping[str, str] | None = None, method: str = "GET"
    ) -> Exchange:
        """Send one request and wait until aiohttp has finished it completely."""
        finished = self.probe.finished_requests
        jobs = self.probe.executor.submitted
        try:
            reply: Reply | None = self.server.request(method, path, headers)
        except (http.client.HTTPException, ConnectionError):
            # aiohttp 3.9 lets an OSError from FileResponse.prepare escape the
            # handler: it logs it and closes the connection without an answer.
            reply = None
        else:
            assert self.probe.wait_finished(finished + 1), "aiohttp did not finish the request"
        self.probe.wait_idle()
        return Exchange(reply, self.probe.executor.submitted - jobs)


@contextmanager
def serve_site(
    root: Path,
    worker_initializer: Callable[[], None] | None = None,
    make_app: Callable[[Path, ServerProbe], web.Application] = build_app,
) -> Iterator[Site]:
    probe = ServerProbe(worker_initializer)
    try:
        with serve_aiohttp(lambda: make_app(root, probe)) as server:
            yield Site(server, probe, root)
    finally:
        probe.executor.shutdown(wait=True)


def drop_file_permissions() -> None:
    """Executor worker initializer: this thread checks file permissions as
    ``nobody``. Linux's filesystem uid is per thread, and moving it off 0
    clears CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the thread's
    effective set, so root's worker threads get a real EACCES on a mode-000
    file while the rest of the process (pytest, the event loop) is unchanged.
    Not root: nothing to do, the mode already denies the read."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.setfsuid(65534)


# -- reading the telemetry -------------------------------------------------


def only_response(telemetry: Telemetry) -> ReadableSpan:
    found = responses(telemetry)
    assert len(found) == 1, [dict(s.attributes or {}) for s in found]
    return found[0]


def children(telemetry: Telemetry, response: ReadableSpan) -> list[ReadableSpan]:
    span_id = response.context.span_id
    return [s for s in telemetry.spans() if s.parent is not None and s.parent.span_id == span_id]


def child(telemetry: Telemetry, response: ReadableSpan, name: str) -> ReadableSpan:
    found = [s for s in children(telemetry, response) if s.name == name]
    assert len(found) == 1, (name, [s.name for s in children(telemetry, response)])
    return found[0]


def child_names(telemetry: Telemetry, response: ReadableSpan) -> list[str]:
    return sorted(s.name for s in children(telemetry, response))


def wait_jobs(telemetry: Telemetry, response: ReadableSpan) -> list[str]:
    """The ``fileresp.threadpool.job`` of each wait span, sorted."""
    return sorted(
        str((s.attributes or {})["fileresp.threadpool.job"])
        for s in children(telemetry, response)
        if s.name == WAIT
    )


def points(telemetry: Telemetry, name: str) -> list[tuple[dict[str, Any], Any]]:
    return [(dict(p.attributes), p) for p in telemetry.metric_points(name)]


# -- what the test modules' fixtures are made of ---------------------------


@contextmanager
def module_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The files and a server for them; the app is built before any test instruments."""
    with serve_site(make_site(tmp_path_factory.mktemp("aiohttp") / "site")) as running:
        yield running


@contextmanager
def traced_telemetry() -> Iterator[Telemetry]:
    """Fresh in-memory telemetry, instrumented while the context lasts."""
    telemetry = Telemetry()
    try:
        with instrumenting("aiohttp", telemetry):
            yield telemetry
    finally:
        telemetry.shutdown()


def job_kinds(prefix: str, *, open_job: bool) -> list[str]:
    """The ``fileresp.threadpool.job`` of each wait span aiohttp's jobs give."""
    kinds = ["stat", "open"] if open_job else ["stat"]
    if COMBINED_JOB:
        kinds = ["make_response"]
    if prefix == "/static" and STATIC_LOOKUP_JOB:
        kinds.append("lookup")
    return sorted(kinds)
