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
  the context captured here;
- ``FileResponse.prepare`` makes one ``fileresp.response`` per response;
- ``concurrent.futures.ThreadPoolExecutor.submit`` wraps the callable of each
  executor job submitted while a file response is prepared (asyncio's and
  uvloop's ``run_in_executor`` both go through it), measuring the wait for a
  worker and the run time; the same job is submitted, so the number of jobs is
  unchanged. Static routes (aiohttp 3.10+) resolve the path and build the
  ``FileResponse`` in an executor job before ``prepare``: that job is
  recognised by its callable and reported as ``fileresp.threadpool.job=lookup``,
  and the response's trace context is taken from the handler at submit time;
- ``FileResponse._get_file_path_stat_encoding`` (3.10+) or
  ``_get_file_path_stat_and_gzip`` (3.9.2+) times ``fileresp.stat``: the
  lstat of every ``.br``/``.gz`` candidate and the stat of the file.
  ``fileresp.content_encoding`` says which variant was served;
- from 3.11.10, ``FileResponse._make_response`` (one executor job doing stat,
  precondition checks, open and fstat, reported as job ``make_response``) and
  ``pathlib.Path.open`` (acting only inside that job) split the job into
  ``fileresp.stat``, ``fileresp.precondition`` and ``fileresp.open`` with
  timestamps taken in the worker thread;
- up to 3.11.9 the precondition checks run on the event loop between the stat
  job and the open job; ``fileresp.precondition`` spans from the end of the
  stat job to the decision (``_not_modified``, ``_precondition_failed``, the
  open job's submission or the end of ``prepare``), so it includes the loop's
  wake-up after the stat job;
- ``FileResponse._sendfile`` times ``fileresp.send``: ``transfer=sendfile``
  for ``loop.sendfile``, ``transfer=read`` when aiohttp falls back to executor
  reads (``AIOHTTP_NOSENDFILE``, compression, TLS, uvloop).

``fileresp.opened`` is true exactly when Python opened the file. From 3.11.10
aiohttp opens it before the range and method checks, so HEAD, 416 and
zero-length responses are ``opened=true`` there (and not on 3.11.9 and
earlier): that is what aiohttp does, and the telemetry says so. The close of
3.11.10+ is a deferred executor job; it is counted in
``fileresp.threadpool.jobs``, and its wait is recorded in the metrics when it
runs.

Known gap: up to 3.9.5 a static route decides 404/403 on the event loop before
any ``FileResponse`` exists, so those answers have no ``fileresp.response``.

Supported and tested: aiohttp 3.9.5, 3.11.9, 3.11.10 and 3.14.5 on Python 3.11.
"""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter_ns
from typing import Any

from opentelemetry import context as context_api

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

_FILE_RESPONSE = "aiohttp.web_fileresponse:FileResponse"
_STAT_METHODS = ("_get_file_path_stat_encoding", "_get_file_path_stat_and_gzip")
_RECORD_ATTRIBUTE = "_otel_fileresp_record"
_PARENT_ATTRIBUTE = "_otel_fileresp_parent"
# make_response results (aiohttp 3.11.10+ `_FileResponseResult` member names).
_MAKE_RESPONSE_RESULTS = {
    "NOT_MODIFIED": n.PRECONDITION_NOT_MODIFIED,
    "PRE_CONDITION_FAILED": n.PRECONDITION_FAILED,
}


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


def _finish_failed_lookup(record: ResponseRecord, exc: BaseException) -> None:
    record.finish(exc)


class _AiohttpHooks(Hooks):
    """The wrappers; each passes straight through when uninstrumented."""

    # Set by the instrumentor once aiohttp is imported.
    file_response_type: type[Any] = type(None)
    static_resource_type: type[Any] = type(None)

    def _is_static_resolver(self, fn: Any) -> bool:
        return getattr(fn, "__name__", None) == "_resolve_path_to_response" and isinstance(
            getattr(fn, "__self__", None), self.static_resource_type
        )

    def submit(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        telemetry = self.telemetry
        if telemetry is None or not args:
            return wrapped(*args, **kwargs)
        record = current_record()
        try:
            fn = args[0]
            if record is None:
                if not self._is_static_resolver(fn):
                    return wrapped(*args, **kwargs)
                return self._submit_static_lookup(telemetry, wrapped, args, kwargs)
            if record.framework != n.FRAMEWORK_AIOHTTP or record.finished:
                return wrapped(*args, **kwargs)
            kind = self._classify(fn)
            if kind == n.JOB_OPEN and record.request_headers is not None:
                # Up to 3.11.9 the open job follows the on-loop checks that passed.
                _decide_precondition(record, record.request_headers, None, perf_counter_ns())
            job = record.pool_job(kind, fn)
        except Exception:
            log_once("aiohttp.submit", "failed to wrap an executor job")
            return wrapped(*args, **kwargs)
        return wrapped(job, *args[1:], **kwargs)

    def _submit_static_lookup(
        self, telemetry: Telemetry, wrapped: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        record = telemetry.start_record(n.FRAMEWORK_AIOHTTP)
        if record is None:
            return wrapped(*args, **kwargs)
        file_response_type = self.file_response_type

        def keep_if_file_response(record: ResponseRecord, response: Any) -> None:
            if not isinstance(response, file_response_type):
                record.discard()

        # The lookup's run is not part of fileresp.stat: the FileResponse
        # stats the file again in its own job, and that is what is timed.
        job = record.pool_job(
            n.JOB_LOOKUP, args[0], keep_if_file_response, _finish_failed_lookup, times_phase=False
        )
        return wrapped(job, *args[1:], **kwargs)

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
        if self.telemetry is None:
            return
        record = current_record()
        if record is not None and record.framework == n.FRAMEWORK_AIOHTTP:
            # Built by a static route's lookup job: that record is this response's.
            setattr(instance, _RECORD_ATTRIBUTE, record)
        else:
            setattr(instance, _PARENT_ATTRIBUTE, context_api.get_current())

    async def prepare(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        record = self._start(instance)
        if record is None:
            return await wrapped(*args, **kwargs)
        request = args[0] if args else kwargs["request"]
        record.head = request.method == "HEAD"
        record.request_headers = request.headers

        def read_final_state(record: ResponseRecord) -> None:
            record.status = instance.status
            if record.status not in (403, 404):
                _decide_precondition(record, request.headers, None, perf_counter_ns())
                _note_range_ignored(record, request.headers)

        return await run_as_current(
            record, wrapped, *args, before_finish=read_final_state, **kwargs
        )

    def _start(self, response: Any) -> ResponseRecord | None:
        telemetry = self.telemetry
        if telemetry is None or current_record() is not None:
            return None
        try:
            record: ResponseRecord | None = vars(response).pop(_RECORD_ATTRIBUTE, None)
            if record is None or record.finished:
                parent = vars(response).pop(_PARENT_ATTRIBUTE, None)
                record = telemetry.start_record(n.FRAMEWORK_AIOHTTP, parent)
            if record is not None:
                record.set_file(getattr(response, "_path", None), None)
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
        result = wrapped(*args, **kwargs)
        ended = perf_counter_ns()
        try:
            outcome, file_object = result[0].name, result[1]
            stat_end = record.phase_end(n.PHASE_STAT)
            if stat_end is not None and outcome != "NOT_ACCEPTABLE":
                request = args[0] if args else kwargs["request"]
                decided = _MAKE_RESPONSE_RESULTS.get(outcome)
                header = _header_that_decided(request.headers, decided or n.PRECONDITION_PASS)
                if decided is None:
                    decided = n.PRECONDITION_NONE if header is None else n.PRECONDITION_PASS
                open_start = record.phase_start(n.PHASE_OPEN) if file_object else None
                record.precondition(stat_end, open_start or ended, decided, header)
                if open_start is not None:
                    # The open phase includes aiohttp's fstat after the open.
                    record.mark_phase(n.PHASE_OPEN, open_start, ended)
        except Exception:
            log_once("aiohttp.make_response", "failed to read a make_response result")
        return result

    def path_open(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        record = current_record()
        if record is None or record.framework != n.FRAMEWORK_AIOHTTP or self.telemetry is None:
            return wrapped(*args, **kwargs)
        started = perf_counter_ns()
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

    async def sendfile(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        record = current_record()
        if record is None or self.telemetry is None:
            return await wrapped(*args, **kwargs)
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
        ]
        if combined_job:
            patches += [
                Patch(_FILE_RESPONSE, "_make_response", hooks.make_response),
                Patch("pathlib:Path", "open", hooks.path_open),
            ]
        return patches
