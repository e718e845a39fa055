# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Record your app's file responses in tests, and assert on them.

:func:`recording` is a context manager that records every file response
served inside it (Starlette, FastAPI and aiohttp, whichever is importable);
the pytest plugin (:mod:`otel_fileresp.pytest_plugin`) wraps it as the
``fileresp_recorder`` fixture. This module needs ``opentelemetry-sdk`` (the
``test`` extra), not pytest, so unittest suites use it directly::

    from otel_fileresp.testing import recording

    with recording() as recorder:
        ...  # serve and request
        recorder.assert_not_opened(status=304)

What :func:`recording` does:

- it makes an SDK ``TracerProvider`` (sampler ``ALWAYS_ON``, so an incoming
  ``traceparent`` that is not sampled does not hide a response) with an
  in-memory span exporter, and a ``MeterProvider`` with an in-memory reader.
  They are not made global: the instrumentors are given them explicitly;
- it instruments every framework that is importable (Starlette, aiohttp) with
  them. A framework your suite instrumented already (in a ``conftest.py``,
  or under ``opentelemetry-instrument``) stays patched: only its telemetry
  is redirected to the recorder inside the block (the instrumentor's public
  ``telemetry_sent_to()``) and put back afterwards; one that was not
  instrumented is uninstrumented at the end;
- it exposes each finished file response as a :class:`RecordedResponse`.

