# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Starlette (and FastAPI) file responses: ``StaticFiles`` and ``FileResponse``.

Usage::

    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    StarletteFileResponseInstrumentor().instrument()

``opentelemetry-instrument`` loads it through the ``fileresp_starlette`` entry
point (switch it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fileresp_starlette``).

What is patched (in place, see :mod:`otel_fileresp._patching`: wrapt for
the coroutine functions and the worker pool, a plain function for the other
methods; ``uninstrument()`` restores it):

- ``StaticFiles.__call__`` and ``FileResponse.__call__`` open one
  ``fileresp.response`` per request and observe the ASGI messages sent
  (status, ``content-length``, body bytes, ``http.response.pathsend``);
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
message) to the start of the ``send`` of the body message carrying the last
byte, with the reads aggregated on it. Every message is stamped at the start
of its ``send`` (the server may write it to the socket during the call), so
the response never ends later than the client's last byte. With
``http.response.pathsend`` the server opens and sends the file:
``fileresp.transfer=pathsend``, ``fileresp.opened=false`` and
``fileresp.bytes`` is the file size handed over. A bare ``FileResponse``
never answers 304 (Starlette evaluates only If-Range there).

The served file is the path ``lookup_path`` found (``StaticFiles``) or the
``FileResponse``'s own path. An ``os.stat`` job is the stat phase only for
that path (or inside Starlette 0.15-0.16's async ``lookup_path``, whose
result names it); a stat of any other path (a subclass's sidecar stat of a
manifest, ``StaticFiles``' check of its directory) is a pool job of the
response, nothing more. ``fileresp.opened`` is set by any open of the served
file in the response's context (Python's ``open`` audit event: Starlette's
open job, or app code reading it), and only reads of the file object
Starlette's open job returned are body reads.

``fileresp.precondition.header`` is the header that decided, by Starlette's
own precedence: when both If-None-Match and If-Modified-Since are sent and
the answer is 304, Starlette's check is asked again with If-None-Match alone
(a pure function of the headers: no I/O) to tell which one it was.

Statuses: only a status Starlette handed to the server is recorded. When
``StaticFiles`` raises an ``HTTPException`` (Starlette 0.17+: 404, 405, 401),
the application turns it into a response above the file response; the record
says ``not_found``, ``method_not_allowed`` or ``forbidden`` with no status.
The common single-page-app fallback (an exception handler answering
``FileResponse("index.html")`` for a 404) is therefore two file responses
under the request's span: the lookup that found nothing (``not_found``, no
status) and the fallback page (``sent``, 200, ``file.name=index.html``).

A client that leaves mid-body: Starlette 1.8+ sees ``http.disconnect`` and
stops without an exception, reported as ``error.type=incomplete_body``, unless
the whole body announced by ``content-length`` had been handed over already
(a 0-byte file, a HEAD, a 304 are complete with their head). Earlier releases
keep reading the file into the closed connection, and uvicorn and hypercorn
drop those messages without telling the app: their own state says the
client left (:mod:`otel_fileresp._asgi_servers`), so those messages are not
handed over and the response ends ``incomplete_body`` too.

