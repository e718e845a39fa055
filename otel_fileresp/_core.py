# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The framework-neutral core: record the phases of one file response, then
turn them into spans and metrics.

A :class:`ResponseRecord` is created when a framework starts to resolve a file
and lives for that one response. The framework modules feed it timestamps taken
with :func:`time.perf_counter_ns` (a vDSO call on Linux: no system call) at the
places where the framework already does the work:

- :meth:`ResponseRecord.pool_job` wraps the callable the framework hands to its
  worker pool, so the job's submit time, start time (first line run by the
  worker) and end time are known without adding a job, a thread hop or a
  system call;
- :meth:`ResponseRecord.mark_phase` and :meth:`ResponseRecord.precondition`
  record phases that run on the event loop or inside a combined job;
- :meth:`ResponseRecord.finish` emits ``fileresp.response`` and its phase spans
  with explicit timestamps under the parent context captured at the start, and
  records the metrics, whether or not the trace is sampled.

Emitting spans after the fact keeps the hot path to a few integer stores per
phase and lets a non-recording parent skip all span work. Any failure of this
package's own code is caught and logged once; it never reaches the request.

A response that fails ends with ``fileresp.outcome=error`` and an
``error.type``: the exception's class name when one escaped the framework
(``ConnectionResetError``, ``BrokenPipeError`` or aiohttp's
``ClientConnectionResetError`` for a client gone mid-body; ``CancelledError``
for a server shutting down mid-body), or ``incomplete_body`` when the
framework returned normally after handing the status but not the final body
message to the server: Starlette 1.8+ stops sending, without an exception,
when the server reports ``http.disconnect`` (the client went away).
"""

from __future__ import annotations

import builtins
import io
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from time import perf_counter_ns, time_ns
from typing import Any, Final, TypeVar

from opentelemetry import context as context_api
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import MeterProvider, NoOpMeter
from opentelemetry.trace import (
    NoOpTracer,
    ProxyTracer,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)
from opentelemetry.util.types import AttributeValue

try:  # the API's proxy meter, live once a provider is set (private in the API)
    from opentelemetry.metrics._internal import _ProxyMeter
except ImportError:  # pragma: no cover - a future API without it

    class _ProxyMeter:  # type: ignore[no-redef]
        """Stands in for the API's proxy meter: no meter is one."""


from otel_fileresp import _names as n
from otel_fileresp._pools import PoolGauges
from otel_fileresp.settings import Settings
from otel_fileresp.version import __version__

_logger = logging.getLogger(__name__)

SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.37.0"

T = TypeVar("T")

_CURRENT: ContextVar[ResponseRecord | None] = ContextVar("otel_fileresp_record", default=None)

_BODY_JOB_NAMES: Final = frozenset({"read", "read1", "readinto", "readinto1", "seek"})
_WAIT_SPAN_JOBS: Final = frozenset({n.JOB_STAT, n.JOB_LOOKUP, n.JOB_OPEN, n.JOB_MAKE_RESPONSE})
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
}

_logged_once: set[str] = set()


def log_once(key: str, message: str) -> None:
    """Log this package's own failure, with its traceback, once per ``key``."""
    if key in _logged_once:
        return
    _logged_once.add(key)
    _logger.warning("otel_fileresp: %s", message, exc_info=True)


# The record of the file response being served in this context, if any (the
# context variable's own getter: no Python frame in the hooks' hot path).
current_record: Final[Callable[[], ResponseRecord | None]] = _CURRENT.get


def classify_io_job(fn: Callable[..., Any]) -> str:
    """The job kind of a plain I/O callable handed to a worker pool.

    ``open`` and ``os.stat`` are recognised by identity; reads, seeks and
    closes by being bound methods of a file object.
    """
    if fn is builtins.open:
        return n.JOB_OPEN
    if fn is os.stat:
        return n.JOB_STAT
    if isinstance(getattr(fn, "__self__", None), io.IOBase):
        name = getattr(fn, "__name__", "")
        if name in _BODY_JOB_NAMES:
            return n.JOB_READ
        if name == "close":
            return n.JOB_CLOSE
    return n.JOB_OTHER


