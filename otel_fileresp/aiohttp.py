# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""aiohttp file responses: ``web.FileResponse`` and ``web.static`` routes.

Usage::

    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    AiohttpFileResponseInstrumentor().instrument()

``opentelemetry-instrument`` loads it through the ``fileresp_aiohttp`` entry
point (switch it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fileresp_aiohttp``).

What is patched (in place, with wrapt; ``uninstrument()`` restores it):

- ``FileResponse.__init__`` captures the request's trace context while the
  handler runs: contrib's aiohttp-server span ends when the handler returns,
  before aiohttp calls ``prepare``, so ``fileresp.response`` is parented to
  the context captured here. A response built under
  ``suppress_instrumentation()`` (in the handler or a middleware) stays
  unrecorded, although ``prepare`` runs after that block;
- ``FileResponse.prepare`` makes one ``fileresp.response`` per response;
- ``concurrent.futures.ThreadPoolExecutor.submit`` wraps the callable of each
  executor job submitted while a file response is prepared (asyncio's and
  uvloop's ``run_in_executor`` both go through it), measuring the wait for a
  worker and the run time; the same job is submitted, so the number of jobs is
  unchanged. Static routes (aiohttp 3.10+) resolve the path and build the
  ``FileResponse`` in an executor job before ``prepare``: that job is
  recognised by its callable and reported as ``fileresp.threadpool.job=lookup``,
  and the response's trace context is taken from the handler at submit time.
  When the lookup itself answers (403 for a directory), that answer is the
  response;
- ``FileResponse._get_file_path_stat_encoding`` (3.10+) or
  ``_get_file_path_stat_and_gzip`` (3.9.2+) times ``fileresp.stat``: the
  lstat of every ``.br``/``.gz`` candidate and the stat of the file.
  ``fileresp.content_encoding`` says which variant was served (``br``,
  ``gzip`` or ``identity``);
- ``pathlib.Path.open``, acting only while a file response is being served
  (in its executor jobs or in ``prepare``), marks ``fileresp.opened`` and
  times ``fileresp.open``; whoever opens the file (aiohttp's open job, its
  ``_make_response``, or a ``FileResponse`` subclass) is seen;
- from 3.11.10, ``FileResponse._make_response`` (one executor job doing stat,
  precondition checks, open and fstat, reported as job ``make_response``) is
  split into ``fileresp.stat``, ``fileresp.precondition`` (from the end of the
  stat to aiohttp's open, or to the end of the job) and ``fileresp.open``
  (the open and the fstat), with timestamps taken in the worker thread;
- up to 3.11.9 the precondition checks run on the event loop between the stat
  job and the open job; ``fileresp.precondition`` spans from the end of the
  stat job to the decision (``_not_modified``, ``_precondition_failed``, the
  open job's submission, or the end of ``prepare`` for HEAD, 416 and empty
  files), so it includes the loop's wake-up after the stat job;
- ``FileResponse._sendfile`` times ``fileresp.send``: ``transfer=sendfile``
  for ``loop.sendfile``, ``transfer=read`` when aiohttp falls back to executor
  reads (``AIOHTTP_NOSENDFILE``, compression, TLS, uvloop); the reads are
  counted in ``fileresp.read.count`` (aiohttp 3.9's seek job included), never
  one span each.

``fileresp.opened`` is true exactly when Python opened the file; an open that
failed (a permission error: 403) leaves it false and makes no
``fileresp.open``. From 3.11.10 aiohttp opens the file before the range and
method checks, so HEAD, 416 and zero-length responses are ``opened=true``
there (and not on 3.11.9 and earlier): that is what aiohttp does, and the
telemetry says so. The close of 3.11.10+ is a deferred executor job; it is
counted in ``fileresp.threadpool.jobs``, and its wait is recorded in the
metrics when it runs.

``http.response.status_code`` is the status aiohttp sent. aiohttp 3.9 sends
none when a handler's ``FileResponse`` names a missing file or a directory,
or when the file cannot be opened: the ``OSError`` escapes ``prepare`` and
aiohttp closes the connection. Those responses are ``fileresp.outcome=error``
with ``error.type`` (``FileNotFoundError``, ``IsADirectoryError``,
``PermissionError``) and no status code.

Known gaps: up to 3.9.5 a static route decides 404/403 on the event loop
before any ``FileResponse`` exists, so those answers have no
``fileresp.response``. A ``FileResponse`` subclass that overrides ``prepare``
is recorded from its ``super().prepare()`` call on: what its own code does
before that (an open, say) is outside the response.

Supported and tested: aiohttp 3.9.5, 3.11.9, 3.11.10 and 3.14.5 on Python 3.11.
"""

from __future__ import annotations

import pathlib
import threading
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter_ns
from typing import Any, TypeVar

from opentelemetry import context as context_api
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_fileresp import _names as n
from otel_fileresp._core import (
    ResponseRecord,
    Telemetry,
    classify_io_job,
    current_record,
    log_once,
    run_as_current,
)
from otel_fileresp._instrumentor import FileResponseInstrumentor, Hooks
from otel_fileresp._patching import Patch

T = TypeVar("T")

_FILE_RESPONSE = "aiohttp.web_fileresponse:FileResponse"
_STAT_METHODS = ("_get_file_path_stat_encoding", "_get_file_path_stat_and_gzip")
_RECORD_ATTRIBUTE = "_otel_fileresp_record"
_PARENT_ATTRIBUTE = "_otel_fileresp_parent"
_SUPPRESSED_ATTRIBUTE = "_otel_fileresp_suppressed"
# The StaticResource method a static route (aiohttp 3.10+) submits as its lookup job.
_STATIC_RESOLVER = "_resolve_path_to_response"
# make_response results (aiohttp 3.11.10+ `_FileResponseResult` member names).
_MAKE_RESPONSE_RESULTS = {
    "NOT_MODIFIED": n.PRECONDITION_NOT_MODIFIED,
    "PRE_CONDITION_FAILED": n.PRECONDITION_FAILED,
}


class _OpenStarts(threading.local):
    """Start times of the ``Path.open`` calls of the ``_make_response`` job
    running in this worker thread (None outside such a job)."""

    starts: list[int] | None = None


_OPEN_STARTS = _OpenStarts()


def _header_that_decided(headers: Any, result: str) -> str | None:
    """The conditional header that decided ``result``, by RFC 9110 precedence."""
    if result == n.PRECONDITION_NOT_MODIFIED:
        candidates: tuple[str, ...] = ("If-None-Match", "If-Modified-Since")
    elif result == n.PRECONDITION_FAILED:
        candidates = ("If-Match", "If-Unmodified-Since")
    else:
        candidates = ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since")
    return next((h.lower() for h in candidates if h in headers), None)


def _decide_precondition(
    record: ResponseRecord, headers: Any, result: str | None, now: int
) -> None:
    """Close the on-loop precondition phase (aiohttp up to 3.11.9) at ``now``."""
    stat_end = record.phase_end(n.PHASE_STAT)
    if record.precondition_result is not None or stat_end is None:
        return
    header = _header_that_decided(headers, result or n.PRECONDITION_PASS)
    if result is None:
        result = n.PRECONDITION_NONE if header is None else n.PRECONDITION_PASS
    record.precondition(stat_end, max(stat_end, now), result, header)


def _note_range_ignored(record: ResponseRecord, headers: Any) -> None:
    if record.status == 200 and "Range" in headers and "If-Range" in headers:
        end = record.phase_end(n.PHASE_PRECONDITION) or record.phase_end(n.PHASE_STAT)
        if end is not None:
            record.precondition(end, end, n.PRECONDITION_RANGE_IGNORED, "if-range")


def _split_make_response(
    record: ResponseRecord,
    args: Any,
    kwargs: Any,
    result: Any,
    open_starts: list[int],
    ended: int,
) -> None:
    """Split aiohttp 3.11.10+'s ``_make_response`` job (stat, checks, open,
    fstat; ``result`` is None when it raised) into its phases: the checks run
    from the end of the stat to aiohttp's open (the first open after the stat;
    an earlier one is a subclass's), or to the end of the job."""
    try:
        stat_end = record.phase_end(n.PHASE_STAT)
        if stat_end is None or (result is not None and result[0].name == "NOT_ACCEPTABLE"):
            return  # the stat failed or the file is not regular: no check ran
        open_start = next((start for start in open_starts if start >= stat_end), None)
        if result is None and open_start is None:
            return  # raised before the checks were done
        if result is not None and result[1] is None:
            open_start = None  # no file handed back: the checks ended the job
        decided = None if result is None else _MAKE_RESPONSE_RESULTS.get(result[0].name)
        request = args[0] if args else kwargs["request"]
        header = _header_that_decided(request.headers, decided or n.PRECONDITION_PASS)
        if decided is None:
            decided = n.PRECONDITION_NONE if header is None else n.PRECONDITION_PASS
        record.precondition(stat_end, ended if open_start is None else open_start, decided, header)
        if open_start is not None and result is not None:
            # The open phase includes aiohttp's fstat after the open.
            record.mark_phase(n.PHASE_OPEN, open_start, ended)
    except Exception:
        log_once("aiohttp.make_response", "failed to read a make_response result")


def _headers_sent(response: Any) -> bool:
    """Whether aiohttp wrote the response's status line (``prepared`` turns
    false again after ``write_eof`` up to aiohttp 3.10)."""
    return bool(response.prepared or getattr(response, "_eof_sent", False))


def _in_context(context: context_api.Context, fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` run in the worker with ``context`` attached: a static lookup
    submitted under suppress_instrumentation() builds its FileResponse in the
    worker thread, which must see the suppression too."""

    def run_in_context(*args: Any, **kwargs: Any) -> T:
        token = context_api.attach(context)
        try:
            return fn(*args, **kwargs)
        finally:
            context_api.detach(token)

    return run_in_context


def _finish_failed_lookup(record: ResponseRecord, exc: BaseException) -> None:
    record.finish(exc)


class _AiohttpHooks(Hooks):
    """The wrappers; each passes straight through when uninstrumented."""

    # Set by the instrumentor once aiohttp is imported.
    file_response_type: type[Any] = type(None)
    static_resource_type: type[Any] = type(None)

    def submit(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        telemetry = self.telemetry
        if telemetry is None or not args:
            return wrapped(*args, **kwargs)
        try:
            record = current_record()
            if record is None and getattr(args[0], "__name__", None) != _STATIC_RESOLVER:
                job = None  # not a file response's job: as cheap as can be
            else:
                job = self._job(telemetry, record, args)
        except Exception:
            log_once("aiohttp.submit", "failed to wrap an executor job")
            job = None
        # The framework's own submit is called exactly once, outside our
        # error handling: its exceptions are the framework's.
        if job is None:
            return wrapped(*args, **kwargs)
        return wrapped(job, *args[1:], **kwargs)

    def _job(
        self, telemetry: Telemetry, record: ResponseRecord | None, args: tuple[Any, ...]
    ) -> Callable[..., Any] | None:
        """The callable to submit in place of ``args[0]``, or None to leave it."""
        fn = args[0]
        if record is None:
            if isinstance(getattr(fn, "__self__", None), self.static_resource_type):
                return self._static_lookup_job(telemetry, fn, args[1:])
            return None
        if record.framework != n.FRAMEWORK_AIOHTTP or record.finished:
            return None
        kind = self._classify(fn)
        if kind == n.JOB_OPEN and record.request_headers is not None:
            # Up to 3.11.9 the open job follows the on-loop checks that passed.
            _decide_precondition(record, record.request_headers, None, perf_counter_ns())
        return record.pool_job(kind, fn)

    def _static_lookup_job(
        self, telemetry: Telemetry, fn: Callable[..., Any], fn_args: tuple[Any, ...]
    ) -> Callable[..., Any] | None:
        if telemetry.inert():
            return None  # nothing records: the job stays as it is
        # Started here, in the handler: the request's span is current.
        record = telemetry.start_record(n.FRAMEWORK_AIOHTTP)
        if record is None:
            return _in_context(context_api.get_current(), fn)  # suppressed
        if fn_args and isinstance(fn_args[0], pathlib.PurePath):
            # The path asked for: named even when the lookup answers 403/404
            # itself; the FileResponse it builds names the resolved path.
            record.set_file(fn_args[0], None)
        file_response_type = self.file_response_type

        def keep_if_file_response(record: ResponseRecord, response: Any) -> None:
            if not isinstance(response, file_response_type):
                record.discard()

        # The lookup's run is not part of fileresp.stat: the FileResponse
        # stats the file again in its own job, and that is what is timed.
        return record.pool_job(
            n.JOB_LOOKUP, fn, keep_if_file_response, _finish_failed_lookup, times_phase=False
        )

    @staticmethod
    def _classify(fn: Any) -> str:
        name = getattr(fn, "__name__", None)
        if name in _STAT_METHODS:
            return n.JOB_STAT
        if name == "_make_response":
            return n.JOB_MAKE_RESPONSE
        if name == "_seek_and_read":
            return n.JOB_READ
        owner = getattr(fn, "__self__", None)
        if name == "open" and isinstance(owner, pathlib.PurePath):
            return n.JOB_OPEN
        return classify_io_job(fn)

    def init(self, wrapped: Callable[..., None], instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        telemetry = self.telemetry
        if telemetry is None:
            return
        try:
            if telemetry.inert():
                return  # nothing records (prepare() asks again)
            record = current_record()
            if record is not None and record.framework == n.FRAMEWORK_AIOHTTP:
                # Built by a static route's lookup job: that record is this response's.
                setattr(instance, _RECORD_ATTRIBUTE, record)
            elif not is_instrumentation_enabled():
                # Built under suppress_instrumentation() (in the handler or a
                # middleware); prepare() runs after that block has exited.
                setattr(instance, _SUPPRESSED_ATTRIBUTE, True)
            else:
                setattr(instance, _PARENT_ATTRIBUTE, context_api.get_current())
        except Exception:
            log_once("aiohttp.init", "failed to note the trace context of a FileResponse")

    # ``prepare`` and ``sendfile`` are wrapped by plain functions returning the
    # awaitable: aiohttp's own coroutine when nothing records (no extra frame
    # for every resumption), else ours.

    def prepare(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[Any]:
        record = self._start(instance, args, kwargs)
        if record is None:
            return wrapped(*args, **kwargs)

        def read_final_state(record: ResponseRecord) -> None:
            # The status aiohttp sent, if it sent one: when prepare raises
            # before the headers are written (aiohttp 3.9 on a missing file or
            # a directory), no status was sent and the outcome is ``error``.
            if _headers_sent(instance):
                record.status = instance.status
            headers = record.request_headers
            if record.status not in (None, 403, 404) and headers is not None:
                _decide_precondition(record, headers, None, perf_counter_ns())
                _note_range_ignored(record, headers)

        return run_as_current(record, wrapped, *args, before_finish=read_final_state, **kwargs)

    def _start(self, response: Any, args: Any, kwargs: Any) -> ResponseRecord | None:
        telemetry = self.telemetry
        if telemetry is None or telemetry.inert() or current_record() is not None:
            return None
        try:
            if vars(response).pop(_SUPPRESSED_ATTRIBUTE, False):
                return None
            record: ResponseRecord | None = vars(response).pop(_RECORD_ATTRIBUTE, None)
            if record is None or record.finished:
                parent = vars(response).pop(_PARENT_ATTRIBUTE, None)
                record = telemetry.start_record(n.FRAMEWORK_AIOHTTP, parent)
            if record is not None:
                request = args[0] if args else kwargs["request"]
                record.head = request.method == "HEAD"
                record.request_headers = request.headers
                record.set_file(getattr(response, "_path", None), None)
                telemetry.pools.note_asyncio_executor()
            return record
        except Exception:
            log_once("aiohttp.start", "failed to start recording a file response")
            return None

    def stat(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        record = current_record()
        if record is None or self.telemetry is None:
            return wrapped(*args, **kwargs)
        started = perf_counter_ns()
        try:
            result = wrapped(*args, **kwargs)
        finally:
            record.mark_phase(n.PHASE_STAT, started, perf_counter_ns())
        try:
            _, stat_result, encoding = result
            record.file_size = stat_result.st_size
            if isinstance(encoding, bool):  # 3.9: "is it the .gz file"
                encoding = "gzip" if encoding else None
            record.content_encoding = encoding or "identity"
        except Exception:
            log_once("aiohttp.stat", "failed to read a stat result")
        return result

    def make_response(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        record = current_record()
        if record is None or self.telemetry is None:
            return wrapped(*args, **kwargs)
        outer = _OPEN_STARTS.starts
        open_starts: list[int] = []
        _OPEN_STARTS.starts = open_starts
        try:
            result = wrapped(*args, **kwargs)
        except BaseException:
            _split_make_response(record, args, kwargs, None, open_starts, perf_counter_ns())
            raise
        finally:
            _OPEN_STARTS.starts = outer
        _split_make_response(record, args, kwargs, result, open_starts, perf_counter_ns())
        return result

    def path_open(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        record = current_record()
        if record is None or record.framework != n.FRAMEWORK_AIOHTTP or self.telemetry is None:
            return wrapped(*args, **kwargs)
        started = perf_counter_ns()
        open_starts = _OPEN_STARTS.starts
        if open_starts is not None:
            open_starts.append(started)
        file_object = wrapped(*args, **kwargs)
        record.mark_phase(n.PHASE_OPEN, started, perf_counter_ns())
        record.opened = True
        return file_object

    def decision(self, result: str) -> Callable[..., Any]:
        """Wrapper of ``_not_modified`` / ``_precondition_failed``: the on-loop decision."""

        def decided(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
            record = current_record()
            if record is not None and self.telemetry is not None:
                _decide_precondition(record, record.request_headers, result, perf_counter_ns())
            return wrapped(*args, **kwargs)

        return decided

    def sendfile(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[Any]:
        record = current_record()
        if record is None or self.telemetry is None:
            return wrapped(*args, **kwargs)
        return _timed_sendfile(record, wrapped, args, kwargs)


async def _timed_sendfile(
    record: ResponseRecord, wrapped: Callable[..., Awaitable[Any]], args: Any, kwargs: Any
) -> Any:
    """``loop.sendfile``, as the send phase of ``record``."""
    started = perf_counter_ns()
    record.transfer = n.TRANSFER_SENDFILE
    try:
        writer = await wrapped(*args, **kwargs)
        record.bytes_sent += args[3] if len(args) > 3 else kwargs["count"]
        return writer
    finally:
        record.body_done_ns = ended = perf_counter_ns()
        record.mark_phase(n.PHASE_SEND, started, ended)


class AiohttpFileResponseInstrumentor(FileResponseInstrumentor[_AiohttpHooks]):
    """Instruments aiohttp's ``web.FileResponse`` and ``web.static`` routes."""

    framework_distribution = "aiohttp"
    framework_module = "aiohttp"
    framework_requirements = ("aiohttp >= 3.9.2",)
    hooks_type = _AiohttpHooks

    def _patches(self, hooks: _AiohttpHooks) -> Sequence[Patch]:
        from aiohttp.web_fileresponse import FileResponse
        from aiohttp.web_urldispatcher import StaticResource

        hooks.file_response_type = FileResponse
        hooks.static_resource_type = StaticResource
        stat_method = next((m for m in _STAT_METHODS if hasattr(FileResponse, m)), _STAT_METHODS[0])
        combined_job = hasattr(FileResponse, "_make_response")  # aiohttp 3.11.10+
        patches = [
            Patch("concurrent.futures.thread:ThreadPoolExecutor", "submit", hooks.submit),
            Patch(_FILE_RESPONSE, "__init__", hooks.init),
            Patch(_FILE_RESPONSE, "prepare", hooks.prepare),
            Patch(_FILE_RESPONSE, stat_method, hooks.stat),
            Patch(_FILE_RESPONSE, "_not_modified", hooks.decision(n.PRECONDITION_NOT_MODIFIED)),
            Patch(_FILE_RESPONSE, "_precondition_failed", hooks.decision(n.PRECONDITION_FAILED)),
            Patch(_FILE_RESPONSE, "_sendfile", hooks.sendfile),
            # Every release: an open by anything serving the response (aiohttp's
            # open job or `_make_response`, a subclass) sets fileresp.opened.
            Patch("pathlib:Path", "open", hooks.path_open),
        ]
        if combined_job:
            patches.append(Patch(_FILE_RESPONSE, "_make_response", hooks.make_response))
        return patches
