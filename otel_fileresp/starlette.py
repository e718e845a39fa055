# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Starlette (and FastAPI) file responses: ``StaticFiles`` and ``FileResponse``.

Usage::

    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    StarletteFileResponseInstrumentor().instrument()

``opentelemetry-instrument`` loads it through the ``fileresp_starlette`` entry
point (switch it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fileresp_starlette``).

What is patched (in place, with wrapt; ``uninstrument()`` restores it):

- ``StaticFiles.__call__`` and ``FileResponse.__call__`` open one
  ``fileresp.response`` per request and observe the ASGI messages sent
  (status, body bytes, ``http.response.pathsend``);
- ``anyio.to_thread.run_sync`` wraps the callable of each worker-thread job
  made while a file response is being served (``lookup_path`` or ``os.stat``,
  ``open``, every read, seek and close): the job's wait for a worker token and
  its run time are measured from the first line the worker runs, and the
  same job is submitted, so the number of jobs is unchanged;
- ``StaticFiles.is_not_modified`` and ``FileResponse._should_use_range``
  (If-Range, Starlette 0.39+) time the precondition checks.

Phases as Starlette does them: ``fileresp.stat`` is the ``lookup_path`` job
(realpath + stat) or the ``os.stat`` jobs; a 304 from ``StaticFiles`` is decided
by ``is_not_modified`` before ``FileResponse`` runs, so it has no
``fileresp.open``; ``fileresp.send`` runs from the first read job (or body
message) to the last body message, with the reads aggregated on it. With
``http.response.pathsend`` the server opens and sends the file:
``fileresp.transfer=pathsend``, ``fileresp.opened=false`` and
``fileresp.bytes`` is the file size handed over. A bare ``FileResponse``
never answers 304 (Starlette evaluates only If-Range there).

A client that leaves mid-body: Starlette 1.8+ sees ``http.disconnect`` and
stops without an exception, reported as ``error.type=incomplete_body``.
Earlier releases keep reading the file into the closed connection (uvicorn
drops the messages), so the response ends ``sent`` with every byte counted.

Supported and tested: Starlette 0.16.0, 0.38.6, 0.41.3 and 1.10.0 (anyio
3.7 and 4.x), on Python 3.11.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from time import perf_counter_ns
from typing import Any

from otel_fileresp import _names as n
from otel_fileresp._core import (
    ResponseRecord,
    classify_io_job,
    current_record,
    log_once,
    run_as_current,
)
from otel_fileresp._instrumentor import FileResponseInstrumentor, Hooks
from otel_fileresp._patching import Patch

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
OnResult = Callable[[ResponseRecord, Any], None] | None

_CONDITIONAL_HEADERS = ("if-none-match", "if-modified-since")


def _asgi_arguments(scope: Scope, receive: Any, send: Send) -> tuple[Scope, Any, Send]:
    return scope, receive, send


