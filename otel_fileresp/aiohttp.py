# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""aiohttp file responses: ``web.FileResponse`` and ``web.static`` routes.

Usage::

    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    AiohttpFileResponseInstrumentor().instrument()

``opentelemetry-instrument`` loads it through the ``fileresp_aiohttp`` entry
point (switch it off with ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=fileresp_aiohttp``).

What is patched (in place, see :mod:`otel_fileresp._patching`: wrapt for
the coroutine functions and the worker pool, a plain function for the other
methods; ``uninstrument()`` restores it):

- ``FileResponse.__init__`` captures the request's trace context while the
  handler runs: contrib's aiohttp-server span ends when the handler returns,
  before aiohttp calls ``prepare``, so ``fileresp.response`` is parented to
  the context captured here. A response built under
  ``suppress_instrumentation()`` (in the handler or a middleware) stays
  unrecorded, although ``prepare`` runs after that block;
- ``FileResponse.prepare`` serves one ``fileresp.response`` per response;
- ``concurrent.futures.ThreadPoolExecutor.submit`` wraps the callable of each
  executor job submitted while a file response is prepared (asyncio's and
  uvloop's ``run_in_executor`` both go through it), measuring the wait for a
  worker and the run time; the same job is submitted, so the number of jobs is
  unchanged. What a job is, is said by the hooks that run inside it
  (``fileresp.stat`` for the stat method, ``make_response``, the served
  file's open), not by the callable's name, so another wrapper of ``submit``
  (contrib's ``threading`` instrumentation, in either order) hides nothing.
  Static routes (aiohttp 3.10+) resolve the path and build the
  ``FileResponse`` in an executor job before ``prepare``: that job is
  reported as ``fileresp.threadpool.job=lookup`` and starts the response, with
  the handler's trace context. When the lookup itself answers (a 403 or 404
  raised), the response ends there with that outcome and no status (aiohttp
  sends it above the file response). A client that leaves while the lookup
  job is still queued (``handler_cancellation=True``) ends the response with
  ``error.type=CancelledError``;
- ``FileResponse._get_file_path_stat_encoding`` (3.10+) or
  ``_get_file_path_stat_and_gzip`` (3.9.2+) times ``fileresp.stat``: the
  lstat of every ``.br``/``.gz`` candidate and the stat of the file.
  ``fileresp.content_encoding`` says which variant was served (``br``,
  ``gzip`` or ``identity``);
- ``pathlib.Path.open``, acting only while a file response is being served,
  times ``fileresp.open`` when the path opened is the served file
  (``FileResponse``'s path or the variant the stat chose), by whoever opens
  it (aiohttp's open job or its ``_make_response``, a ``FileResponse``
  subclass), and tells a failed open. ``fileresp.opened`` comes from Python's
  ``open`` audit event (see ``otel_fileresp._record``), so an
  ``on_response_prepare`` signal reading the served file with the builtin
  ``open()`` counts too; other files (a template, say) do not;
- from 3.11.10, ``FileResponse._make_response`` (one executor job doing stat,
  precondition checks, open and fstat, reported as job ``make_response``) is
  split into ``fileresp.stat``, ``fileresp.precondition`` (from the end of the
  stat to aiohttp's open, or to the end of the job) and ``fileresp.open``
  (the open and the fstat), with timestamps taken in the worker thread;
- up to 3.11.9 the precondition checks run on the event loop between the stat
  job and the open job; ``fileresp.precondition`` spans from the end of the
  stat job to the decision (``_not_modified``, ``_precondition_failed``, the
  next job's submission, or the end of ``prepare`` for HEAD, 416 and empty
  files), so it includes the loop's wake-up after the stat job;
- ``FileResponse._prepare_open_file`` (3.11.10+) or ``_sendfile`` (up to
  3.11.9) starts ``fileresp.send`` (the deferred close comes after the
  response's end): ``transfer=sendfile`` for ``loop.sendfile``,
  ``transfer=read`` when aiohttp falls back to executor reads
  (``AIOHTTP_NOSENDFILE``, compression, TLS, uvloop); the jobs submitted
  meanwhile are counted in ``fileresp.read.count``, never one span each.
  From 3.11.10 the send phase also covers the headers' preparation after the
  open, on the loop;
- where the bytes are handed over, each stamped at the START of the call
  (a stamp taken once it returned is late by the wait for the GIL, while the
  client has the bytes), so the response and ``fileresp.send`` end at the
  start of the call that handed over the last byte:

  - ``os.sendfile``, which asyncio's ``loop.sendfile`` calls through the
    ``os`` module on the event loop, in the response's context (also from
    its writer callbacks): a wrapper that acts only while a file response
    sends by sendfile in that context, and otherwise calls straight through
    (one Python call more for anyone else's ``os.sendfile``; no system call
    is added). ``fileresp.bytes`` adds what each call passed to the socket;
  - ``FileResponse._sendfile_fallback``: while it runs, its writer's
    ``write`` is observed on that writer object only (one coroutine frame
    more per chunk); ``fileresp.bytes`` adds each chunk of the file handed
    to the writer, up to the count aiohttp was asked to send (with
    compression, which drops the Content-Length, the file's bytes handed to
    the compressing writer: the whole file, or the ``Content-Range`` of a
    206; the compressed size is known only after the response's last byte);
  - the head: while ``prepare`` runs, the response's own ``_write_headers``
    is observed on that response object only; a 304, a HEAD or an empty
    file ends at the start of that call. Over TLS asyncio's own fallback
    writes to the transport where none of these look: there the body's
    bytes are the Content-Length, stamped when the send returned (late
    under contention);

``http.response.status_code`` is the status aiohttp sent; when ``prepare``
raises before any status was sent, the response is ``fileresp.outcome=error``
with ``error.type`` and no status code. What each release does differently
(which file opens a HEAD or 416 response, where the close runs, what a
missing file answers) is in docs/compatibility.md, with the release history
in CHANGELOG.md.

Known gaps: a ``FileResponse`` subclass that overrides ``prepare``
is recorded from its ``super().prepare()`` call on. A static route's
``FileResponse`` that aiohttp never prepares (a middleware answers with
another response, or the client left while the lookup ran) is no file
response and is not reported. A ``FileResponse`` built inside your own
executor job has the trace context of that worker thread (none, without
contrib's threading instrumentation), so its ``fileresp.response`` is a
root span.

Supported and tested: see docs/compatibility.md.
"""

from __future__ import annotations

import pathlib
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter_ns
from typing import Any, Final, NamedTuple, TypeVar

from opentelemetry import context as context_api
from opentelemetry.instrumentation.utils import is_instrumentation_enabled

from otel_fileresp import _lifecycle
from otel_fileresp import _names as n
from otel_fileresp._instrumentor import FileResponseInstrumentor, Hooks
from otel_fileresp._log import failed
from otel_fileresp._patching import Patch
from otel_fileresp._pools import POOL_ASYNCIO_EXECUTOR
from otel_fileresp._record import ResponseRecord, State, current_scope, serve_as_current
from otel_fileresp._telemetry import Telemetry

T = TypeVar("T")

_FILE_RESPONSE: Final = "aiohttp.web_fileresponse:FileResponse"
_SERVING: Final = State.SERVING  # a global: an enum member read from its class is slow
_STAT_METHODS: Final = ("_get_file_path_stat_encoding", "_get_file_path_stat_and_gzip")
# The one attribute a FileResponse carries: its record, or _SUPPRESSED.
_HOLDER: Final = "_otel_fileresp"
_SUPPRESSED: Final = "suppressed"
# make_response results (aiohttp 3.11.10+ `_FileResponseResult` member names).
_MAKE_RESPONSE_RESULTS: Final = {
    "NOT_MODIFIED": n.PRECONDITION_NOT_MODIFIED,
    "PRE_CONDITION_FAILED": n.PRECONDITION_FAILED,
}


def _header_that_decided(headers: Any, result: str | None) -> str | None:
    """The conditional header that decided ``result``, by aiohttp's (RFC 9110's)
    precedence: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since."""
    if headers is None:
        return None
    if result == n.PRECONDITION_NOT_MODIFIED:
        candidates: tuple[str, ...] = ("If-None-Match", "If-Modified-Since")
    elif result == n.PRECONDITION_FAILED:
        candidates = ("If-Match", "If-Unmodified-Since")
    else:
        candidates = ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since")
    return next((h.lower() for h in candidates if h in headers), None)


def _decide_on_loop(record: ResponseRecord, result: str | None) -> None:
    """The on-loop checks (aiohttp up to 3.11.9) decided ``result`` (None: passed)."""
    if record.detailed:
        header = _header_that_decided(_request_headers(record), result)
        record.precondition(result, header, perf_counter_ns())


class _Prepared(NamedTuple):
    """A prepared response's own values (the record's ``adapter`` slot)."""

    response: Any
    head_observer: object
    #: The request's headers (detailed records only; None for a lean one).
    headers: Any
    checks_on_loop: bool


#: ``_Prepared``'s tuple from its fields (without the named tuple's ``__new__`` frame).
_new_prepared: Final[Callable[[type[_Prepared], tuple[Any, ...]], _Prepared]] = tuple.__new__


def _request_headers(record: ResponseRecord) -> Any:
    adapter = record.adapter
    return adapter.headers if isinstance(adapter, _Prepared) else adapter


def _read_final_state(record: ResponseRecord, error: BaseException | None) -> None:
    """At the end of ``prepare``: what aiohttp sent (``serve_as_current``'s
    ``before_end``)."""
    instance, head_observer, headers, checks_on_loop = record.adapter
    _unobserve(instance, "_write_headers", head_observer)
    # The status aiohttp sent, if it sent one: when prepare raises
    # before the headers are written (aiohttp 3.9 on a missing file or
    # a directory), no status was sent and the outcome is ``error``.
    if _headers_sent(instance):
        if record.status is None:
            # Prepared without the observer seeing it return (it
            # could not be put, or the write raised): the time is now.
            record.head_sent(instance.status, perf_counter_ns())
        if error is None:
            # What is left is aiohttp's own EOF: complete, at its last byte.
            record.body_sent(0, perf_counter_ns(), True)  # final (positional: a hot path)
    status = record.status
    if record.detailed and status not in (None, 403, 404):
        if checks_on_loop:
            _decide_on_loop(record, None)
        if status == 200 and "Range" in headers and "If-Range" in headers:
            # aiohttp ignored the If-Range (the whole file was sent).
            record.precondition(n.PRECONDITION_RANGE_IGNORED, n.HEADER_IF_RANGE)


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


def _unwrapped(fn: Any, depth: int = 3) -> Any:
    """``fn`` without the wrappers another instrumentation put around it at
    ``submit`` (``__wrapped__``, or a closure over the callable, as contrib's
    threading instrumentation does), so a job is known by what it runs."""
    for _ in range(depth):
        if getattr(fn, "__self__", None) is not None:
            return fn
        inner = getattr(fn, "__wrapped__", None)
        if inner is None:
            cells = getattr(fn, "__closure__", None) or ()
            inner = next(
                (
                    cell.cell_contents
                    for cell in cells
                    if getattr(cell.cell_contents, "__self__", None) is not None
                ),
                None,
            )
        if inner is None:
            return fn
        fn = inner
    return fn


def _end_failed_lookup(record: ResponseRecord, exc: BaseException) -> None:
    """The lookup answered (a 403/404 raised) or failed: the response ends there."""
    record.begin()
    record.end(exc)


class _AiohttpHooks(Hooks):
    """The wrappers; each passes straight through when nothing records."""

    # Set by the instrumentor once aiohttp is imported.
    file_response_type: type[Any] = type(None)
    static_resource_type: type[Any] = type(None)
    stat_method: str = _STAT_METHODS[0]
    # Up to 3.11.9 the precondition checks run on the loop, between the stat
    # job and the open job: only then are they timed from the loop.
    checks_on_loop: bool = False

    def submit(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        scope = current_scope()
        if scope is None:
            telemetry = self.telemetry
            # A static route's lookup job: (resolver, path); anything else passes.
            if telemetry is None or len(args) != 2 or not isinstance(args[1], pathlib.PurePath):
                return wrapped(*args, **kwargs)
            lookup: tuple[Callable[..., Any], ResponseRecord | None] | None = None
            try:
                lookup = self._lookup_job(telemetry, args[0], args[1])
            except Exception:
                failed("aiohttp.lookup")
            if lookup is None:
                return wrapped(*args, **kwargs)
            lookup_job, lookup_record = lookup
            future = wrapped(lookup_job, *args[1:], **kwargs)
            if lookup_record is not None:
                try:
                    future.add_done_callback(lookup_record.job_cancelled)
                except Exception:
                    failed("aiohttp.lookup.watch")
            return future
        job: Callable[..., Any] | None = None
        record = scope.record
        if record.framework == n.FRAMEWORK_AIOHTTP and scope.job is None:
            try:
                if self.checks_on_loop and record.detailed and record.state is _SERVING:
                    _decide_on_loop(record, None)  # the open job follows the checks
                job = record.wrap_job(args[0])
            except Exception:
                failed("aiohttp.submit")
        # The framework's own submit is called exactly once, outside our
        # error handling: its exceptions are the framework's.
        if job is None:
            return wrapped(*args, **kwargs)
        return wrapped(job, *args[1:], **kwargs)

    def _lookup_job(
        self, telemetry: Telemetry, fn: Callable[..., Any], path: pathlib.PurePath
    ) -> tuple[Callable[..., Any], ResponseRecord | None] | None:
        """The lookup job in place of ``fn`` and its record (not begun: it starts
        at this job's submission once aiohttp prepares the response, or the
        lookup answers, or the job is cancelled while queued), when ``fn`` is
        a static route's resolver; None to leave the job as it is."""
        resolver = _unwrapped(fn)
        if not isinstance(getattr(resolver, "__self__", None), self.static_resource_type):
            return None  # the application's own job
        if telemetry.inert():
            return None
        # Made here, in the handler: the request's span is current.
        record = telemetry.new_record()
        if record is None:
            if not is_instrumentation_enabled():
                # Suppressed: the FileResponse built in the worker must know.
                return _in_context(context_api.get_current(), fn), None
            return None
        # The path asked for: named even when the lookup answers 403/404 itself.
        record.looked_up(path, None)
        # The lookup's run is not fileresp.stat: the FileResponse stats the
        # file again in its own job, and that is what is timed.
        job = record.wrap_job(
            fn,
            n.JOB_LOOKUP,
            on_result=self._keep_if_file_response,
            on_error=_end_failed_lookup,
            times_stat=False,
        )
        if job is None:
            return None
        return job, record

    def _keep_if_file_response(self, record: ResponseRecord, response: Any) -> None:
        if not isinstance(response, self.file_response_type):
            record.discard()

    def init(self, wrapped: Callable[..., None], instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        telemetry = self.telemetry
        if telemetry is None:
            return
        try:
            if telemetry.inert():
                return  # nothing records (prepare() asks again)
            scope = current_scope()
            holder: ResponseRecord | str | None
            if scope is not None and scope.job is not None and scope.job.kind == n.JOB_LOOKUP:
                # Built by a static route's lookup job: that record is this
                # response's; it begins if aiohttp prepares the response (a
                # middleware may answer with another one).
                holder = scope.record
            elif not is_instrumentation_enabled():
                # Built under suppress_instrumentation() (in the handler or a
                # middleware); prepare() runs after that block has exited.
                holder = _SUPPRESSED
            else:
                holder = telemetry.new_record()
            setattr(instance, _HOLDER, holder)
        except Exception:
            failed("aiohttp.init")

    # ``prepare`` is wrapped by a plain function returning the
    # awaitable: aiohttp's own coroutine when nothing records (no extra frame
    # for every resumption), else ours.

    def prepare(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[Any]:
        record = self._start(instance, args, kwargs)
        if record is None:
            return wrapped(*args, **kwargs)
        head_observer = _observe(instance, "_write_headers", _head_written, record, "aiohttp.head")
        # What the end reads (no closure per response): the response, its
        # head's observer, and for a detailed record the request's headers.
        record.adapter = _new_prepared(
            _Prepared, (instance, head_observer, record.adapter, self.checks_on_loop)
        )
        return serve_as_current(record, wrapped, *args, before_end=_read_final_state, **kwargs)

    def _start(self, response: Any, args: Any, kwargs: Any) -> ResponseRecord | None:
        telemetry = self.telemetry
        if telemetry is None or current_scope() is not None or telemetry.inert():
            return None
        self.verify_patches()
        try:
            holder = vars(response).pop(_HOLDER, None)
            if holder is _SUPPRESSED:
                return None
            record = holder if isinstance(holder, ResponseRecord) else None
            if record is None or record.state > _SERVING:
                record = telemetry.new_record()  # built before instrument()
            if record is None:
                return None
            request = args[0] if args else kwargs["request"]
            record.begin(head=request.method == "HEAD")
            record.serves(getattr(response, "_path", None))
            if record.detailed:
                record.adapter = request.headers
                record.expect(n.PHASE_STAT, f"FileResponse.{self.stat_method}")
            telemetry.note_pool(POOL_ASYNCIO_EXECUTOR)
            return record
        except Exception:
            failed("aiohttp.start")
        return None

    def stat(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        scope = current_scope()
        if scope is None:
            return wrapped(*args, **kwargs)
        record = scope.record
        if not record.detailed:
            # Lean: only which file was chosen (the served file's identity).
            result = wrapped(*args, **kwargs)
            try:
                path = result[0]
                if path:
                    record.serves(path, names_file=False)
            except Exception:
                failed("aiohttp.stat")
            return result
        record.job_is(scope.job, n.JOB_STAT)
        started = perf_counter_ns()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException:
            record.stat(started, perf_counter_ns())
            raise
        ended = perf_counter_ns()
        try:
            path, stat_result, encoding = result
            if isinstance(encoding, bool):  # 3.9: "is it the .gz file"
                encoding = "gzip" if encoding else None
            record.stat(
                started, ended, path or None, stat_result.st_size, encoding or n.ENCODING_IDENTITY
            )
        except Exception:
            failed("aiohttp.stat")
        return result

    def make_response(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        scope = current_scope()
        if scope is None or not scope.record.detailed:
            # A lean record needs nothing from here: opened comes from the open.
            return wrapped(*args, **kwargs)
        record = scope.record
        record.job_is(scope.job, n.JOB_MAKE_RESPONSE)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException:
            # Raised: the checks ran only if the served file was opened (its open failed later).
            record.combined_job_done(perf_counter_ns(), None, None, record.open_tried)
            raise
        ended = perf_counter_ns()
        try:
            name = result[0].name
            decided = _MAKE_RESPONSE_RESULTS.get(name)
            request = args[0] if args else kwargs["request"]
            header = _header_that_decided(request.headers, decided)
            record.combined_job_done(ended, decided, header, name != "NOT_ACCEPTABLE")
        except Exception:
            failed("aiohttp.make_response")
        return result

    def path_open(self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
        scope = current_scope()
        if scope is None or scope.record.framework != n.FRAMEWORK_AIOHTTP:
            return wrapped(*args, **kwargs)
        record = scope.record
        if not record.detailed:
            # Lean: the audit hook saw the open; one that fails is taken back.
            try:
                return wrapped(*args, **kwargs)
            except BaseException:
                record.open_failed(instance, perf_counter_ns())
                raise
        started = perf_counter_ns()
        try:
            file_object = wrapped(*args, **kwargs)
        except BaseException:
            if record.open_failed(instance, started):
                record.job_is(scope.job, n.JOB_OPEN)
            raise
        if record.file_opened(instance, started, perf_counter_ns()):
            record.job_is(scope.job, n.JOB_OPEN)
        return file_object

    def send(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[Any]:
        """``_prepare_open_file`` (3.11.10+) or ``_sendfile`` (up to 3.11.9):
        what aiohttp does once the file is open, up to its last body byte; the
        close follows, after the response's end."""
        scope = current_scope()
        if scope is None:
            return wrapped(*args, **kwargs)
        return _sent(scope.record, instance, wrapped(*args, **kwargs))

    def sendfile_fallback(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: Any, kwargs: Any
    ) -> Awaitable[Any]:
        """``_sendfile_fallback``: the body read in executor jobs and written to
        aiohttp's writer, chunk by chunk (``AIOHTTP_NOSENDFILE``, compression,
        a loop without ``sendfile``)."""
        scope = current_scope()
        if scope is None or scope.job is not None:
            return wrapped(*args, **kwargs)
        return _written_through(scope.record, args, kwargs, wrapped(*args, **kwargs))

    def os_sendfile(
        self, wrapped: Callable[..., int], instance: Any, args: Any, kwargs: Any
    ) -> int:
        """``os.sendfile``, as asyncio's ``loop.sendfile`` calls it on the event
        loop (in the task's context, also from its writer callbacks): while a
        file response sends by sendfile, the bytes each call handed to the
        socket, stamped at the call's start. Anyone else's call (no response
        sending by sendfile in this context, a worker thread) passes
        straight through."""
        scope = current_scope()
        if scope is None or scope.job is not None or scope.record.sending != n.TRANSFER_SENDFILE:
            return wrapped(*args, **kwargs)
        started = perf_counter_ns()
        sent = wrapped(*args, **kwargs)
        scope.record.body_sent(sent, started)
        return sent

    def not_modified(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        """``_not_modified`` (up to 3.11.9): the on-loop checks answered 304."""
        return self._decided(n.PRECONDITION_NOT_MODIFIED, wrapped, args, kwargs)

    def precondition_failed(
        self, wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any
    ) -> Any:
        """``_precondition_failed`` (up to 3.11.9): the on-loop checks answered 412."""
        return self._decided(n.PRECONDITION_FAILED, wrapped, args, kwargs)

    @staticmethod
    def _decided(result: str, wrapped: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        scope = current_scope()
        if scope is not None:
            try:
                _decide_on_loop(scope.record, result)
            except Exception:
                failed("aiohttp.decision")
        return wrapped(*args, **kwargs)


async def _sent(record: ResponseRecord, response: Any, sending: Awaitable[T]) -> T:
    record.body_started(perf_counter_ns(), n.TRANSFER_SENDFILE)
    try:
        writer = await sending
    except BaseException:
        record.body_failed(perf_counter_ns())
        raise
    unseen = 0
    try:
        status = response.status
        if 200 <= status < 300 and status != 204:
            # Any status the app chose for a whole file (200, 203, ...) or a
            # 206. Compression drops the Content-Length: then the file's bytes
            # handed to aiohttp's compressing writer are the whole file, or
            # the range.
            size = response.content_length
            if size is None:
                size = _range_length(response) if status == 206 else record.file_size
            # Handed over past the os.sendfile and write observers: asyncio's
            # own fallback on TLS writes to the transport itself.
            unseen = (size or 0) - record.bytes_sent
            if unseen < 0:  # noqa: PLR1730 - max() parses keywords: per response
                unseen = 0
    except Exception:
        failed("aiohttp.send")
    # aiohttp handed the whole body over: its last byte was stamped at the
    # start of the call that handed it over, unless unseen (then: now).
    record.body_sent(unseen, perf_counter_ns(), final=True)
    return writer


#: What an observer tells of each call: ``told(observer, started_ns, args)``.
Told = Callable[["_Observer", int, tuple[Any, ...]], None]


class _Observer:
    """An observer of one object's coroutine method, put on that object only
    (an instance attribute, not its class; see :func:`_observe`): each call
    is awaited as it is, then told with the time the call began (the bytes
    it hands over may leave during it). One object per observed method, no
    function made."""

    __slots__ = ("left", "method", "owner", "record", "told", "where")

    # Made only by _observe, which sets every slot (no __init__ frame per
    # response): ``left`` is the writes' bytes still to count (-1: no limit).
    owner: Any
    method: Callable[..., Awaitable[Any]]
    told: Told
    record: ResponseRecord
    where: str
    left: int

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = perf_counter_ns()
        result = await self.method(*args, **kwargs)
        try:
            self.told(self, started, args)
        except Exception:
            failed(self.where)
        return result


_new_observer: Final[Callable[[type[_Observer]], _Observer]] = object.__new__


def _observe(
    owner: Any, name: str, told: Told, record: ResponseRecord, where: str
) -> _Observer | None:
    """Put, on ``owner`` only, an observer of its coroutine method ``name``
    that tells ``told`` of each call. The observer itself, to take off with
    :func:`_unobserve`; None if it could not be put (``where`` logs why)."""
    try:
        # Its slots set here: no __init__ called through the type per response.
        observer = _new_observer(_Observer)
        observer.owner = owner
        observer.method = getattr(owner, name)
        observer.told = told
        observer.record = record
        observer.where = where
        observer.left = -1
        setattr(owner, name, observer)
    except Exception:
        failed(where)
        return None
    return observer


def _unobserve(owner: Any, name: str, observer: object) -> None:
    """Take ``observer`` off ``owner`` if it is still there."""
    if observer is not None and vars(owner).get(name) is observer:
        delattr(owner, name)


def _head_written(observer: _Observer, started: int, args: tuple[Any, ...]) -> None:
    """The response's ``_write_headers`` (aiohttp hands the status line and
    headers to its writer there, in every release) began at ``started``: the
    head's time; the status and Content-Length are read once it returned
    (compression drops the length)."""
    response = observer.owner
    observer.record.head_sent(response.status, started, response.content_length)


def _chunk_written(observer: _Observer, started: int, args: tuple[Any, ...]) -> None:
    """A write of the read fallback began at ``started``: its chunk, up to the
    count aiohttp was asked to send."""
    size = len(args[0])
    left = observer.left
    if left >= 0:
        size = min(size, left)
        observer.left = left - size
    observer.record.body_sent(size, started)


async def _written_through(
    record: ResponseRecord, args: Any, kwargs: Any, falling_back: Awaitable[T]
) -> T:
    """aiohttp's read fallback, ``_sendfile_fallback(writer, fobj, offset,
    count)``, with its writer's ``write`` observed (on that writer only, while
    the fallback runs): each chunk is handed over by a write that begins at
    the stamp given to the record. Only the ``count`` bytes it was asked to
    send are counted: aiohttp before 3.13.4 reads a whole chunk first, which
    a compressing writer (no Content-Length to cut at) sends beyond a range."""
    observer = writer = None
    try:
        writer, count = _fallback_arguments(*args, **kwargs)
        observer = _observe(writer, "write", _chunk_written, record, "aiohttp.write")
        if observer is not None and isinstance(count, int):
            observer.left = count
    except Exception:
        failed("aiohttp.write")
    try:
        return await falling_back
    finally:
        _unobserve(writer, "write", observer)


def _fallback_arguments(writer: Any, fobj: Any, offset: Any, count: Any) -> tuple[Any, Any]:
    return writer, count


def _range_length(response: Any) -> int | None:
    """The bytes of a single-range 206 (``Content-Range: bytes 10-19/100``)."""
    content_range = response.headers.get("Content-Range", "")
    unit, _, spec = content_range.partition(" ")
    first, _, last = spec.partition("/")[0].partition("-")
    if unit != "bytes" or not (first.isdigit() and last.isdigit()):
        return None
    return int(last) - int(first) + 1


class AiohttpFileResponseInstrumentor(FileResponseInstrumentor[_AiohttpHooks]):
    """Instruments aiohttp's ``web.FileResponse`` and ``web.static`` routes."""

    framework_distribution = "aiohttp"
    framework_module = "aiohttp"
    framework_requirements = ("aiohttp >= 3.9.2",)
    framework_name = n.FRAMEWORK_AIOHTTP
    hooks_type = _AiohttpHooks

    def _patches(self, hooks: _AiohttpHooks) -> Sequence[Patch]:
        from aiohttp.web_fileresponse import FileResponse
        from aiohttp.web_urldispatcher import StaticResource

        hooks.file_response_type = FileResponse
        hooks.static_resource_type = StaticResource
        stat_method = next((m for m in _STAT_METHODS if hasattr(FileResponse, m)), _STAT_METHODS[0])
        hooks.stat_method = stat_method
        combined_job = hasattr(FileResponse, "_make_response")  # aiohttp 3.11.10+
        hooks.checks_on_loop = not combined_job
        patches = [
            Patch(
                "concurrent.futures.thread:ThreadPoolExecutor",
                "submit",
                hooks.submit,
                watched=True,
            ),
            Patch(_FILE_RESPONSE, "__init__", hooks.init, plain=True),
            Patch(_FILE_RESPONSE, "prepare", hooks.prepare),
            Patch(_FILE_RESPONSE, stat_method, hooks.stat, plain=True),
            # Every release: an open of the served file by anything serving the
            # response (aiohttp's open job or `_make_response`, a subclass).
            Patch("pathlib:Path", "open", hooks.path_open, plain=True),
            # The app's startup and cleanup: the zero series, the flush (_lifecycle).
            *_lifecycle.aiohttp_patches(hooks),
        ]
        # Where the body's bytes are handed over, each stamped at the call's
        # start: asyncio's loop.sendfile calls os.sendfile (the module's
        # attribute, at call time); the fallback writes to aiohttp's writer.
        patches.append(Patch(_FILE_RESPONSE, "_sendfile_fallback", hooks.sendfile_fallback))
        patches.append(Patch("os", "sendfile", hooks.os_sendfile, required=False, plain=True))
        if combined_job:
            # The checks' result and time come from the job's own result;
            # everything after the open, up to the last byte, is one method.
            patches.append(Patch(_FILE_RESPONSE, "_make_response", hooks.make_response, plain=True))
            patches.append(Patch(_FILE_RESPONSE, "_prepare_open_file", hooks.send))
        else:
            patches.append(Patch(_FILE_RESPONSE, "_sendfile", hooks.send))
            # Up to 3.11.9 the checks run on the loop: their decision is timed here.
            patches.append(Patch(_FILE_RESPONSE, "_not_modified", hooks.not_modified, plain=True))
            patches.append(
                Patch(_FILE_RESPONSE, "_precondition_failed", hooks.precondition_failed, plain=True)
            )
        return patches
