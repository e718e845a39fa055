# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Tracer, instruments and settings of an instrumentor; records start and end here.

:class:`Telemetry` makes a :class:`~otel_fileresp._record.ResponseRecord` for
each file response (or none, when nothing could record it) and, when the
record ends, hands its :class:`~otel_fileresp._finished.FinishedResponse` to
:mod:`otel_fileresp._emit` and to the consumers (:func:`add_consumer`, the
test recorder's way in).

How much a record collects is decided here, once per response:

- **no record** while both the tracer and the meter are no-ops (no SDK, or
  ``NoOpTracerProvider``/``NoOpMeterProvider``; the meter counts as a no-op
  with ``metrics=false``) or under ``suppress_instrumentation()``;
- **lean** collection when no span of the response can be recorded and no
  phase metric but the wait is enabled: the parent is not sampled and the
  tracer provider's sampler is known to drop every child of an unsampled
  parent (the SDK's ``ParentBased`` with its default not-sampled delegates,
  i.e. every ``parentbased_*`` setting). That is decided once per provider and
  again when the provider changes. Every other sampler is asked, by starting
  the span, as usual: no sampler decision is ever overridden;
- **detailed** collection otherwise.

The metric instruments are made once per meter provider and shared by both
instrumentors, so each has one callback: ``fileresp.opens`` is an observable
counter read from in-process counts (a response that opened the file pays an
integer increment), with the ``{framework, 304}`` series reported at 0 from
the moment the process's app starts serving (:meth:`Telemetry.serving`: its
startup, see :mod:`otel_fileresp._lifecycle`, or its first file response), so
``increase()`` sees the first regressed open, and a process that serves
nothing (a gunicorn master) reports no such series.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.metrics import (
    MeterProvider,
    NoOpMeter,
)
from opentelemetry.trace import NoOpTracer, ProxyTracer, TracerProvider

from otel_fileresp import _emit
from otel_fileresp import _names as n
from otel_fileresp._finished import FinishedResponse, ResponseConsumer
from otel_fileresp._instruments import Instruments, instruments_for
from otel_fileresp._log import failed
from otel_fileresp._record import ResponseRecord
from otel_fileresp.settings import Settings
from otel_fileresp.version import __version__

try:  # the keys is_instrumentation_enabled() reads, read here from one context
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as _SUPPRESS_KEY
    from opentelemetry.instrumentation.utils import (
        _SUPPRESS_INSTRUMENTATION_KEY_PLAIN as _SUPPRESS_KEY_PLAIN,
    )
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # pragma: no cover - an API without them: asked as usual
    _SUPPRESS_KEY = _SUPPRESS_KEY_PLAIN = _SPAN_KEY = None  # type: ignore[assignment]


try:  # the API's proxy meter, live once a provider is set (private in the API)
    from opentelemetry.metrics._internal import _ProxyMeter
except ImportError:  # pragma: no cover - a future API without it

    class _ProxyMeter:  # type: ignore[no-redef]
        """Stands in for the API's proxy meter: no meter is one."""