Supported and tested: see docs/compatibility.md.
"""

from __future__ import annotations

import builtins
import inspect
import io
import os
import stat
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from contextvars import ContextVar
from time import perf_counter_ns
from typing import Any, Final

from otel_fileresp import _lifecycle
from otel_fileresp import _names as n
from otel_fileresp._asgi_servers import Flag, client_gone_flag
from otel_fileresp._instrumentor import FileResponseInstrumentor, Hooks
from otel_fileresp._log import failed
from otel_fileresp._patching import Patch
from otel_fileresp._pools import POOL_ANYIO_THREADS
from otel_fileresp._record import ResponseRecord, State, current_scope, serve_as_current

AsgiScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
OnResult = Callable[[ResponseRecord, Any], None]

_IF_NONE_MATCH: Final = "if-none-match"
_IF_MODIFIED_SINCE: Final = "if-modified-since"
_READ_METHODS: Final = frozenset({"read", "read1", "readinto", "readinto1", "seek"})


def _asgi_arguments(scope: AsgiScope, receive: Any, send: Send) -> tuple[AsgiScope, Any, Send]:
    return scope, receive, send


def _content_length(headers: Any) -> int | None:
    for name, value in headers or ():
        if len(name) == 14 and name.lower() == b"content-length":  # no lower() for others
            try:
                return int(value)
            except ValueError:
                return None
    return None


_WEBSOCKET_DENIAL: Final = "websocket."
_COMPLETE: Final = State.COMPLETE  # a global: an enum member read from its class is slow


def _handed_over(record: ResponseRecord, message: Message, started_ns: int) -> None:
    """``message`` went to the server, by a ``send`` that began at
    ``started_ns``: tell the record, with that time (the bytes may leave
    during the call; see the record's rules)."""
    try:
        kind = message.get("type")
        if (
            kind != "http.response.body"
            and isinstance(kind, str)
            and kind.startswith(_WEBSOCKET_DENIAL)
        ):
            # A FileResponse refusing a websocket (``websocket.http.response.*``).
            kind = kind[len(_WEBSOCKET_DENIAL) :]
        if kind == "http.response.body":
            size = len(message.get("body", b""))
            final = not message.get("more_body", False)
        elif kind == "http.response.start":
            status = message.get("status", 200)
            length = _content_length(message.get("headers"))
        elif kind != "http.response.pathsend":
            return
    except Exception:
        failed("starlette.send")
        return
    if kind == "http.response.body":
        record.body_sent(size, started_ns, final=final)
    elif kind == "http.response.start":
        record.head_sent(status, started_ns, length)
    else:  # the server opens and sends the file: its size is what it was handed
        record.body_started(started_ns, n.TRANSFER_PATHSEND)
        record.body_sent(record.file_size or 0, started_ns, final=True)


def _observed_send(record: ResponseRecord, send: Send) -> Send:
    """``send``, telling the record what was handed to the server, stamped at
    the start of the ``send`` that handed it over.

    A message counts once ``send`` returned, or when the sending task was
    cancelled while the server had it (trio's hypercorn delivers the final
    body message, then cancels the sender on ``http.disconnect``); an
    exception from the server (``OSError``: the client is gone) means it was
    not delivered, and so does a message the server drops because the client
    left (see :mod:`otel_fileresp._asgi_servers`)."""

    gone: Flag | None = None
    try:
        gone = client_gone_flag(send)
    except Exception:
        failed("starlette.send")

    async def send_observed(message: Message) -> None:
        started = perf_counter_ns()
        if gone is not None and getattr(*gone):
            # The client left: the server drops what it is sent now, so it is
            # not handed over (the response ends incomplete unless every
            # byte owed went before).
            await send(message)
            return
        try:
            await send(message)
        except BaseException as exc:
            import anyio  # Starlette's own dependency; only on this path

            if isinstance(exc, anyio.get_cancelled_exc_class()):
                _handed_over(record, message, started)
            raise
        _handed_over(record, message, started)

    return send_observed


def _note_lookup(record: ResponseRecord, result: Any) -> None:
    full_path, stat_result = result
    if stat_result is not None and stat.S_ISREG(stat_result.st_mode):
        record.looked_up(full_path, stat_result.st_size)


def _note_stat_of(path: Any) -> OnResult:
    def note_stat(record: ResponseRecord, stat_result: Any) -> None:
        if stat.S_ISREG(stat_result.st_mode) and record.is_served(path):
            record.looked_up(path, stat_result.st_size)

    return note_stat


# True while Starlette 0.15-0.16's async ``lookup_path`` runs: its ``os.stat``
# jobs are the lookup's (the served file is what it returns).
_IN_ASYNC_LOOKUP: Final[ContextVar[bool]] = ContextVar("otel_fileresp_lookup", default=False)


def _submit(record: ResponseRecord, args: Sequence[Any]) -> Callable[..., Any] | None:
    """The job to submit in place of ``args[0]`` (None: submit it unchanged)."""
    fn = args[0]
    if fn is builtins.open:
        return record.wrap_job(fn, n.JOB_OPEN, opens=args[1] if len(args) > 1 else None)
    if fn is os.stat:
        # The served file's stat (a FileResponse without stat_result), or the
        # async lookup's; any other path (an app's sidecar stat of a
        # manifest, StaticFiles' check of its directory) is not the stat phase.
        path = args[1] if len(args) > 1 else None
        if _IN_ASYNC_LOOKUP.get() or record.is_served(path):
            return record.wrap_job(fn, n.JOB_STAT, on_result=_note_stat_of(path))
        return record.wrap_job(fn, n.JOB_OTHER)
    name = getattr(fn, "__name__", None)
    if not record.detailed:
        # Lean: only the lookup's result matters (the served file); what
        # any other job is, nothing reads.
        if name == "lookup_path":
            return record.wrap_job(fn, n.JOB_LOOKUP, on_result=_note_lookup)
        return record.wrap_job(fn)
    if name in _READ_METHODS or name == "close":
        owner = getattr(fn, "__self__", None)
        if type(owner) in _IO_TYPES or _is_io(owner):
            kind = n.JOB_CLOSE if name == "close" else n.JOB_READ
            return record.wrap_job(fn, kind, reads=owner)
    elif name == "lookup_path":
        return record.wrap_job(fn, n.JOB_LOOKUP, on_result=_note_lookup)
    return record.wrap_job(fn, n.JOB_OTHER)


# The file object types met so far (io.IOBase is an ABC: its check is a
# Python call, asked once per type).
_IO_TYPES: set[type] = set()


def _is_io(owner: object) -> bool:
    if isinstance(owner, io.IOBase):
        if len(_IO_TYPES) < 64:
            _IO_TYPES.add(type(owner))
        return True
    return False


def _header_that_decided(
    is_not_modified: Callable[..., bool],
    response_headers: Any,
    request_headers: Any,
    not_modified: bool,
) -> str | None:
    """The conditional header that decided, by this Starlette release's precedence."""
    if_none_match = request_headers.get(_IF_NONE_MATCH)
    if_modified_since = _IF_MODIFIED_SINCE in request_headers
    if not if_none_match:
        return _IF_MODIFIED_SINCE if if_modified_since else None
    if not (not_modified and if_modified_since):
        return _IF_NONE_MATCH
    from starlette.datastructures import Headers

    alone = Headers(headers={_IF_NONE_MATCH: if_none_match})
    return _IF_NONE_MATCH if is_not_modified(response_headers, alone) else _IF_MODIFIED_SINCE


class _StarletteHooks(Hooks):
    """The wrappers; each passes straight through when nothing records."""

    def run_sync(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        scope = current_scope()
        if scope is None or not args:
            return wrapped(*args, **kwargs)
        job = None
        try:
            job = _submit(scope.record, args)
        except Exception:
            failed("starlette.run_sync")
        if job is None:
            return wrapped(*args, **kwargs)
        return wrapped(job, *args[1:], **kwargs)

    # The two ASGI entry points are plain functions returning the awaitable:
    # the framework's own coroutine when nothing records (no extra frame for
    # every resumption of the request), else ``serve_as_current``'s.

    def static_files_call(
        self, wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[None]:
        record = self._start(args, kwargs, None)
        if record is None:
            return wrapped(*args, **kwargs)
        scope, receive, send = args if len(args) == 3 else _asgi_arguments(*args, **kwargs)
        return serve_as_current(record, wrapped, scope, receive, _observed_send(record, send))

    def file_response_call(
        self, wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[None]:
        outer = current_scope()
        if outer is not None and outer.record.state < _COMPLETE:
            # Served by StaticFiles, whose record (and send observer) covers it.
            try:
                served = outer.record
                served.serves(instance.path, _size_of(instance) if served.detailed else None)
            except Exception:
                failed("starlette.file_response")
            return wrapped(*args, **kwargs)
        record = self._start(args, kwargs, instance)
        if record is None:
            return wrapped(*args, **kwargs)
        scope, receive, send = args if len(args) == 3 else _asgi_arguments(*args, **kwargs)
        return serve_as_current(record, wrapped, scope, receive, _observed_send(record, send))

    def _start(self, args: Any, kwargs: Any, response: Any) -> ResponseRecord | None:
        telemetry = self.telemetry
        if telemetry is None or telemetry.inert():
            return None
        self.verify_patches()
        try:
            scope = args[0] if len(args) == 3 else _asgi_arguments(*args, **kwargs)[0]
            kind = scope.get("type")
            # A FileResponse may also refuse a websocket with a file (the ASGI
            # websocket denial response); StaticFiles serves HTTP only.
            if kind != "http" and not (kind == "websocket" and response is not None):
                return None
            record = telemetry.start_record(head=scope.get("method") == "HEAD")
            if record is None:
                return None
            telemetry.note_pool(POOL_ANYIO_THREADS)
            if response is not None:
                record.serves(response.path, _size_of(response))
                if response.stat_result is None and record.detailed:  # stat in a job
                    record.expect(n.PHASE_STAT, "the FileResponse's os.stat job")
            elif record.detailed:
                record.expect(n.PHASE_STAT, "the StaticFiles.lookup_path job")
            return record
        except Exception:
            failed("starlette.start")
            return None

    def is_not_modified(
        self, wrapped: Callable[..., bool], instance: Any, args: Any, kwargs: Any
    ) -> bool:
        return _timed_check(wrapped, args, kwargs, _not_modified_decision)

    def async_lookup_path(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[Any]:
        """Starlette 0.15-0.16's ``lookup_path`` (a coroutine): its result is
        the served file."""
        scope = current_scope()
        if scope is None:
            return wrapped(*args, **kwargs)
        return _looked_up(scope.record, wrapped(*args, **kwargs))

    def should_use_range(
        self, wrapped: Callable[..., bool], instance: Any, args: Any, kwargs: Any
    ) -> bool:
        return _timed_check(wrapped, args, kwargs, _range_decision)


Decision = Callable[[Callable[..., bool], Any, Any, bool], tuple["str | None", "str | None"]]


def _timed_check(wrapped: Callable[..., bool], args: Any, kwargs: Any, decide: Decision) -> bool:
    """One of Starlette's precondition checks, timed: ``decide`` reads its
    answer as the precondition's result and the header that decided it."""
    scope = current_scope()
    if scope is None or not scope.record.detailed:
        return wrapped(*args, **kwargs)
    started = perf_counter_ns()
    answer = wrapped(*args, **kwargs)
    ended = perf_counter_ns()
    try:
        result, header = decide(wrapped, args, kwargs, answer)
    except Exception:
        failed("starlette.precondition")
    else:
        scope.record.precondition(result, header, ended, started)
    return answer


def _not_modified_decision(
    is_not_modified: Callable[..., bool], args: Any, kwargs: Any, not_modified: bool
) -> tuple[str | None, str | None]:
    """``StaticFiles.is_not_modified``: 304, or no check failed; the header that decided."""
    response_headers, request_headers = _headers_of(*args, **kwargs)
    header = _header_that_decided(is_not_modified, response_headers, request_headers, not_modified)
    return (n.PRECONDITION_NOT_MODIFIED if not_modified else None), header


def _range_decision(
    should_use_range: Callable[..., bool], args: Any, kwargs: Any, use_range: bool
) -> tuple[str | None, str | None]:
    """``FileResponse._should_use_range``: If-Range matched, or the range is ignored."""
    return (n.PRECONDITION_PASS if use_range else n.PRECONDITION_RANGE_IGNORED), n.HEADER_IF_RANGE


async def _looked_up(record: ResponseRecord, lookup: Awaitable[Any]) -> Any:
    token = _IN_ASYNC_LOOKUP.set(True)
    try:
        result = await lookup
    finally:
        _IN_ASYNC_LOOKUP.reset(token)
    try:
        _note_lookup(record, result)
    except Exception:
        failed("starlette.lookup")
    return result


def _headers_of(response_headers: Any, request_headers: Any) -> tuple[Any, Any]:
    return response_headers, request_headers


def _size_of(response: Any) -> int | None:
    stat_result = getattr(response, "stat_result", None)
    return None if stat_result is None else int(stat_result.st_size)


class StarletteFileResponseInstrumentor(FileResponseInstrumentor[_StarletteHooks]):
    """Instruments Starlette's ``StaticFiles`` and ``FileResponse``."""

    framework_distribution = "starlette"
    framework_module = "starlette"
    framework_requirements = ("starlette >= 0.15",)
    framework_name = n.FRAMEWORK_STARLETTE
    hooks_type = _StarletteHooks

    def _patches(self, hooks: _StarletteHooks) -> Sequence[Patch]:
        from starlette.staticfiles import StaticFiles

        patches = [
            Patch("anyio.to_thread", "run_sync", hooks.run_sync, watched=True),
            Patch("starlette.staticfiles:StaticFiles", "__call__", hooks.static_files_call),
            Patch(
                "starlette.staticfiles:StaticFiles",
                "is_not_modified",
                hooks.is_not_modified,
                plain=True,
            ),
            Patch("starlette.responses:FileResponse", "__call__", hooks.file_response_call),
            # If-Range evaluation exists from Starlette 0.39.
            Patch(
                "starlette.responses:FileResponse",
                "_should_use_range",
                hooks.should_use_range,
                required=False,
                plain=True,
            ),
            # The app's startup and shutdown: the zero series, the flush (_lifecycle).
            *_lifecycle.starlette_patches(hooks),
        ]
        if inspect.iscoroutinefunction(StaticFiles.lookup_path):  # up to 0.16
            patches.append(
                Patch("starlette.staticfiles:StaticFiles", "lookup_path", hooks.async_lookup_path)
            )
        return patches