def _observed_send(record: ResponseRecord, send: Send) -> Send:
    """``send``, noting the status, body bytes and end of the body."""

    async def send_observed(message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            record.status = message.get("status")
            record.body_pending = True
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if body:
                record.body_sent(len(body), perf_counter_ns())
            if not message.get("more_body", False):
                await send(message)
                record.body_done_ns = done = perf_counter_ns()
                record.body_pending = False
                if record.has_phase(n.PHASE_SEND):
                    record.mark_phase(n.PHASE_SEND, done, done)
                return
        elif kind == "http.response.pathsend":
            started = perf_counter_ns()
            record.transfer = n.TRANSFER_PATHSEND
            record.bytes_sent = record.file_size or 0
            await send(message)
            record.body_done_ns = done = perf_counter_ns()
            record.body_pending = False
            record.mark_phase(n.PHASE_SEND, started, done)
            return
        await send(message)

    return send_observed


def _note_lookup(record: ResponseRecord, result: Any) -> None:
    full_path, stat_result = result
    if stat_result is not None and stat.S_ISREG(stat_result.st_mode):
        record.set_file(full_path, stat_result.st_size)


def _note_stat_of(path: Any) -> Callable[[ResponseRecord, Any], None]:
    def note_stat(record: ResponseRecord, stat_result: Any) -> None:
        if stat.S_ISREG(stat_result.st_mode):
            record.set_file(path, stat_result.st_size)

    return note_stat


def _classify(fn: Callable[..., Any], args: Sequence[Any]) -> tuple[str, OnResult]:
    if getattr(fn, "__name__", None) == "lookup_path":
        return n.JOB_LOOKUP, _note_lookup
    kind = classify_io_job(fn)
    if kind == n.JOB_STAT and args and isinstance(args[0], str | os.PathLike):
        return kind, _note_stat_of(args[0])
    return kind, None


class _StarletteHooks(Hooks):
    """The wrappers; each passes straight through when uninstrumented."""

    def run_sync(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        record = current_record()
        if record is None or self.telemetry is None or not args:
            return wrapped(*args, **kwargs)
        fn = args[0]
        try:
            kind, on_result = _classify(fn, args[1:])
            # After the last body byte only the file's close still belongs to
            # the response (not the app's background tasks).
            if record.body_done_ns is not None and kind != n.JOB_CLOSE:
                return wrapped(*args, **kwargs)
            job = record.pool_job(kind, fn, on_result)
        except Exception:
            log_once("starlette.run_sync", "failed to wrap a worker-thread job")
            return wrapped(*args, **kwargs)
        return wrapped(job, *args[1:], **kwargs)

    # The two ASGI entry points are plain functions returning the awaitable:
    # the framework's own coroutine when nothing records (no extra frame for
    # every resumption of the request), else ``run_as_current``'s.

    def static_files_call(
        self, wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[None]:
        record = self._start(args, kwargs, None)
        if record is None:
            return wrapped(*args, **kwargs)
        scope, receive, send = _asgi_arguments(*args, **kwargs)
        return run_as_current(record, wrapped, scope, receive, _observed_send(record, send))

    def file_response_call(
        self, wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[None]:
        outer = current_record()
        if outer is not None and outer.body_done_ns is None:
            # Served by StaticFiles, whose record (and send observer) covers it.
            return wrapped(*args, **kwargs)
        record = self._start(args, kwargs, instance)
        if record is None:
            return wrapped(*args, **kwargs)
        scope, receive, send = _asgi_arguments(*args, **kwargs)
        return run_as_current(record, wrapped, scope, receive, _observed_send(record, send))

    def _start(self, args: Any, kwargs: Any, response: Any) -> ResponseRecord | None:
        telemetry = self.telemetry
        if telemetry is None or telemetry.inert():
            return None
        try:
            scope = _asgi_arguments(*args, **kwargs)[0]
            if scope.get("type") != "http":
                return None
            record = telemetry.start_record(n.FRAMEWORK_STARLETTE)
            if record is None:
                return None
            telemetry.pools.note_anyio_limiter()
            record.head = scope.get("method") == "HEAD"
            if response is not None:
                stat_result = getattr(response, "stat_result", None)
                record.set_file(
                    getattr(response, "path", None),
                    None if stat_result is None else stat_result.st_size,
                )
            return record
        except Exception:
            log_once("starlette.start", "failed to start recording a file response")
            return None

    def is_not_modified(
        self, wrapped: Callable[..., bool], instance: Any, args: Any, kwargs: Any
    ) -> bool:
        record = current_record()
        if record is None or self.telemetry is None:
            return wrapped(*args, **kwargs)
        started = perf_counter_ns()
        not_modified = wrapped(*args, **kwargs)
        ended = perf_counter_ns()
        try:
            request_headers = args[1] if len(args) > 1 else kwargs["request_headers"]
            header = next((h for h in _CONDITIONAL_HEADERS if h in request_headers), None)
            if not_modified:
                result = n.PRECONDITION_NOT_MODIFIED
            else:
                result = n.PRECONDITION_NONE if header is None else n.PRECONDITION_PASS
            record.precondition(started, ended, result, header)
        except Exception:
            log_once("starlette.is_not_modified", "failed to record a precondition check")
        return not_modified

    def should_use_range(
        self, wrapped: Callable[..., bool], instance: Any, args: Any, kwargs: Any
    ) -> bool:
        record = current_record()
        if record is None or self.telemetry is None:
            return wrapped(*args, **kwargs)
        started = perf_counter_ns()
        use_range = wrapped(*args, **kwargs)
        result = n.PRECONDITION_PASS if use_range else n.PRECONDITION_RANGE_IGNORED
        record.precondition(started, perf_counter_ns(), result, "if-range")
        return use_range


class StarletteFileResponseInstrumentor(FileResponseInstrumentor[_StarletteHooks]):
    """Instruments Starlette's ``StaticFiles`` and ``FileResponse``."""

    framework_distribution = "starlette"
    framework_module = "starlette"
    framework_requirements = ("starlette >= 0.15",)
    hooks_type = _StarletteHooks

    def _patches(self, hooks: _StarletteHooks) -> Sequence[Patch]:
        return (
            Patch("anyio.to_thread", "run_sync", hooks.run_sync),
            Patch("starlette.staticfiles:StaticFiles", "__call__", hooks.static_files_call),
            Patch("starlette.staticfiles:StaticFiles", "is_not_modified", hooks.is_not_modified),
            Patch("starlette.responses:FileResponse", "__call__", hooks.file_response_call),
            # If-Range evaluation exists from Starlette 0.39.
            Patch(
                "starlette.responses:FileResponse",
                "_should_use_range",
                hooks.should_use_range,
                required=False,
            ),
        )