def _context_getter() -> Callable[[], context_api.Context]:
    """``context_api.get_current``, or, with the API's default runtime context,
    its context variable's own getter (the same value, two Python calls less)."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if isinstance(variable, ContextVar):
        return variable.get
    return context_api.get_current  # pragma: no cover - another runtime context


_current_context: Final = _context_getter()


def _suppressed(context: context_api.Context) -> bool:
    """Whether instrumentation is suppressed in ``context``: the two keys
    ``is_instrumentation_enabled()`` reads, read from ``context`` directly."""
    return bool(context.get(_SUPPRESS_KEY) or context.get(_SUPPRESS_KEY_PLAIN))


def _reads_agree() -> bool:
    """Whether the direct reads (:func:`_current_context`, :func:`_suppressed`,
    the parent span by its key) answer as the API's public calls do, outside and inside
    ``suppress_instrumentation()``; checked once, at import. When they do not
    (an API or contrib release that changed what they mean), the public calls
    are used."""
    if _SUPPRESS_KEY is None:  # pragma: no cover - see the imports
        return False
    try:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        def agree() -> bool:
            current = _current_context()
            return current is context_api.get_current() and _suppressed(current) is (
                not is_instrumentation_enabled()
            )

        if not agree() or _suppressed(_current_context()):
            return False
        parent = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        with_span = trace.set_span_in_context(parent)
        if (
            with_span.get(_SPAN_KEY) is not parent
            or trace.get_current_span(with_span) is not parent
        ):
            return False
        with suppress_instrumentation():
            return agree() and _suppressed(_current_context())
    except Exception:  # pragma: no cover - whatever changed: the public calls
        return False


#: The direct reads are used on each response only when they agree (:func:`_reads_agree`).
_DIRECT_READS: Final = _reads_agree()

_CONSUMERS: list[ResponseConsumer] = []


# The keys of the responses begun and not ended yet, in this process (set
# operations are atomic under the GIL: a response may end in a worker thread).
_IN_FLIGHT: set[int] = set()


def responses_in_flight() -> int:
    """How many file responses of this process have begun and not ended yet
    (the flush at shutdown waits for them: see :mod:`otel_fileresp._lifecycle`)."""
    return len(_IN_FLIGHT)


# A forked child (a gunicorn worker) serves none of its parent's responses.
os.register_at_fork(after_in_child=_IN_FLIGHT.clear)


def add_consumer(consumer: ResponseConsumer) -> Callable[[], None]:
    """Tell ``consumer`` of every file response of every instrumentor from now
    on (the test recorder counts the responses in flight with it); returns
    the remover.

    Consumers run in the thread that serves the response (the event loop, or
    a worker thread for a job that ends a response), after the telemetry was
    emitted; their failures are logged once and never reach the request.
    """
    _CONSUMERS.append(consumer)

    def remove() -> None:
        if consumer in _CONSUMERS:
            _CONSUMERS.remove(consumer)

    return remove


def drops_children_of_unsampled(tracer: object) -> bool:
    """Whether ``tracer``'s sampler is known to drop every child of an unsampled
    parent: the SDK's ``ParentBased`` (or a subclass that decides as it does,
    such as ``ParentBasedTraceIdRatio``) whose not-sampled delegates are the
    SDK's ``ALWAYS_OFF``. A subclass with its own ``should_sample``, or any
    other delegate, is asked."""
    try:
        from opentelemetry.sdk.trace.sampling import (
            Decision,
            ParentBased,
            StaticSampler,
        )
    except ImportError:  # pragma: no cover - the API alone has no sampler
        return False
    sampler = getattr(tracer, "sampler", None)
    if not isinstance(sampler, ParentBased):
        return False
    if type(sampler).should_sample is not ParentBased.should_sample:
        return False

    def drops(delegate: object) -> bool:
        return type(delegate) is StaticSampler and delegate._decision is Decision.DROP

    return drops(getattr(sampler, "_remote_parent_not_sampled", None)) and drops(
        getattr(sampler, "_local_parent_not_sampled", None)
    )


class Telemetry:
    """Tracer, instruments and settings of one instrumentor."""

    __slots__ = (
        "_decided_for",
        "_drops_unsampled",
        "_live",
        "_no_spans",
        "_phase_detail",
        "_proxied",
        "_serving",
        "_span_type",
        "framework",
        "instruments",
        "settings",
        "tracer",
    )

    def __init__(
        self,
        settings: Settings,
        framework: str,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self.framework = framework
        self.tracer = trace.get_tracer(
            n.INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=n.SCHEMA_URL
        )
        self.instruments: Instruments | None = None
        if settings.metrics:
            self.instruments = instruments_for(meter_provider)
        self._serving = False
        # Phase metrics other than the wait need every phase collected.
        self._phase_detail = settings.metrics and bool(
            settings.phase_metrics - {n.PHASE_THREADPOOL_WAIT}
        )
        self._live = False
        self._decided_for: object = None
        self._no_spans = False
        self._proxied = isinstance(self.tracer, ProxyTracer)
        self._span_type: type | None = None
        self._drops_unsampled = False

    def serving(self) -> None:
        """This process's app serves from now on: report the 304 zero series."""
        if self._serving:
            return
        self._serving = True
        if self.instruments is not None:
            self.instruments.open_counts.seed(self.framework, 304)

    # -- deciding what a response collects ----------------------------------------

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
        if isinstance(self._real_tracer(), NoOpTracer):
            instruments = self.instruments
            meter: object = None if instruments is None else instruments.meter
            if isinstance(meter, _ProxyMeter):
                meter = getattr(meter, "_real_meter", meter)
            if meter is None or isinstance(meter, NoOpMeter):
                return True
        self._live = True  # a proxy, once live, stays live
        return False

    def _real_tracer(self) -> object:
        """The tracer behind the API's proxy (the proxy itself until a provider is set)."""
        tracer = self.tracer
        return getattr(tracer, "_tracer", tracer) if self._proxied else tracer

    def may_record_spans(self, parent: context_api.Context) -> bool:
        """False when no span of a response under ``parent`` can be recorded."""
        tracer = self._real_tracer()
        if tracer is not self._decided_for:
            # Once per tracer: a no-op tracer records nothing; a sampler known
            # to drop children of unsampled parents is not asked.
            self._no_spans = isinstance(tracer, NoOpTracer)
            self._drops_unsampled = not self._no_spans and drops_children_of_unsampled(tracer)
            self._decided_for = tracer
        if self._no_spans:
            return False
        if not _DIRECT_READS:  # pragma: no cover - see _reads_agree
            span: object = trace.get_current_span(parent)
        else:
            span = parent.get(_SPAN_KEY)
            if span is None:
                return True  # no parent span: a root, the sampler is asked
        if type(span) is not self._span_type:
            # A span type met first (the ABC's check is a Python call: once).
            if not isinstance(span, trace.Span):
                return True  # not a span: a root
            self._span_type = type(span)
        parent_span = span.get_span_context()  # type: ignore[attr-defined]
        if parent_span.trace_flags & 1 or not parent_span.is_valid:  # sampled, or a root
            return True
        return not self._drops_unsampled

    def new_record(self, parent: context_api.Context | None = None) -> ResponseRecord | None:
        """A record (not begun) for a response under ``parent`` (default: the
        current context), or None when instrumentation is suppressed here or
        nothing could record it."""
        if not self._live and self.inert():
            return None
        if _DIRECT_READS:
            current = _current_context()
            if _suppressed(current):
                return None
        else:  # pragma: no cover - see _reads_agree
            current = context_api.get_current()
            if not is_instrumentation_enabled():
                return None
        if not self._serving:
            self.serving()
        if parent is None:
            parent = current
        spans = self.may_record_spans(parent)
        # (sink, framework, parent, detailed, spans): positional, a hot path
        return ResponseRecord(self, self.framework, parent, spans or self._phase_detail, spans)

    def start_record(
        self, parent: context_api.Context | None = None, *, head: bool = False
    ) -> ResponseRecord | None:
        """A record begun now, or None (see :meth:`new_record`)."""
        record = self.new_record(parent)
        if record is not None:
            record.begin(head=head)
        return record

    # -- the records' consumer -------------------------------------------------------

    def response_started(self, key: int, framework: str) -> None:
        _IN_FLIGHT.add(key)
        for consumer in _CONSUMERS:
            try:
                consumer.response_started(key, framework)
            except Exception:
                failed("consumer.started")

    def response_ended(self, key: int, finished: FinishedResponse | None) -> None:
        if finished is not None:
            span_context = None
            if finished.spans:
                try:
                    span_context = _emit.spans(self.tracer, self.settings, finished)
                except Exception:
                    failed("emit.spans")
            instruments = self.instruments
            if instruments is not None:
                try:
                    _emit.metrics(instruments, self.settings, finished, span_context)
                except Exception:
                    failed("emit.metrics")
        for consumer in _CONSUMERS:
            try:
                consumer.response_ended(key, finished)
            except Exception:
                failed("consumer.ended")
        _IN_FLIGHT.discard(key)  # its telemetry is out: the flush at shutdown has it

    def note_pool(self, kind: str) -> None:
        """The response being started runs its jobs in the running loop's pool
        of ``kind`` (see :mod:`otel_fileresp._pools`): its gauges report it."""
        instruments = self.instruments
        if instruments is not None:
            instruments.pools.note(kind, self.framework)