A file response's spans are emitted when the response finishes on the server,
which can be a moment after the client got the last byte (a real server in a
thread, aiohttp's test server). The recorder follows the responses that have
started and not finished:

- :meth:`FileResponseRecorder.wait_for` waits (bounded) until a number of
  responses are recorded, and every assertion helper first waits (bounded)
  until no response is in flight. An assertion helper never passes while a
  response it should judge is still in flight: after its timeout it fails,
  naming the responses still in flight;
- in an async test (pytest-aiohttp, anyio, pytest-asyncio), where the server
  runs on the test's own event loop, use the awaitable helpers:
  ``await recorder.await_for(n)``, ``await recorder.asettle()`` and
  ``await recorder.assert_not_opened_async(...)``. The blocking helpers fail
  at once on an event loop with responses in flight, saying which helper to
  await, instead of stalling the server they wait for.

With Starlette's ``TestClient`` the response is finished when the client returns.

Method and path appear in failure messages when the response's parent is a
server span recorded by the same tracer provider, e.g. the contrib ASGI
middleware ``OpenTelemetryMiddleware(app, tracer_provider=recorder.tracer_provider)``
or contrib aiohttp-server instrumented with it; otherwise they are unknown
and the message shows the file, status, outcome and trace id.

The settings come from the environment (``OTEL_PYTHON_FILERESP_CAPTURE_PATH``,
``OTEL_PYTHON_FILERESP_PHASE_SPANS``, ``OTEL_PYTHON_FILERESP_PHASE_METRICS``)
unless given to :func:`recording`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, format_trace_id

from otel_fileresp import _names as n
from otel_fileresp._finished import FinishedResponse
from otel_fileresp._telemetry import add_consumer
from otel_fileresp.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_fileresp._instrumentor import FileResponseInstrumentor

__all__ = ["FileResponseRecorder", "RecordedResponse", "recording"]

#: How long :meth:`FileResponseRecorder.wait_for` waits by default, in seconds.
WAIT_TIMEOUT = 5.0
#: How long an assertion helper waits for in-flight responses, in seconds.
SETTLE_TIMEOUT = 2.0

# Server-span attributes for the failure message, newest convention first.
_METHOD_ATTRIBUTES = ("http.request.method", "http.method")
_PATH_ATTRIBUTES = ("url.path", "http.target", "http.route")


@dataclass(frozen=True)
class RecordedResponse:
    """One file response, as its ``fileresp.response`` span tells it."""

    framework: str
    #: The status actually sent (None if the response failed before a status).
    status: int | None
    #: ``sent``, ``partial``, ``not_modified``, ``precondition_failed``, ...
    outcome: str
    #: True if and only if Python opened the file for this response.
    opened: bool
    #: The file's base name (None with ``capture_path="none"``).
    file_name: str | None
    #: The absolute path, with ``capture_path="full"`` only.
    file_path: str | None
    transfer: str
    bytes_sent: int
    #: The whole response, in seconds.
    duration: float
    #: Seconds per phase: ``stat``, ``precondition``, ``open``, ``send`` (those
    #: that happened) and ``threadpool.wait`` (all jobs' waits summed).
    phases: Mapping[str, float]
    threadpool_jobs: int
    #: 32 hex digits, as trace backends show it.
    trace_id: str
    #: From the parent server span, when the recorder has it.
    method: str | None
    path: str | None
    error_type: str | None
    span: ReadableSpan = field(repr=False, compare=False)

    @property
    def threadpool_wait(self) -> float:
        return self.phases.get(n.PHASE_THREADPOOL_WAIT, 0.0)

    def describe(self) -> str:
        """One line for a failure message."""
        request = (
            f"{self.method} {self.path}" if self.method and self.path else "(method/path unknown)"
        )
        parts = [
            request,
            f"file={self.file_name or '?'}",
            f"status={self.status}",
            f"outcome={self.outcome}",
            f"opened={'true' if self.opened else 'false'}",
            f"framework={self.framework}",
            f"trace_id={self.trace_id}",
        ]
        if self.error_type:
            parts.append(f"error={self.error_type}")
        return "  ".join(parts)


class _InFlight:
    """A response consumer: the file responses started and not ended yet."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        # key -> (framework, when it started on time.monotonic()'s clock)
        self._started: dict[int, tuple[str, float]] = {}

    def response_started(self, key: int, framework: str) -> None:
        with self._changed:
            self._started[key] = (framework, time.monotonic())

    def response_ended(self, key: int, finished: FinishedResponse | None) -> None:
        with self._changed:
            if self._started.pop(key, None) is not None:
                self._changed.notify_all()

    def count(self) -> int:
        return len(self._started)

    def describe(self) -> str:
        with self._changed:
            started = list(self._started.values())
        now = time.monotonic()
        return "".join(
            f"\n  (in flight) framework={framework}  for {now - since:.3f} s"
            for framework, since in started
        )

    def wait_idle(self, deadline: float) -> None:
        with self._changed:
            while self._started:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._changed.wait(remaining)


def _on_event_loop() -> bool:
    """Whether this thread runs an event loop (a blocking wait would stall it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class FileResponseRecorder:
    """The file responses recorded during one test, and assertions on them."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        exporter: InMemorySpanExporter,
        meter_provider: MeterProvider,
        metric_reader: InMemoryMetricReader,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.metric_reader = metric_reader
        self._exporter = exporter
        self._in_flight = _InFlight()
        #: The frameworks instrumented for this recorder, by name.
        self.frameworks: list[str] = []

    # -- reading -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """File responses started and not finished yet."""
        return self._in_flight.count()

    @property
    def responses(self) -> list[RecordedResponse]:
        """The finished file responses, in the order they finished."""
        spans = self.spans()
        by_id = {span.context.span_id: span for span in spans if span.context is not None}
        children: dict[int, list[ReadableSpan]] = {}
        for span in spans:
            if span.parent is not None:
                children.setdefault(span.parent.span_id, []).append(span)
        return [
            _recorded(span, children, by_id)
            for span in spans
            if span.name == n.SPAN_RESPONSE and span.context is not None
        ]

    def spans(self) -> list[ReadableSpan]:
        """Every finished span the recorder's tracer provider exported."""
        return list(self._exporter.get_finished_spans())

    def metric_points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` (one collection, cumulative)."""
        data = self.metric_reader.get_metrics_data()
        return [
            point
            for resource_metrics in (data.resource_metrics if data else ())
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def clear(self) -> None:
        """Forget the spans recorded so far (metrics are cumulative and stay)."""
        self._exporter.clear()

    # -- waiting -------------------------------------------------------------

    def wait_for(self, count: int, timeout: float = WAIT_TIMEOUT) -> list[RecordedResponse]:
        """The responses, once at least ``count`` are recorded (fails after ``timeout`` s).

        In an async test use :meth:`await_for`: a blocking wait on the event
        loop would stall the server it waits for, so this fails at once there
        when the responses are not recorded yet.
        """
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while (found := self._at_least(count, deadline, timeout)) is None:
            if _on_event_loop():
                self._fail_on_loop(f"wait_for({count})", "await recorder.await_for(count)")
            time.sleep(0.005)
        return found

    async def await_for(self, count: int, timeout: float = WAIT_TIMEOUT) -> list[RecordedResponse]:
        """:meth:`wait_for` for async tests: awaits, so the server keeps running."""
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while (found := self._at_least(count, deadline, timeout)) is None:
            await asyncio.sleep(0.005)
        return found

    def _at_least(
        self, count: int, deadline: float, timeout: float
    ) -> list[RecordedResponse] | None:
        """The responses if ``count`` are recorded; None to wait on; fails past ``deadline``."""
        __tracebackhide__ = True
        responses = self.responses
        if len(responses) >= count:
            return responses
        if time.monotonic() >= deadline:
            self._fail_waiting(count, timeout, responses)
        return None

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> list[RecordedResponse]:
        """The responses, once none is in flight; fails, naming them, when some
        still are after ``timeout`` s (or at once on an event loop: use :meth:`asettle`)."""
        __tracebackhide__ = True
        if self.in_flight and _on_event_loop():
            self._fail_on_loop("settle()", "await recorder.asettle()")
        self._in_flight.wait_idle(time.monotonic() + timeout)
        return self._settled(timeout)

    async def asettle(self, timeout: float = SETTLE_TIMEOUT) -> list[RecordedResponse]:
        """:meth:`settle` for async tests: awaits, so the server keeps running."""
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return self._settled(timeout)

    def _settled(self, timeout: float) -> list[RecordedResponse]:
        __tracebackhide__ = True
        if self.in_flight:
            raise AssertionError(
                f"{self.in_flight} file response(s) still in flight after {timeout:g} s; "
                f"nothing was judged:{self._in_flight.describe()}"
            )
        return self.responses

    def _fail_waiting(self, count: int, timeout: float, responses: list[RecordedResponse]) -> None:
        __tracebackhide__ = True
        listing = "".join(f"\n  {r.describe()}" for r in responses) or "\n  (none)"
        raise AssertionError(
            f"expected at least {count} file response(s) within {timeout:g} s, "
            f"recorded {len(responses)} ({self.in_flight} in flight):{listing}"
            f"{self._in_flight.describe()}"
        )

    def _fail_on_loop(self, call: str, instead: str) -> None:
        __tracebackhide__ = True
        raise AssertionError(
            f"{call} would block the event loop that serves the {self.in_flight} file "
            f"response(s) in flight; in an async test use `{instead}`:{self._in_flight.describe()}"
        )

    # -- asserting -----------------------------------------------------------

    def assert_not_opened(
        self,
        where: Callable[[RecordedResponse], bool] | None = None,
        *,
        status: int | None = None,
        outcome: str | None = None,
        framework: str | None = None,
        timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        """Fail if a matching response opened its file.

        A response matches when it has the given ``status``, ``outcome`` and
        ``framework`` (each if given) and ``where(response)`` is true (if
        given); with no filter, any response that opened its file fails.
        """
        __tracebackhide__ = True
        wanted = _filter_text(where, status=status, outcome=outcome, framework=framework)

        def offends(response: RecordedResponse) -> bool:
            return (
                response.opened
                and (status is None or response.status == status)
                and (outcome is None or response.outcome == outcome)
                and (framework is None or response.framework == framework)
                and (where is None or where(response))
            )

        self.assert_none(offends, f"opened the file ({wanted})", timeout=timeout)

    async def assert_not_opened_async(self, *args: Any, **kwargs: Any) -> None:
        """:meth:`assert_not_opened` (same arguments) for async tests: awaits
        the responses in flight first, so the server keeps running."""
        __tracebackhide__ = True
        await self.asettle(kwargs.get("timeout", SETTLE_TIMEOUT))
        self.assert_not_opened(*args, **kwargs)

    def assert_none(
        self,
        where: Callable[[RecordedResponse], bool],
        reason: str,
        *,
        timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        """Fail, listing them, if recorded responses satisfy ``where``.

        ``reason`` completes "N file response(s) ...", e.g.
        ``recorder.assert_none(lambda r: r.transfer == "read", "were read in the pool")``.
        """
        __tracebackhide__ = True
        responses = self.settle(timeout)
        offending = [response for response in responses if where(response)]
        if offending:
            lines = "".join(f"\n  {response.describe()}" for response in offending)
            raise AssertionError(
                f"{len(offending)} of {len(responses)} file response(s) {reason}:{lines}"
            )


def _filter_text(
    where: Callable[..., bool] | None,
    *,
    status: int | None,
    outcome: str | None,
    framework: str | None,
) -> str:
    parts = [
        f"{name}={value}"
        for name, value in (("status", status), ("outcome", outcome), ("framework", framework))
        if value is not None
    ]
    if where is not None:
        parts.append(f"where={getattr(where, '__name__', 'predicate')}")
    return ", ".join(parts) or "any response"


def _recorded(
    span: ReadableSpan, children: Mapping[int, Sequence[ReadableSpan]], by_id: Mapping[int, Any]
) -> RecordedResponse:
    attributes: Mapping[str, Any] = span.attributes or {}
    span_id = span.context.span_id if span.context is not None else 0
    phases: dict[str, float] = {}
    for child in children.get(span_id, ()):
        phase = n.PHASE_OF_SPAN.get(child.name)
        if phase is not None and child.start_time is not None and child.end_time is not None:
            phases[phase] = (child.end_time - child.start_time) / 1e9
    for phase in n.PHASES:
        # With phase_spans=false the phases are attributes of the response.
        value = attributes.get(n.phase_duration_attribute(phase))
        if isinstance(value, float):
            phases[phase] = value
    phases[n.PHASE_THREADPOOL_WAIT] = float(attributes.get(n.ATTR_WAIT, 0.0))
    method, path = _request_of(span, by_id)
    status = attributes.get(n.ATTR_STATUS_CODE)
    duration = (
        (span.end_time - span.start_time) / 1e9
        if span.end_time is not None and span.start_time is not None
        else 0.0
    )
    return RecordedResponse(
        framework=str(attributes.get(n.ATTR_FRAMEWORK, "")),
        status=status if isinstance(status, int) else None,
        outcome=str(attributes.get(n.ATTR_OUTCOME, "")),
        opened=attributes.get(n.ATTR_OPENED) is True,
        file_name=_optional_str(attributes.get(n.ATTR_FILE_NAME)),
        file_path=_optional_str(attributes.get(n.ATTR_FILE_PATH)),
        transfer=str(attributes.get(n.ATTR_TRANSFER, "")),
        bytes_sent=int(attributes.get(n.ATTR_BYTES, 0)),
        duration=duration,
        phases=phases,
        threadpool_jobs=int(attributes.get(n.ATTR_JOBS, 0)),
        trace_id=format_trace_id(span.context.trace_id) if span.context is not None else "",
        method=method,
        path=path,
        error_type=_optional_str(attributes.get(n.ATTR_ERROR_TYPE)),
        span=span,
    )


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _request_of(span: ReadableSpan, by_id: Mapping[int, Any]) -> tuple[str | None, str | None]:
    """Method and path from the nearest SERVER ancestor the recorder has."""
    parent = span.parent
    for _ in range(16):  # bounded walk up the recorded ancestors
        if parent is None:
            break
        ancestor = by_id.get(parent.span_id)
        if ancestor is None:
            break
        if ancestor.kind == SpanKind.SERVER:
            attributes: Mapping[str, Any] = ancestor.attributes or {}
            method = next((attributes[a] for a in _METHOD_ATTRIBUTES if a in attributes), None)
            path = next((attributes[a] for a in _PATH_ATTRIBUTES if a in attributes), None)
            return _optional_str(method), _optional_str(path)
        parent = ancestor.parent
    return None, None


@contextmanager
def _recording_into(
    recorder: FileResponseRecorder,
    instrumentor: FileResponseInstrumentor[Any],
    framework: str,
    settings: Mapping[str, Any],
) -> Iterator[None]:
    """Send ``instrumentor``'s telemetry to ``recorder``; restore it afterwards."""
    was_instrumented = instrumentor.is_instrumented_by_opentelemetry
    if not was_instrumented:
        instrumentor.instrument(
            tracer_provider=recorder.tracer_provider,
            meter_provider=recorder.meter_provider,
            **settings,
        )
        if not instrumentor.is_instrumented_by_opentelemetry:
            # A dependency conflict, logged by opentelemetry-instrumentation.
            yield
            return
    recorder.frameworks.append(framework)
    try:
        with instrumentor.telemetry_sent_to(
            recorder.tracer_provider, recorder.meter_provider, **settings
        ):
            yield
    finally:
        if not was_instrumented:
            instrumentor.uninstrument()


@contextmanager
def recording(
    capture_path: str | None = None,
    phase_spans: bool | None = None,
    phase_metrics: str | Iterable[str] | None = None,
) -> Iterator[FileResponseRecorder]:
    """Record the file responses served inside the ``with`` block.

    This is what the ``fileresp_recorder`` fixture uses; the settings default
    to the environment's. It needs ``opentelemetry-sdk`` (the ``test`` extra:
    ``pip install "otel-fileresp[test]"``), not pytest: unittest suites use it
    as is.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "otel_fileresp's recorder needs opentelemetry-sdk "
            '(pip install "otel-fileresp[test]" or opentelemetry-sdk)'
        ) from exc

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ALWAYS_ON)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    metric_reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metric_reader])
    recorder = FileResponseRecorder(tracer_provider, exporter, meter_provider, metric_reader)
    resolved = Settings.resolve(capture_path, phase_spans, phase_metrics)
    settings = {
        "capture_path": resolved.capture_path,
        "phase_spans": resolved.phase_spans,
        "phase_metrics": resolved.phase_metrics,
    }
    remove_consumer = add_consumer(recorder._in_flight)
    try:
        with ExitStack() as stack:
            from otel_fileresp._instrumentor import instrumentor_classes

            for instrumentor_class in instrumentor_classes():
                if importlib.util.find_spec(instrumentor_class.framework_module) is None:
                    continue
                instrumentor = instrumentor_class()
                framework = instrumentor_class.framework_name
                stack.enter_context(_recording_into(recorder, instrumentor, framework, settings))
            yield recorder
    finally:
        remove_consumer()
        tracer_provider.shutdown()
        meter_provider.shutdown()