def status_of_exception(exc: BaseException) -> int | None:
    """The HTTP status a framework answers with for an HTTP exception, else None."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 100 <= status < 600 else None


class Telemetry:
    """Tracer, instruments and settings of one instrumentor."""

    __slots__ = (
        "_live",
        "_phase_attributes",
        "duration",
        "meter",
        "opens",
        "phase_duration",
        "pools",
        "settings",
        "tracer",
    )

    def __init__(
        self,
        settings: Settings,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.tracer = trace.get_tracer(
            n.INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=SCHEMA_URL
        )
        self.meter = meter = metrics.get_meter(
            n.INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=SCHEMA_URL
        )
        buckets = list(n.DURATION_BUCKETS)
        self.duration = meter.create_histogram(
            n.METRIC_DURATION,
            unit="s",
            description="Duration of file responses, from resolving the file to the last byte.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self.phase_duration = meter.create_histogram(
            n.METRIC_PHASE_DURATION,
            unit="s",
            description="Duration of each phase of file responses; "
            "threadpool.wait has one point per stat, lookup, open or make_response job.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self.opens = meter.create_counter(
            n.METRIC_OPENS,
            unit="{open}",
            description="Files opened by Python for a file response, by response status.",
        )
        # Worker-pool occupancy gauges; the framework modules note each pool.
        self.pools = PoolGauges(meter)
        self._phase_attributes: dict[tuple[str, str], Mapping[str, AttributeValue]] = {}
        self._live = False

    def phase_attributes(self, framework: str, phase: str) -> Mapping[str, AttributeValue]:
        key = (framework, phase)
        attributes = self._phase_attributes.get(key)
        if attributes is None:
            attributes = {n.ATTR_FRAMEWORK: framework, n.ATTR_PHASE: phase}
            self._phase_attributes[key] = attributes
        return attributes

    def start_record(
        self,
        framework: str,
        parent: context_api.Context | None = None,
        started_ns: int | None = None,
    ) -> ResponseRecord | None:
        """A new record, or None when instrumentation is suppressed here, or
        when nothing could record it (no SDK, or no-op providers)."""
        if self.inert() or not is_instrumentation_enabled():
            return None
        return ResponseRecord(self, framework, parent, started_ns)

    def inert(self) -> bool:
        """True while both the tracer and the meter are no-ops.

        Without an SDK (the API's proxies before any provider is set) or with
        ``NoOpTracerProvider``/``NoOpMeterProvider``, a record would produce
        nothing, so none is made: the hooks then only call through. A proxy
        becomes live as soon as a provider is set, so this is asked for each
        response (a few attribute reads) until the answer is no, which is final.
        """
        if self._live:
            return False
        tracer = self.tracer
        if isinstance(tracer, ProxyTracer):
            tracer = getattr(tracer, "_tracer", tracer)
        meter = self.meter
        if isinstance(meter, _ProxyMeter):
            meter = getattr(meter, "_real_meter", meter)
        if isinstance(tracer, NoOpTracer) and (meter is None or isinstance(meter, NoOpMeter)):
            return True
        self._live = True  # a proxy, once live, stays live
        return False


class ResponseRecord:
    """The phases of one file response, collected while it is served."""

    __slots__ = (
        "_phases",
        "_read_wait_max_ns",
        "_read_wait_total_ns",
        "_wait_max_ns",
        "_wait_spans",
        "_wait_total_ns",
        "_wall_offset_ns",
        "body_done_ns",
        "body_pending",
        "bytes_sent",
        "content_encoding",
        "error_type",
        "file_path",
        "file_size",
        "finished",
        "framework",
        "head",
        "jobs",
        "opened",
        "parent",
        "precondition_header",
        "precondition_result",
        "read_count",
        "request_headers",
        "started_ns",
        "status",
        "telemetry",
        "transfer",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        framework: str,
        parent: context_api.Context | None = None,
        started_ns: int | None = None,
    ) -> None:
        self.telemetry = telemetry
        self.framework = framework
        self.parent = context_api.get_current() if parent is None else parent
        now = perf_counter_ns()
        self._wall_offset_ns = time_ns() - now
        self.started_ns = now if started_ns is None else started_ns
        self.status: int | None = None
        self.head = False
        # The request's headers (a case-insensitive mapping), for the framework module.
        self.request_headers: Mapping[str, str] | None = None
        self.opened = False
        self.transfer: str = n.TRANSFER_NONE
        self.bytes_sent = 0
        self.file_size: int | None = None
        self.file_path: str | None = None
        self.content_encoding: str | None = None
        self.error_type: str | None = None
        self.precondition_result: str | None = None
        self.precondition_header: str | None = None
        self._phases: dict[str, list[int]] = {}
        self.jobs = 0
        self._wait_total_ns = 0
        self._wait_max_ns = 0
        self._wait_spans: list[tuple[str, int, int]] = []
        self.read_count = 0
        self._read_wait_total_ns = 0
        self._read_wait_max_ns = 0
        self.body_done_ns: int | None = None
        # True while the head is handed to the server and the final body
        # message is not (set by a framework module that sees the messages).
        self.body_pending = False
        self.finished = False

    # -- collecting ---------------------------------------------------------

    def mark_phase(self, phase: str, start_ns: int, end_ns: int) -> None:
        """Extend ``phase`` to cover ``[start_ns, end_ns]``."""
        interval = self._phases.get(phase)
        if interval is None:
            self._phases[phase] = [start_ns, end_ns]
        else:
            interval[0] = min(interval[0], start_ns)
            interval[1] = max(interval[1], end_ns)

    def has_phase(self, phase: str) -> bool:
        return phase in self._phases

    def phase_start(self, phase: str) -> int | None:
        interval = self._phases.get(phase)
        return None if interval is None else interval[0]

    def phase_end(self, phase: str) -> int | None:
        interval = self._phases.get(phase)
        return None if interval is None else interval[1]

    def precondition(self, start_ns: int, end_ns: int, result: str, header: str | None) -> None:
        """Record one evaluation of conditional headers; the most decisive result wins."""
        self.mark_phase(n.PHASE_PRECONDITION, start_ns, end_ns)
        current = self.precondition_result
        if current is None or _PRECONDITION_RANK[result] >= _PRECONDITION_RANK[current]:
            self.precondition_result = result
            self.precondition_header = header

    def body_sent(self, size: int, now_ns: int) -> None:
        """Count body bytes handed to the server; the send phase starts at the first."""
        self.bytes_sent += size
        self.mark_phase(n.PHASE_SEND, now_ns, now_ns)

    def set_file(self, path: str | os.PathLike[str] | None, size: int | None) -> None:
        if path is not None:
            self.file_path = os.fspath(path)
        if size is not None:
            self.file_size = size

    def pool_job(
        self,
        kind: str,
        fn: Callable[..., T],
        on_result: Callable[[ResponseRecord, T], None] | None = None,
        on_error: Callable[[ResponseRecord, BaseException], None] | None = None,
        times_phase: bool = True,
    ) -> Callable[..., T]:
        """Wrap ``fn`` (about to be submitted to a worker pool) to time its wait and run.

        The returned callable runs ``fn`` unchanged, with this record current
        in the worker, and notes when the worker started and ended it; then
        ``on_result`` or ``on_error`` is called in the worker. A stat, lookup
        or open job's run time is its phase's, unless ``times_phase`` is False
        (the framework module times that phase itself).
        """
        submitted = perf_counter_ns()
        self.jobs += 1
        if kind == n.JOB_READ:
            self.mark_phase(n.PHASE_SEND, submitted, submitted)
        record = self

        def run_job(*args: Any, **kwargs: Any) -> T:
            started = perf_counter_ns()
            token = _CURRENT.set(record)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                _CURRENT.reset(token)
                ended = perf_counter_ns()
                record._job_done(kind, times_phase, submitted, started, ended, False, None, None)
                if on_error is not None:
                    try:
                        on_error(record, exc)
                    except Exception:
                        log_once("job.on_error", "failed to record a failed worker-pool job")
                raise
            _CURRENT.reset(token)
            ended = perf_counter_ns()
            record._job_done(kind, times_phase, submitted, started, ended, True, result, on_result)
            return result

        return run_job

    def _job_done(
        self,
        kind: str,
        times_phase: bool,
        submitted: int,
        started: int,
        ended: int,
        ok: bool,
        result: Any,
        on_result: Callable[[ResponseRecord, Any], None] | None,
    ) -> None:
        try:
            if self.finished:
                return  # a job that outlives its response (aiohttp's deferred close)
            wait = started - submitted
            self._wait_total_ns += wait
            self._wait_max_ns = max(self._wait_max_ns, wait)
            if kind in _WAIT_SPAN_JOBS:
                self._wait_spans.append((kind, submitted, started))
                if kind == n.JOB_OPEN:
                    self.opened = self.opened or ok
                    if times_phase and ok:  # fileresp.open only for a file opened
                        self.mark_phase(n.PHASE_OPEN, started, ended)
                elif kind != n.JOB_MAKE_RESPONSE and times_phase:
                    self.mark_phase(n.PHASE_STAT, started, ended)
            elif kind == n.JOB_READ:
                self.transfer = n.TRANSFER_READ
                self.read_count += 1
                self._read_wait_total_ns += wait
                self._read_wait_max_ns = max(self._read_wait_max_ns, wait)
            if ok and on_result is not None:
                on_result(self, result)
        except Exception:
            log_once("job", "failed to record a worker-pool job")

    # -- finishing ----------------------------------------------------------

    def outcome(self) -> str:
        status = self.status
        if status is None or self.error_type is not None:
            return n.OUTCOME_ERROR
        outcome = _STATUS_OUTCOMES.get(status)
        if outcome is not None:
            return outcome
        if status >= 400:
            return n.OUTCOME_ERROR
        if self.head:
            return n.OUTCOME_HEAD
        if status == 206:
            return n.OUTCOME_PARTIAL
        return n.OUTCOME_SENT

    def discard(self) -> None:
        """Drop the record without telemetry: it turned out not to be a file response."""
        self.finished = True

    def finish(self, exc: BaseException | None = None) -> None:
        """End the response (once): emit its spans and record its metrics.

        A response whose head was handed to the server but whose final body
        message never was (``body_pending``), with no exception, failed all
        the same: ``error.type`` is ``incomplete_body``. A failing metric
        pipeline does not cost the spans, nor the reverse.
        """
        if self.finished:
            return
        self.finished = True
        end_ns = self.body_done_ns or perf_counter_ns()
        try:
            if exc is not None:
                status = status_of_exception(exc)
                if status is None:
                    self.error_type = type(exc).__qualname__
                elif self.status is None:
                    self.status = status
            if self.body_pending and self.error_type is None:
                self.error_type = n.ERROR_INCOMPLETE_BODY
            self._record_metrics(end_ns)
        except Exception:
            log_once("finish.metrics", "failed to record the metrics of a file response")
        try:
            self._emit_spans(end_ns)
        except Exception:
            log_once("finish", "failed to emit the spans of a file response")

    def _record_metrics(self, end_ns: int) -> None:
        telemetry = self.telemetry
        framework = self.framework
        attributes: dict[str, AttributeValue] = {
            n.ATTR_FRAMEWORK: framework,
            n.ATTR_OUTCOME: self.outcome(),
            n.ATTR_OPENED: self.opened,
        }
        if self.status is not None:
            attributes[n.ATTR_STATUS_CODE] = self.status
        telemetry.duration.record((end_ns - self.started_ns) / 1e9, attributes)
        for phase, (start, end) in self._phases.items():
            telemetry.phase_duration.record(
                (end - start) / 1e9, telemetry.phase_attributes(framework, phase)
            )
        if self._wait_spans:
            # The jobs on the response's critical path, as the wait spans; the
            # reads' waits are summed on fileresp.send (one point per read
            # would cost a histogram update per 64 KiB).
            wait_attributes = telemetry.phase_attributes(framework, n.PHASE_THREADPOOL_WAIT)
            for _, submitted, started in self._wait_spans:
                telemetry.phase_duration.record((started - submitted) / 1e9, wait_attributes)
        if self.opened:
            opened_attributes: dict[str, AttributeValue] = {n.ATTR_FRAMEWORK: framework}
            if self.status is not None:
                opened_attributes[n.ATTR_STATUS_CODE] = self.status
            telemetry.opens.add(1, opened_attributes)

    def _wall(self, perf_ns: int) -> int:
        return self._wall_offset_ns + perf_ns

    def _emit_spans(self, end_ns: int) -> None:
        tracer = self.telemetry.tracer
        span = tracer.start_span(
            n.SPAN_RESPONSE,
            context=self.parent,
            kind=SpanKind.INTERNAL,
            start_time=self._wall(self.started_ns),
        )
        try:
            if not span.is_recording():
                return
            span.set_attributes(self._response_attributes())
            if self.error_type is not None:
                span.set_status(Status(StatusCode.ERROR))
            if self.telemetry.settings.phase_spans:
                self._emit_phase_spans(trace.set_span_in_context(span), end_ns)
            else:
                for phase, (start, end) in self._phases.items():
                    span.set_attribute(f"fileresp.{phase}.duration", (end - start) / 1e9)
        finally:
            span.end(end_time=self._wall(end_ns))

    def _response_attributes(self) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            n.ATTR_FRAMEWORK: self.framework,
            n.ATTR_OUTCOME: self.outcome(),
            n.ATTR_OPENED: self.opened,
            n.ATTR_TRANSFER: self.transfer,
            n.ATTR_BYTES: self.bytes_sent,
            n.ATTR_JOBS: self.jobs,
            n.ATTR_WAIT: self._wait_total_ns / 1e9,
        }
        if self.status is not None:
            attributes[n.ATTR_STATUS_CODE] = self.status
        if self.file_size is not None:
            attributes[n.ATTR_FILE_SIZE] = self.file_size
        capture = self.telemetry.settings.capture_path
        if self.file_path and capture != "none":
            attributes[n.ATTR_FILE_NAME] = os.path.basename(self.file_path)
            if capture == "full":
                attributes[n.ATTR_FILE_PATH] = self.file_path
        if self.content_encoding is not None:
            attributes[n.ATTR_CONTENT_ENCODING] = self.content_encoding
        if self.error_type is not None:
            attributes[n.ATTR_ERROR_TYPE] = self.error_type
        return attributes

    def _emit_phase_spans(self, context: context_api.Context, end_ns: int) -> None:
        tracer = self.telemetry.tracer
        emitted = 1
        for phase, (start, end) in sorted(self._phases.items(), key=lambda item: item[1][0]):
            child = tracer.start_span(
                n.PHASE_SPAN_NAMES[phase],
                context=context,
                kind=SpanKind.INTERNAL,
                start_time=self._wall(start),
                attributes=self._phase_span_attributes(phase),
            )
            child.end(end_time=self._wall(min(end, end_ns)))
            emitted += 1
        for kind, submitted, started in self._wait_spans[: n.MAX_SPANS_PER_RESPONSE - emitted]:
            child = tracer.start_span(
                n.SPAN_THREADPOOL_WAIT,
                context=context,
                kind=SpanKind.INTERNAL,
                start_time=self._wall(submitted),
                attributes={n.ATTR_JOB: kind},
            )
            child.end(end_time=self._wall(started))

    def _phase_span_attributes(self, phase: str) -> dict[str, AttributeValue] | None:
        if phase == n.PHASE_PRECONDITION:
            attributes: dict[str, AttributeValue] = {
                n.ATTR_PRECONDITION_RESULT: self.precondition_result or n.PRECONDITION_NONE
            }
            if self.precondition_header is not None:
                attributes[n.ATTR_PRECONDITION_HEADER] = self.precondition_header
            return attributes
        if phase == n.PHASE_SEND:
            return {
                n.ATTR_TRANSFER: self.transfer,
                n.ATTR_BYTES: self.bytes_sent,
                n.ATTR_READ_COUNT: self.read_count,
                n.ATTR_WAIT: self._read_wait_total_ns / 1e9,
                n.ATTR_WAIT_MAX: self._read_wait_max_ns / 1e9,
            }
        return None


async def run_as_current(
    record: ResponseRecord,
    call: Callable[..., Awaitable[T]],
    *args: Any,
    before_finish: Callable[[ResponseRecord], None] | None = None,
    **kwargs: Any,
) -> T:
    """Await ``call`` with ``record`` current, then finish the record.

    ``before_finish`` reads what the framework knows only at the end (the
    final status, say); it runs whether ``call`` returned or raised.
    """
    token = _CURRENT.set(record)
    error: BaseException | None = None
    try:
        return await call(*args, **kwargs)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _CURRENT.reset(token)
        if before_finish is not None:
            try:
                before_finish(record)
            except Exception:
                log_once("before_finish", "failed to read the end of a file response")
        record.finish(error)
        # Break the frame -> exception -> traceback -> frame cycle: it would keep
        # the framework's frames (and the open file in them) alive until a GC.
        error = None
