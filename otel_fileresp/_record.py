# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The record of one file response, and the only place where its rules live.

A :class:`ResponseRecord` is made when a framework starts to resolve a file
and lives for that one response. The framework modules translate what the
framework does into the record's verbs, with timestamps from
:func:`time.perf_counter_ns` (a vDSO call on Linux: no system call):

=========================== ======================================================
verb                        called by (when)
=========================== ======================================================
:meth:`begin`               both adapters, as a response starts (aiohttp: in
                            ``prepare``, or when a static lookup answers)
:meth:`expect`              both adapters, at the start: a phase this release
                            must show (logged once if it never comes)
:meth:`serves`              both adapters: the path about to be served
                            (Starlette's ``FileResponse``, aiohttp's ``_path``)
:meth:`looked_up`           both adapters: the file a lookup or stat found
:meth:`is_served`           Starlette (is this ``os.stat`` job the served file's?)
:meth:`stat`                aiohttp's stat method hook: the stat phase
:meth:`precondition`        both adapters: the conditional headers decided
                            (timed checks, or on-loop decisions, or an
                            ignored If-Range)
:meth:`combined_job_done`   aiohttp 3.11.10+: the one job doing stat, checks
                            and open ended
:meth:`open_seen`           the ``open`` audit hook (anyone opening a file in
                            the response's context)
:meth:`file_opened`,        aiohttp's ``Path.open`` hook; the record itself
:meth:`open_failed`         for an open job of the served file
:attr:`open_tried`          aiohttp 3.11.10+ (did the checks reach the open?)
:meth:`wrap_job`            both adapters' pool hooks (``run_sync``,
                            ``submit``): a job about to be submitted
:meth:`job_is`              aiohttp's hooks inside a job (worker side): what
                            the running job is
:meth:`job_cancelled`       a lookup job's future (aiohttp): cancelled queued
:meth:`head_sent`           both adapters: the status and headers handed over
                            (Starlette: the ``http.response.start`` send;
                            aiohttp: ``_write_headers``)
:meth:`body_started`        starts handing the body over by a transfer
                            (aiohttp: its send method; Starlette: a ``pathsend``)
:meth:`body_sent`           body bytes handed over (Starlette: a body message
                            or a ``pathsend``; aiohttp: an ``os.sendfile``, a
                            fallback write, its send returning: ``final``)
:meth:`body_failed`         handing the body over failed (aiohttp: its send
                            raised)
:meth:`discard`             aiohttp: a lookup job built no ``FileResponse``
:meth:`end`                 :func:`serve_as_current` (or its sync form) when
                            the framework returned or raised; a failed or
                            cancelled aiohttp lookup
:meth:`facts`               :meth:`end` (the value it hands to the consumer);
                            tests
=========================== ======================================================

Each verb contains its own failures (``try``/``except Exception:
failed("record.<verb>")``, see :mod:`otel_fileresp._log`): no verb raises into
the framework, so an adapter calls them without a guard. What an adapter
keeps per response of its own (aiohttp: the request's headers) goes in the
record's :attr:`~ResponseRecord.adapter` slot, which the record never reads.

The rules (telemetry contract v2, "Truth rules"):

- The **served file** is a path passed to :meth:`serves` or
  :meth:`looked_up` (what the framework resolved), compared as spelled and
  once normalised (:func:`same_file`); a stat or open of any other path
  never becomes it.
- ``opened`` is true only when the served file was opened during the
  response, by whoever opened it: the framework's open (:meth:`file_opened`)
  or any open Python's ``open`` audit event shows in the response's context
  (:meth:`open_seen`, installed by :func:`watch_opens`), less the opens that
  failed (:meth:`open_failed`). Other files opened in the same context (a
  manifest, a template, a signal handler's read) do not count, and jobs that
  read other file objects are not body reads.
- The status is only ever the one handed to the server. An HTTP exception
  raised by the framework (turned into a response above it) sets the outcome
  (``not_found``, ``forbidden``, ``method_not_allowed``, ``redirect``) but
  no status.
- A response is **complete** when its final body message was handed over, or
  when everything the client is owed was: a bodiless status (1xx, 204, 304), a
  HEAD request, or as many body bytes as the ``content-length`` announced. A
  complete response is never an error, even if the client leaves right after.
  A response that the framework left without handing over all of it (no
  exception: Starlette 1.8+ stops on ``http.disconnect``; or the server
  dropped the messages because the client had left, which the adapter does
  not report as handed over) ends with ``error.type=incomplete_body``: a
  client that left is never ``sent``.
- The response ends at its last byte: the last byte owed (``content-length``
  reached, or the head of a bodiless response), not a later empty final
  message. Jobs submitted after that (a read finding the end of the file, a
  close) are not part of it: not counted, not waited for; a job's wait
  counts only up to the end.
- A byte's time is the **start** of the framework's call that handed it over
  (the ASGI ``send`` of the message carrying it, the ``os.sendfile`` or the
  write to aiohttp's writer that passed it on, the send of a head that
  completes the response), for every framework and transfer, so the end of
  ``fileresp.response`` and of ``fileresp.send`` is never later than the
  client's last byte: a stamp taken once such a call returned is late by the
  wait for the GIL (under contention with another thread, a switch interval
  or more), while the bytes may already have reached the client. Never
  earlier either: it is the call that handed over the last byte owed, not
  the first.
- A record ends exactly once; a job cancelled while still queued ends its
  response (see :meth:`job_cancelled`).

Collection is **detailed** (every phase interval, the wait of each job, the
file's name and size, the precondition, the transfer) when the response will
be recorded as spans or when phase metrics other than the wait are enabled,
and **lean** otherwise: start and end, status, outcome, ``error.type``,
``opened``, the number of jobs and their total wait (the bytes handed over
are counted too: a response is complete when all it announced went). It is
decided once, when the record is made (:attr:`ResponseRecord.detailed`), and
the lean path runs only what those facts need: a job is a
:class:`_LeanJob` that counts its wait and nothing else (no kind, no
callback), unless it opens a file (was it the served one, and did it open?)
or has a callback of the adapter (a lookup); no path is compared when a job
is submitted; no phase is marked; the transfer stays ``none``. The truth
rules below hold on both paths. When the record ends it freezes its facts into one
:class:`~otel_fileresp._finished.FinishedResponse` (:meth:`~ResponseRecord.facts`),
handed to its consumer: that value is all emission
(:mod:`otel_fileresp._emit`) and the test recorder read.

Per-response state has one holder: the context variable of this module, whose
value is the record (on the event loop) or the running pool job (in a worker
thread), both reached through :func:`current_scope`.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError
from contextvars import ContextVar
from enum import IntEnum
from stat import S_ISREG
from time import perf_counter_ns
from typing import Any, Final, TypeVar

from opentelemetry import context as context_api

from otel_fileresp import _names as n
from otel_fileresp._finished import FinishedResponse, ResponseConsumer
from otel_fileresp._log import failed, log_once

T = TypeVar("T")

# Jobs that get their own fileresp.threadpool.wait span.
_WAIT_SPAN_JOBS: Final = frozenset({n.JOB_STAT, n.JOB_LOOKUP, n.JOB_OPEN, n.JOB_MAKE_RESPONSE})
# Jobs whose run is the stat phase (unless the framework module times it).
_STAT_JOBS: Final = frozenset({n.JOB_STAT, n.JOB_LOOKUP})
_PRECONDITION_RANK: Final = {
    n.PRECONDITION_NONE: 0,
    n.PRECONDITION_PASS: 1,
    n.PRECONDITION_RANGE_IGNORED: 2,
    n.PRECONDITION_FAILED: 3,
    n.PRECONDITION_NOT_MODIFIED: 3,
}
_STATUS_OUTCOMES: Final = {
    304: n.OUTCOME_NOT_MODIFIED,
    412: n.OUTCOME_PRECONDITION_FAILED,
    416: n.OUTCOME_RANGE_NOT_SATISFIABLE,
    404: n.OUTCOME_NOT_FOUND,
    410: n.OUTCOME_NOT_FOUND,
    401: n.OUTCOME_FORBIDDEN,
    403: n.OUTCOME_FORBIDDEN,
    405: n.OUTCOME_METHOD_NOT_ALLOWED,
}


class State(IntEnum):
    """Where a response is in its life; it only moves forward."""

    PENDING = 0  # made (aiohttp: the FileResponse exists), not started yet
    SERVING = 1  # resolving, checking, opening
    HEAD_SENT = 2  # the status went to the server; the body is not complete
    COMPLETE = 3  # everything the client is owed was handed over: the end is fixed
    ENDED = 4  # ended and emitted
    DISCARDED = 5  # not a file response after all: nothing is emitted


# The states as module constants: an enum member read from its class costs
# several times a global's read (Python 3.11), on every verb.
_PENDING: Final = State.PENDING
_SERVING: Final = State.SERVING
_HEAD_SENT: Final = State.HEAD_SENT
_COMPLETE: Final = State.COMPLETE
_ENDED: Final = State.ENDED
_DISCARDED: Final = State.DISCARDED


class Scope:
    """The value of the context variable: the record, and the pool job running
    it in this worker thread (None on the event loop)."""

    __slots__ = ("job", "record")

    def __init__(self, record: ResponseRecord, job: PoolJob | None = None) -> None:
        self.record = record
        self.job = job


_next_key: Final = itertools.count(1).__next__

_new_scope: Final[Callable[[type[Scope]], Scope]] = object.__new__

_CURRENT: ContextVar[Scope | None] = ContextVar("otel_fileresp_scope", default=None)

#: The scope of the file response being served in this context, if any (the
#: context variable's own getter: no Python frame in the hooks' hot path).
current_scope: Final[Callable[[], Scope | None]] = _CURRENT.get


def current_record() -> ResponseRecord | None:
    """The record of the file response being served in this context, if any."""
    scope = _CURRENT.get()
    return None if scope is None else scope.record


#: ``FinishedResponse``'s tuple made from its fields in order, without the
#: named tuple's own ``__new__`` (a Python frame with 25 arguments).
_finished: Final[Callable[[type[FinishedResponse], tuple[Any, ...]], FinishedResponse]] = (
    tuple.__new__
)


def same_file(a: Any, b: Any) -> bool:
    """Whether two path values name the same file: the same spelling, or the
    same once normalised (``static/./app.js`` is ``static/app.js``). No
    system call: symbolic links and relative paths against another working
    directory are not resolved."""
    if a is b:
        return a is not None
    try:
        a, b = os.fspath(a), os.fspath(b)
    except TypeError:  # not a path (None, an open file descriptor)
        return False
    if a == b:
        return True
    if type(a) is not type(b):
        return False
    return bool(os.path.normpath(a) == os.path.normpath(b))


def status_of_exception(exc: BaseException) -> int | None:
    """The HTTP status a framework answers with for an HTTP exception, else None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 100 <= status < 600 else None


def _not_a_file(ok: bool, result: object) -> bool:
    """A stat job found something other than a regular file (StaticFiles'
    check of its own directory): not the stat of the file served."""
    mode = getattr(result, "st_mode", None) if ok else None
    return mode is not None and not S_ISREG(mode)


def _bodiless(status: int) -> bool:
    return status < 200 or status in (204, 304)


class PoolJob(Scope):
    """One job a response handed to a worker pool, in place of the framework's
    callable: calling it runs that callable in the worker with the job as the
    current scope, timing its wait and its run (one object per job: the scope,
    the job and the callable submitted)."""

    __slots__ = (
        "_fn",
        "_on_error",
        "_on_result",
        "is_stat",
        "kind",
        "opens",
        "started",
        "submitted",
    )

    # Made only by ResponseRecord._job (and _LeanJob by wrap_job), which set
    # every slot: no __init__ frame per job.
    record: ResponseRecord
    _fn: Callable[..., Any]
    kind: str
    submitted: int
    started: int | None
    #: The path this job opens, when the framework module knows it.
    opens: object
    #: Whether the job's run is the stat phase.
    is_stat: bool
    _on_result: Callable[[ResponseRecord, Any], None] | None
    _on_error: Callable[[ResponseRecord, BaseException], None] | None

    @property
    def job(self) -> PoolJob:  # type: ignore[override]
        """The running job: this one (a property, not a slot: a slot holding
        the job itself would be a reference cycle, keeping the framework's
        callable, and a file it is bound to, alive until a garbage collection)."""
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """(Worker side) run the framework's callable; the framework's own
        result or exception, untouched."""
        self.started = perf_counter_ns()
        token = _CURRENT.set(self)
        try:
            result = self._fn(*args, **kwargs)
        except BaseException as exc:
            _CURRENT.reset(token)
            self._ran(False, exc)
            raise
        _CURRENT.reset(token)
        self._ran(True, result)
        return result

    def _ran(self, ok: bool, outcome: Any) -> None:
        record = self.record
        record._job_ran(self, perf_counter_ns(), ok, outcome if ok else None)
        then = self._on_result if ok else self._on_error
        if then is not None:
            try:
                then(record, outcome)
            except Exception:
                failed("record.job.then")


class _LeanJob(PoolJob):
    """A job of a lean record that is only its wait: no kind to tell, no
    callback (the lean path's one object per job, with nothing else to do)."""

    __slots__ = ()

    # Made by ResponseRecord.wrap_job with ``_new_job`` and its slots set
    # there: no __init__ frame per job.

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """(Worker side) run the framework's callable, then count its wait up
        to the response's end (:meth:`ResponseRecord._job_ran`'s rules)."""
        self.started = started = perf_counter_ns()
        token = _CURRENT.set(self)
        try:
            return self._fn(*args, **kwargs)
        finally:
            _CURRENT.reset(token)
            record = self.record
            try:
                if record.state < _ENDED:
                    record._count_job(self.submitted, started)
            except Exception:
                failed("record.job")


_new_job: Final[Callable[[type[_LeanJob]], _LeanJob]] = object.__new__
_new_pool_job: Final[Callable[[type[PoolJob]], PoolJob]] = object.__new__


class ResponseRecord:
    """The phases of one file response, collected while it is served."""

    __slots__ = (
        "_content_encoding",
        "_end_ns",
        "_error_type",
        "_expected",
        "_expected_bytes",
        "_file_object_id",
        "_file_path",
        "_file_size",
        "_head",
        "_jobs",
        "_key",
        "_last_byte_ns",
        "_open_attempts",
        "_open_start_ns",
        "_opened",
        "_outcome",
        "_phases",
        "_precondition_header",
        "_precondition_result",
        "_read_count",
        "_read_wait_max_ns",
        "_read_wait_ns",
        "_scope",
        "_send_start_ns",
        "_served",
        "_sink",
        "_started_ns",
        "_stat_by_lookup",
        "_transfer",
        "_unmatched_opens",
        "_wait_ns",
        "_wait_spans",
        "adapter",
        "bytes_sent",
        "detailed",
        "framework",
        "parent",
        "sending",
        "spans",
        "state",
        "status",
    )

    def __init__(
        self,
        sink: ResponseConsumer,
        framework: str,
        parent: context_api.Context | None = None,
        detailed: bool = True,
        spans: bool = True,
    ) -> None:
        self._sink = sink
        self.framework = framework
        self.parent = context_api.get_current() if parent is None else parent
        #: Whether every phase is collected (see the module docs).
        self.detailed = detailed
        #: Whether a span of this response may be recorded (decided once, at
        #: its start, from the parent and the sampler; see _telemetry).
        self.spans = spans
        #: The adapter's own per-response value (aiohttp's: the request's
        #: headers); the record never reads it.
        self.adapter: Any = None
        # The key the consumer is told (a counter: ``id()`` is an audit event,
        # which every audit hook of the process is called for).
        self._key = _next_key()
        scope = self._scope = _new_scope(Scope)
        scope.record = self
        scope.job = None
        #: Where the response is (read by the adapters; only the verbs move it).
        self.state: State = _PENDING
        self._started_ns = 0
        self._end_ns: int | None = None
        self._last_byte_ns: int | None = None
        #: The status handed to the server so far (None: none yet).
        self.status: int | None = None
        self._outcome: str | None = None  # from an HTTP exception: no status sent
        self._error_type: str | None = None
        self._head = False
        self._expected_bytes: int | None = None
        #: The body bytes handed over so far.
        self.bytes_sent = 0
        self._transfer = n.TRANSFER_NONE
        #: The transfer the body is being handed over by (see
        #: :meth:`body_started`), or None.
        self.sending: str | None = None
        self._send_start_ns: int | None = None
        self._served: tuple[object, ...] = ()
        # Paths opened (audit events) before the served file was known.
        self._unmatched_opens: tuple[object, ...] = ()
        self._file_object_id: int | None = None
        self._opened = False
        # Opens of the served file seen by the audit hook, less those that
        # failed (an audit event comes before the open, whatever its result).
        self._open_attempts = 0
        self._open_start_ns: int | None = None
        self._file_path: object = None
        self._file_size: int | None = None
        self._content_encoding: str | None = None
        self._precondition_result: str | None = None
        self._precondition_header: str | None = None
        self._phases: dict[str, list[int]] = {}
        self._expected: tuple[tuple[str, str], ...] = ()
        self._stat_by_lookup = False
        self._jobs = 0
        self._wait_ns = 0
        self._wait_spans: list[tuple[str, int, int]] = []
        self._read_count = 0
        self._read_wait_ns = 0
        self._read_wait_max_ns = 0

    # -- life ------------------------------------------------------------------

    def begin(self, *, head: bool = False, started_ns: int | None = None) -> None:
        """The framework starts to serve the file (a HEAD request if ``head``).

        A record that submitted a job before it began (aiohttp's static lookup)
        starts at that job's submission."""
        try:
            if head:
                self._head = True
            if self.state is not _PENDING:
                return
            self.state = _SERVING
            if started_ns is None:
                started_ns = self._started_ns or perf_counter_ns()
            self._started_ns = started_ns
            self._sink.response_started(self._key, self.framework)
        except Exception:
            failed("record.begin")

    def discard(self) -> None:
        """It turned out not to be a file response: no telemetry."""
        try:
            if self.state is _PENDING:
                self.state = _DISCARDED
            elif self.state < _ENDED:
                self.state = _DISCARDED
                self._sink.response_ended(self._key, None)
        except Exception:
            failed("record.discard")

    def end(self, exc: BaseException | None = None) -> None:
        """The framework returned (or raised ``exc``): end the response, once."""
        try:
            state = self.state
            if state is _PENDING:
                self.state = _DISCARDED  # never started: nothing to tell
                return
            if state >= _ENDED:
                return
            now = perf_counter_ns()
            complete = state is _COMPLETE or (state is _HEAD_SENT and self._all_sent())
            if not complete:
                if exc is not None:
                    status = status_of_exception(exc)
                    outcome = None if status is None else _outcome_of_exception(status)
                    if outcome is None:
                        self._error_type = type(exc).__qualname__
                    else:
                        self._outcome = outcome
                else:  # returned without handing over the whole response
                    self._error_type = n.ERROR_INCOMPLETE_BODY
            if self._end_ns is None:
                last = self._last_byte_ns if complete else None
                self._end_ns = last if last is not None else now
            if self._expected and self.detailed and self.status in (200, 206, 304):
                self._log_missing_phases()
            self.state = _ENDED
            self._sink.response_ended(self._key, self.facts())
        except Exception:
            failed("record.end")

    def expect(self, phase: str, hook: str) -> None:
        """A served file's response has ``phase``, seen by ``hook`` (a name this
        release must still match): if it ends without it, that is said once."""
        try:
            if self.detailed:  # said only of detailed records (see end)
                self._expected = (*self._expected, (phase, hook))
        except Exception:
            failed("record.expect")

    def _log_missing_phases(self) -> None:
        for phase, hook in self._expected:
            if phase not in self._phases:
                log_once(
                    f"missing.{self.framework}.{phase}",
                    f"{self.framework}: a file response ended without its {phase} phase; "
                    f"{hook} no longer matches what this release (or a subclass) does, "
                    f"so fileresp.{phase} is missing from the telemetry",
                    with_traceback=False,
                )

    def _all_sent(self) -> bool:
        """Whether everything the client is owed was handed over (head sent)."""
        status = self.status
        if self._head or (status is not None and _bodiless(status)):
            return True
        expected = self._expected_bytes
        return expected is not None and self.bytes_sent >= expected

    # -- the file ----------------------------------------------------------------

    def serves(self, path: object, size: int | None = None, *, names_file: bool = True) -> None:
        """The framework is about to serve ``path`` (a ``FileResponse``'s path, or
        the representation of it the stat chose: ``names_file=False`` keeps the
        name the response reports)."""
        try:
            if path is None:
                return
            served = self._served
            if not served or served[0] is not path:  # the same object again: known
                self._served = (path, *served)
                if self._unmatched_opens:
                    self._match_earlier_opens()
            if self.detailed:
                if names_file:
                    self._file_path = path
                if size is not None:
                    self._file_size = size
        except Exception:
            failed("record.serves")

    def looked_up(self, path: object, size: int | None) -> None:
        """The framework found the regular file ``path`` to serve (a lookup or stat)."""
        try:
            if path is None:
                return
            if not self._served:
                self._served = (path,)
                if self._unmatched_opens:
                    self._match_earlier_opens()
            if self.detailed:
                if self._file_path is None:
                    self._file_path = path
                if size is not None:
                    self._file_size = size
        except Exception:
            failed("record.looked_up")

    def is_served(self, path: object) -> bool:
        """Whether ``path`` is the file this response serves."""
        try:
            for served in self._served:  # noqa: SIM110 - no generator per call: a hot path
                if same_file(path, served):
                    return True
            return False
        except Exception:
            failed("record.is_served")
            return False

    def open_seen(self, path: object) -> None:
        """Python is opening ``path`` in this response's context (the ``open``
        audit event: builtins, ``io``, ``os.open``, ``pathlib``, anyio, a
        worker thread carrying the context), by the framework or by app code:
        the served file's open sets ``opened``, whoever opens it."""
        try:
            if self.state >= _COMPLETE or self._opened:
                return  # the framework finished the response, or known already
            if self.is_served(path):
                self._open_attempts += 1
            elif isinstance(path, (str, bytes, os.PathLike)) and len(self._unmatched_opens) < 16:
                self._unmatched_opens = (*self._unmatched_opens, path)
        except Exception:
            failed("record.open_seen")

    def _match_earlier_opens(self) -> None:
        """The served file is known now: was it opened before that?"""
        self._open_attempts += sum(self.is_served(path) for path in self._unmatched_opens)
        self._unmatched_opens = ()

    def file_opened(self, path: object, start_ns: int, end_ns: int) -> bool:
        """A file was opened in this response's context: True if it is the served one."""
        try:
            if not self.is_served(path):
                return False
            self._served_file_opened(start_ns, end_ns)
            return True
        except Exception:
            failed("record.file_opened")
            return False

    def _served_file_opened(self, start_ns: int, end_ns: int) -> None:
        self._opened = True
        if self._open_start_ns is None:
            self._open_start_ns = start_ns
        if self.detailed:
            self._mark(n.PHASE_OPEN, start_ns, end_ns)

    def open_failed(self, path: object, start_ns: int) -> bool:
        """Opening a file failed: True if it was the served one (then its open
        was tried, though nothing was opened)."""
        try:
            if not self.is_served(path):
                return False
            self._served_file_open_failed(start_ns)
            return True
        except Exception:
            failed("record.open_failed")
            return False

    def _served_file_open_failed(self, start_ns: int) -> None:
        self._open_attempts -= 1
        if self._open_start_ns is None:
            self._open_start_ns = start_ns

    @property
    def open_tried(self) -> bool:
        """Whether the served file's open was tried (succeeded or not)."""
        return self._open_start_ns is not None

    def _is_served_file_object(self, file_object: object) -> bool:
        """Whether ``file_object`` is what the served file's open job returned
        (its reads are the body reads)."""
        return self._file_object_id is not None and id(file_object) == self._file_object_id

    # -- phases ------------------------------------------------------------------

    def _mark(self, phase: str, start_ns: int, end_ns: int) -> None:
        interval = self._phases.get(phase)
        if interval is None:
            self._phases[phase] = [start_ns, end_ns]
        else:
            # min() and max() without their calls (several per response)
            if start_ns < interval[0]:  # noqa: PLR1730
                interval[0] = start_ns
            if end_ns > interval[1]:  # noqa: PLR1730
                interval[1] = end_ns

    def stat(
        self,
        start_ns: int,
        end_ns: int,
        path: object = None,
        size: int | None = None,
        encoding: str | None = None,
    ) -> None:
        """The file (and its variants) was statted; ``path`` is the one chosen."""
        try:
            if path is not None:
                self.serves(path, size, names_file=False)
            if self.detailed:
                self._mark(n.PHASE_STAT, start_ns, end_ns)
                if size is not None:
                    self._file_size = size
                if encoding is not None:
                    self._content_encoding = encoding
        except Exception:
            failed("record.stat")

    def precondition(
        self,
        result: str | None,
        header: str | None,
        end_ns: int | None = None,
        start_ns: int | None = None,
    ) -> None:
        """The framework decided the conditional headers: ``result`` on
        ``header`` (the header that decided, if any). The one verb of the
        precondition; the record applies its rules:

        - ``result`` None means no check failed: ``none`` when no header
          decided, else ``pass``;
        - the most decisive result of a response wins (a 304 or 412 over a
          pass);
        - the phase runs from ``start_ns`` to ``end_ns`` when the check was
          timed; with ``start_ns`` None it runs from the end of the stat to
          ``end_ns`` (checks between the stat and the open, known by their
          decision: only the first such decision counts); with ``end_ns``
          None too, the decision is known only after the checks (an ignored
          If-Range) and takes no time, at the end of the last check (or of
          the stat).
        """
        try:
            if not self.detailed:
                return
            if result is None:
                result = n.PRECONDITION_NONE if header is None else n.PRECONDITION_PASS
            if start_ns is None:
                if end_ns is None:
                    interval = self._phases.get(n.PHASE_PRECONDITION)
                    interval = interval or self._phases.get(n.PHASE_STAT)
                    if interval is None:
                        return
                    start_ns = end_ns = interval[1]
                else:
                    stat = self._phases.get(n.PHASE_STAT)
                    if stat is None or self._precondition_result is not None:
                        return
                    start_ns, end_ns = stat[1], max(stat[1], end_ns)
            elif end_ns is None:
                end_ns = start_ns
            self._mark(n.PHASE_PRECONDITION, start_ns, end_ns)
            current = self._precondition_result
            if current is None or _PRECONDITION_RANK[result] >= _PRECONDITION_RANK[current]:
                self._precondition_result = result
                self._precondition_header = header
        except Exception:
            failed("record.precondition")

    def combined_job_done(
        self, end_ns: int, result: str | None, header: str | None, checked: bool
    ) -> None:
        """A job doing stat, checks and open (aiohttp's ``_make_response``) ended.

        ``checked`` says the checks ran; the precondition phase runs from the
        end of the stat to the served file's open (the first after the stat),
        or to the end of the job; the open phase extends to the job's end (it
        includes the fstat after the open).
        """
        try:
            if not self.detailed or not checked:
                return
            stat = self._phases.get(n.PHASE_STAT)
            if stat is None:
                return
            open_start = self._open_start_ns
            if open_start is not None and open_start < stat[1]:
                open_start = None  # opened before the stat: not by the checks' path
            decided = end_ns if open_start is None else open_start
            self.precondition(result, header, decided, stat[1])
            if open_start is not None and self._opened:
                self._mark(n.PHASE_OPEN, open_start, end_ns)
        except Exception:
            failed("record.combined_job_done")

    # -- worker-pool jobs -----------------------------------------------------------

    def wrap_job(
        self,
        fn: Callable[..., T],
        kind: str | None = None,
        *,
        opens: object = None,
        reads: object = None,
        on_result: Callable[[ResponseRecord, Any], None] | None = None,
        on_error: Callable[[ResponseRecord, BaseException], None] | None = None,
        times_stat: bool = True,
    ) -> Callable[..., T] | None:
        """``fn``, about to be submitted to a worker pool, wrapped to time its wait
        and run; None when the job is not part of the response (it ended).

        ``kind`` is what the framework module knows of the job (None: nothing;
        a worker-side hook may say it later with :meth:`job_is`); ``opens`` the
        path an open job opens (it is an ``open`` only for the served file);
        ``reads`` the file object a read job reads (a body read only for the
        served file's object). While the body is being sent, a job of unknown
        kind is a body read. A stat or lookup job's run is the stat phase unless
        ``times_stat`` is False (the framework stats again, and that is timed).
        ``on_result``/``on_error`` run in the worker.
        """
        try:
            state = self.state
            if state >= _COMPLETE:
                return None
            submitted = perf_counter_ns()
            if state is _PENDING and not self._started_ns:
                self._started_ns = submitted  # where it starts, if it begins
            if not self.detailed:
                # Lean: the job's wait only, and whether an open job opened
                # the served file (compared once it ran, see _job_ran).
                if kind != n.JOB_OPEN and on_result is None and on_error is None:
                    job = _new_job(_LeanJob)
                    job.record = self
                    job._fn = fn
                    job.kind = n.JOB_OTHER
                    job.submitted = submitted
                    return job
                return self._job(
                    fn, kind or n.JOB_OTHER, submitted, opens, False, on_result, on_error
                )
            if kind == n.JOB_OPEN and not self.is_served(opens):
                kind = n.JOB_OTHER
            elif kind in (n.JOB_READ, n.JOB_CLOSE) and reads is not None:
                if not self._is_served_file_object(reads):
                    kind = n.JOB_OTHER
            elif kind is None:
                kind = n.JOB_READ if self.sending else n.JOB_OTHER
            is_stat = times_stat and kind in _STAT_JOBS
            return self._job(fn, kind, submitted, opens, is_stat, on_result, on_error)
        except Exception:
            failed("record.wrap_job")
            return None

    def _job(
        self,
        fn: Callable[..., Any],
        kind: str,
        submitted: int,
        opens: object,
        is_stat: bool,
        on_result: Callable[[ResponseRecord, Any], None] | None,
        on_error: Callable[[ResponseRecord, BaseException], None] | None,
    ) -> PoolJob:
        """A :class:`PoolJob` of this record, every slot set here (it has no
        ``__init__``: a Python call less per job)."""
        job = _new_pool_job(PoolJob)
        job.record = self
        job._fn = fn
        job.kind = kind
        job.submitted = submitted
        job.started = None
        job.opens = opens
        job.is_stat = is_stat
        job._on_result = on_result
        job._on_error = on_error
        return job

    def _stat_job_ran(self, lookup: bool, started: int, ended: int) -> None:
        """The stat phase spans the stat or lookup jobs of the file (a plain stat
        of something else, like StaticFiles' one-off check of its directory, is
        not one); once a lookup ran, plain stats before it are no longer part
        of it."""
        if lookup and not self._stat_by_lookup:
            self._stat_by_lookup = True
            self._phases.pop(n.PHASE_STAT, None)
        elif self._stat_by_lookup:
            return
        self._mark(n.PHASE_STAT, started, ended)

    def job_is(self, job: PoolJob | None, kind: str) -> None:
        """(Worker side) the running ``job`` is a ``kind`` job, says a hook inside it."""
        try:
            if job is not None and job.kind == n.JOB_OTHER:
                job.kind = kind
        except Exception:
            failed("record.job_is")

    def job_cancelled(self, job_future: Any) -> None:
        """A future's done-callback: a job cancelled while still queued never ran,
        and the response it started ends here (with ``error.type``)."""
        if job_future.cancelled():  # a method of the future: nothing of ours can fail
            self.begin()
            self.end(CancelledError())

    def _count_job(self, submitted: int, started: int) -> int | None:
        """A job of this (not ended) record ran: count it and its wait up to
        the response's end, and return that wait; None for a job submitted at
        or after the end, which is not the response's. The one owner of the
        rule, for the lean jobs and the detailed ones."""
        end = self._end_ns
        if end is None and self.state is _HEAD_SENT and self._all_sent():
            # Everything owed was handed over already (a 0-byte file, a
            # HEAD, a stat that said less than the file holds): the last
            # byte is the response's end, whatever runs after it.
            end = self._last_byte_ns
        if end is not None:
            if submitted >= end:
                return None
            if started > end:  # noqa: PLR1730 - min() parses keywords: a hot path
                started = end
        wait = started - submitted
        self._jobs += 1
        self._wait_ns += wait
        return wait

    def _job_ran(self, job: PoolJob, ended: int, ok: bool, result: object) -> None:
        try:
            if self.state >= _ENDED:
                return  # a job that outlives its response
            submitted = job.submitted
            started = job.started if job.started is not None else ended
            wait = self._count_job(submitted, started)
            if wait is None:
                return
            started = submitted + wait  # its start, or the end if it started later
            kind = job.kind
            if not self.detailed:
                # The served file's open (wrap_job compared no path: here).
                if kind == n.JOB_OPEN and self.is_served(job.opens):
                    if ok:
                        self._served_file_opened(started, ended)
                    else:
                        self._served_file_open_failed(started)
                return
            if kind == n.JOB_READ:
                self._transfer = n.TRANSFER_READ
            elif kind == n.JOB_OPEN and job.opens is not None:
                # An open job is the served file's (wrap_job checked its path).
                if ok:
                    self._served_file_opened(started, ended)
                    self._file_object_id = id(result)
                else:
                    self._served_file_open_failed(started)
            if kind in _WAIT_SPAN_JOBS:
                self._wait_spans.append((kind, submitted, started))
                if job.is_stat and not (kind == n.JOB_STAT and _not_a_file(ok, result)):
                    self._stat_job_ran(kind == n.JOB_LOOKUP, started, ended)
            elif kind == n.JOB_READ:
                self._read_count += 1
                self._read_wait_ns += wait
                if wait > self._read_wait_max_ns:  # noqa: PLR1730 - no max() call
                    self._read_wait_max_ns = wait
                self._mark(n.PHASE_SEND, submitted, ended)
        except Exception:
            failed("record.job")

    # -- sending -------------------------------------------------------------------
    #
    # One vocabulary for every framework and transfer. Every timestamp given
    # here is the START of the framework's call that handed something over
    # (an ASGI ``send``, a write to aiohttp's writer, an ``os.sendfile``): the
    # bytes may leave during that call, and a stamp taken after it returns is
    # late by the wait for the GIL (under contention, one switch interval or
    # more) while the client has them already.

    def head_sent(self, status: int, at_ns: int, content_length: int | None = None) -> None:
        """A call that began at ``at_ns`` handed the status and headers to the
        server, announcing ``content_length`` body bytes (None: unknown)."""
        try:
            self.status = status
            if self.state < _HEAD_SENT:
                self.state = _HEAD_SENT
                self._expected_bytes = content_length
                self._last_byte_ns = at_ns
        except Exception:
            failed("record.head_sent")

    def body_started(self, at_ns: int, transfer: str) -> None:
        """At ``at_ns`` the framework starts handing the body over by
        ``transfer``: ``sendfile`` (aiohttp's send: ``loop.sendfile``, or its
        read fallback, whose read jobs make the transfer ``read``) or
        ``pathsend`` (the server is handed the path, and sends the file). From
        now on a job of unknown kind is a body read."""
        try:
            self.sending = transfer
            self._send_start_ns = at_ns
            if transfer == n.TRANSFER_PATHSEND and self.detailed:
                self._transfer = transfer
                self._mark(n.PHASE_SEND, at_ns, at_ns)
        except Exception:
            failed("record.body_started")

    def body_sent(self, nbytes: int, at_ns: int, final: bool = False) -> None:
        """A call that began at ``at_ns`` handed ``nbytes`` body bytes to the
        server (an ASGI body message, an ``os.sendfile``, a write to aiohttp's
        writer); ``final``: the body is complete with it (the last body
        message; aiohttp's send returned). A HEAD sends no body, and bytes past
        the announced length are not counted (the server drops them), so the
        call that handed over the last byte owed stays the last one."""
        try:
            if nbytes > 0 and not self._head and self.state < _COMPLETE:
                expected = self._expected_bytes
                if expected is not None:
                    owed = expected - self.bytes_sent
                    if nbytes > owed:  # noqa: PLR1730 - min() parses keywords: per message
                        nbytes = owed
                if nbytes > 0:
                    self.bytes_sent += nbytes
                    self._last_byte_ns = at_ns
                    if self.detailed:
                        if self._transfer == n.TRANSFER_NONE and self.sending is not None:
                            self._transfer = self.sending
                        start = self._send_start_ns
                        self._mark(n.PHASE_SEND, at_ns if start is None else start, at_ns)
            if final:
                self._body_complete(at_ns)
        except Exception:
            failed("record.body_sent")

    def body_failed(self, at_ns: int) -> None:
        """Handing the body over raised at ``at_ns`` (a client gone mid-body):
        the response ends there, so jobs submitted later (a close) are not its
        own; unless everything owed was handed over already: then it is
        complete, and ends at its last byte."""
        try:
            if self.state >= _COMPLETE:
                return
            if self.state is _HEAD_SENT and self._all_sent():
                self._body_complete(at_ns)
                return
            self.sending = None
            self._end_ns = at_ns
            start = self._send_start_ns
            if self.detailed and start is not None:
                self._mark(n.PHASE_SEND, start, at_ns)
        except Exception:
            failed("record.body_failed")

    def _body_complete(self, at_ns: int) -> None:
        """The final call (it began at ``at_ns``) was made: the response is
        complete. It ends at its last byte: the start of the call that handed
        over the last byte owed, or the head's for a response that owes none.
        A final call with no byte of its own (an empty final message, aiohttp's
        send returning) ends it at the last byte before it, when every byte
        owed went, or some did and their number was never announced."""
        if self.state >= _COMPLETE:
            return
        end = at_ns
        last = self._last_byte_ns
        if (
            self.state is _HEAD_SENT
            and last is not None
            and (self._all_sent() or (self._expected_bytes is None and self.bytes_sent > 0))
        ):
            end = last
        self.sending = None
        self.state = _COMPLETE
        self._end_ns = end
        if self.detailed and n.PHASE_SEND in self._phases:
            self._mark(n.PHASE_SEND, end, end)

    # -- the facts ------------------------------------------------------------------

    @property
    def file_size(self) -> int | None:
        """The served file's size, when known (detailed records)."""
        return self._file_size

    def facts(self) -> FinishedResponse:
        """The response's facts as they stand, by the truth rules: the value
        :meth:`end` freezes and hands to the consumer."""
        started = self._started_ns
        end = started if self._end_ns is None else self._end_ns
        status = self.status
        error_type = self._error_type
        if status == 200 and error_type is None and not self._head:
            outcome: str = n.OUTCOME_SENT  # the common cases, without two calls
        elif status == 304 and error_type is None:
            outcome = n.OUTCOME_NOT_MODIFIED
        else:
            outcome = self._final_outcome()
            error_type = self._final_error_type()
        if self.detailed:
            # A redirect serves no file: no name, no size.
            serves_a_file = self._outcome != n.OUTCOME_REDIRECT and not (
                status is not None and 300 <= status < 400 and status != 304
            )
            path = self._file_path if serves_a_file else None
            file_path = (
                None
                if path is None
                else os.fsdecode(path)
                if isinstance(path, bytes)
                else str(path)
            )
            file_size = self._file_size if serves_a_file else None
            # In start order (ties in the order the phases came: no key function).
            ordered = [
                (start, index, phase, stop)
                for index, (phase, (start, stop)) in enumerate(self._phases.items())
            ]
            ordered.sort()
            phases = tuple(
                [
                    (phase, start if start < end else end, stop if stop < end else end)
                    for start, _, phase, stop in ordered
                ]
            )
            wait_spans = tuple(self._wait_spans)
        else:
            file_path = file_size = None
            phases = wait_spans = ()
        return _finished(
            FinishedResponse,
            (
                self.framework,
                self.parent,
                self.spans,
                self.detailed,
                started,
                end,
                status,
                outcome,
                error_type,
                self._opened or self._open_attempts > 0,
                self._transfer,
                self.bytes_sent,
                self._jobs,
                self._wait_ns,
                file_path,
                file_size,
                self._content_encoding,
                self._precondition_result or n.PRECONDITION_NONE,
                self._precondition_header,
                phases,
                wait_spans,
                self._read_count,
                self._read_wait_ns,
                self._read_wait_max_ns,
            ),
        )

    def _final_error_type(self) -> str | None:
        """Why the response failed: the exception, ``incomplete_body``, or an
        error status the framework sent without one (Starlette's 400 for a
        malformed Range, a 500): that status, as OpenTelemetry's
        ``error.type`` convention says. None when it did not fail."""
        if self._error_type is not None:
            return self._error_type
        status = self.status
        if status is not None and status >= 400 and status not in _STATUS_OUTCOMES:
            return str(status)
        return None

    def _final_outcome(self) -> str:
        if self._error_type is not None:
            return n.OUTCOME_ERROR
        status = self.status
        if status is None:
            return self._outcome or n.OUTCOME_ERROR
        outcome = _STATUS_OUTCOMES.get(status)
        if outcome is not None:
            return outcome
        if 300 <= status < 400:
            return n.OUTCOME_REDIRECT
        if status >= 400:
            return n.OUTCOME_ERROR
        if self._head:
            return n.OUTCOME_HEAD
        if status == 206:
            return n.OUTCOME_PARTIAL
        return n.OUTCOME_SENT


def _outcome_of_exception(status: int) -> str | None:
    """The outcome of an HTTP exception the framework raised (its status not sent)."""
    if status == 304:
        return None
    outcome = _STATUS_OUTCOMES.get(status)
    if outcome is not None:
        return outcome
    if 300 <= status < 400:
        return n.OUTCOME_REDIRECT
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """The process's ``open`` audit events, told to the response being served
    in this context (nothing else is done for any other event)."""
    if event == "open":
        scope = _CURRENT.get()
        if scope is not None:
            scope.record.open_seen(args[0])


_AUDITING: list[bool] = []


def watch_opens() -> None:
    """Install the audit hook (once per process: audit hooks cannot be removed;
    with no response being served it does a string comparison per event)."""
    if not _AUDITING:
        _AUDITING.append(True)
        sys.addaudithook(_audit)


def _ended(
    record: ResponseRecord,
    before_end: Callable[[ResponseRecord, BaseException | None], None] | None,
    error: BaseException | None,
) -> None:
    if before_end is not None:
        try:
            before_end(record, error)
        except Exception:
            failed("record.before_end")
    record.end(error)


async def serve_as_current(
    record: ResponseRecord,
    call: Callable[..., Awaitable[T]],
    *args: Any,
    before_end: Callable[[ResponseRecord, BaseException | None], None] | None = None,
    **kwargs: Any,
) -> T:
    """Await ``call`` with ``record`` current, then end the record.

    ``before_end`` reads what the framework knows only at the end (the final
    status, say); it runs whether ``call`` returned or raised (then with the
    exception).
    """
    token = _CURRENT.set(record._scope)
    try:
        result = await call(*args, **kwargs)
    except BaseException as error:
        _CURRENT.reset(token)
        _ended(record, before_end, error)
        raise
    _CURRENT.reset(token)
    if before_end is None:
        record.end(None)
    else:
        _ended(record, before_end, None)
    return result


def serve_as_current_sync(
    record: ResponseRecord,
    call: Callable[..., T],
    *args: Any,
    before_end: Callable[[ResponseRecord, BaseException | None], None] | None = None,
    **kwargs: Any,
) -> T:
    """:func:`serve_as_current` for a framework that serves a file response
    synchronously (a WSGI framework's file response, say)."""
    token = _CURRENT.set(record._scope)
    try:
        result = call(*args, **kwargs)
    except BaseException as error:
        _CURRENT.reset(token)
        _ended(record, before_end, error)
        raise
    _CURRENT.reset(token)
    _ended(record, before_end, None)
    return result
