# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Spans and metrics from a :class:`~otel_fileresp._finished.FinishedResponse`.

Spans are emitted after the fact with explicit timestamps: ``fileresp.response``
under the parent context captured when the response started, then its phase
spans (``fileresp.stat``, ``fileresp.precondition``, ``fileresp.open``,
``fileresp.send``) and one ``fileresp.threadpool.wait`` per stat, lookup, open
or make_response job, at most 8 spans in all. With ``phase_spans=false`` the
phases are attributes ``fileresp.<phase>.duration`` of the response span.

Metrics, per response: one ``fileresp.duration`` point, and one
``fileresp.phase.duration`` point per enabled phase that happened (the
``threadpool.wait`` point is the response's total wait, only for a response
that used the pool). When the response span was recorded, the histogram
updates carry its context, so exemplars link a bucket to its trace. An
opened served file adds one to the in-process count behind ``fileresp.opens``.

Attribute values are valid UTF-8: a file name that is not (a file system name
decoded with surrogate escapes) is made valid with replacement characters.
"""

from __future__ import annotations

import os
from time import perf_counter_ns, time_ns

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from otel_fileresp import _names as n
from otel_fileresp._finished import FinishedResponse
from otel_fileresp._instruments import KEY_DURATION, KEY_PHASE, Instruments
from otel_fileresp.settings import Settings


def valid_text(text: str) -> str:
    """``text`` as valid UTF-8 (undecodable bytes become U+FFFD)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            return text.encode("utf-8", "replace").decode("utf-8")
    return text


def metrics(
    instruments: Instruments,
    settings: Settings,
    response: FinishedResponse,
    span_context: context_api.Context | None,
) -> None:
    framework = response.framework
    status = response.status
    opened = response.opened
    instruments.duration.record(
        response.duration_s,
        instruments.attributes((KEY_DURATION, framework, response.outcome, opened, status)),
        context=span_context,
    )
    enabled = settings.phase_metrics
    if enabled:
        # Each phase's duration only for a record that has phases (a lean one
        # has none: only its wait is recorded) and a phase other than the wait on.
        durations = (
            response.phase_durations()
            if response.phases and (len(enabled) > 1 or n.PHASE_THREADPOOL_WAIT not in enabled)
            else {}
        )
        for phase in n.PHASES:
            if phase not in enabled:
                continue
            if phase == n.PHASE_THREADPOOL_WAIT:
                if not response.jobs:
                    continue
                value = response.wait_s
            else:
                found = durations.get(phase)
                if found is None:
                    continue
                value = found
            instruments.phase_duration.record(
                value, instruments.attributes((KEY_PHASE, framework, phase)), context=span_context
            )
    if opened:
        instruments.open_counts.add(framework, status)


def spans(
    tracer: Tracer, settings: Settings, response: FinishedResponse
) -> context_api.Context | None:
    """Emit the response's spans; the response span's context if it was recorded."""
    wall_offset = time_ns() - perf_counter_ns()
    span = tracer.start_span(
        n.SPAN_RESPONSE,
        context=response.parent,
        kind=SpanKind.INTERNAL,
        start_time=wall_offset + response.started_ns,
    )
    try:
        if not span.is_recording():
            return None
        span.set_attributes(_response_attributes(response, settings))
        if response.error_type is not None:
            span.set_status(Status(StatusCode.ERROR))
        context = trace.set_span_in_context(span)
        if settings.phase_spans:
            _phase_spans(tracer, response, context, wall_offset)
        else:
            for phase, start, end in response.phases:
                span.set_attribute(n.phase_duration_attribute(phase), (end - start) / 1e9)
        return context
    finally:
        span.end(end_time=wall_offset + response.end_ns)


def _response_attributes(
    response: FinishedResponse, settings: Settings
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {
        n.ATTR_FRAMEWORK: response.framework,
        n.ATTR_OUTCOME: response.outcome,
        n.ATTR_OPENED: response.opened,
        n.ATTR_TRANSFER: response.transfer,
        n.ATTR_BYTES: response.bytes_sent,
        n.ATTR_JOBS: response.jobs,
        n.ATTR_WAIT: response.wait_s,
    }
    # The optional ones, in this order, when known (no generator per response).
    if response.status is not None:
        attributes[n.ATTR_STATUS_CODE] = response.status
    if response.file_size is not None:
        attributes[n.ATTR_FILE_SIZE] = response.file_size
    if response.content_encoding is not None:
        attributes[n.ATTR_CONTENT_ENCODING] = response.content_encoding
    if response.error_type is not None:
        attributes[n.ATTR_ERROR_TYPE] = response.error_type
    capture = settings.capture_path
    path = response.file_path
    if path and capture != "none":
        attributes[n.ATTR_FILE_NAME] = valid_text(os.path.basename(path))
        if capture == "full":
            attributes[n.ATTR_FILE_PATH] = valid_text(path)
    return attributes


def _phase_spans(
    tracer: Tracer, response: FinishedResponse, context: context_api.Context, wall_offset: int
) -> None:
    emitted = 1
    for phase, start, end in response.phases:
        child = tracer.start_span(
            n.SPAN_OF_PHASE[phase],
            context=context,
            kind=SpanKind.INTERNAL,
            start_time=wall_offset + start,
            attributes=_phase_span_attributes(response, phase),
        )
        child.end(end_time=wall_offset + end)
        emitted += 1
    end_ns = response.end_ns
    for kind, submitted, started in response.wait_spans[: n.MAX_SPANS_PER_RESPONSE - emitted]:
        child = tracer.start_span(
            n.SPAN_THREADPOOL_WAIT,
            context=context,
            kind=SpanKind.INTERNAL,
            start_time=wall_offset + submitted,
            attributes={n.ATTR_JOB: kind},
        )
        child.end(end_time=wall_offset + (started if started < end_ns else end_ns))


def _phase_span_attributes(
    response: FinishedResponse, phase: str
) -> dict[str, AttributeValue] | None:
    if phase == n.PHASE_PRECONDITION:
        attributes: dict[str, AttributeValue] = {
            n.ATTR_PRECONDITION_RESULT: response.precondition_result
        }
        header = response.precondition_header
        if header is not None:
            attributes[n.ATTR_PRECONDITION_HEADER] = header
        return attributes
    if phase == n.PHASE_SEND:
        return {
            n.ATTR_TRANSFER: response.transfer,
            n.ATTR_BYTES: response.bytes_sent,
            n.ATTR_READ_COUNT: response.read_count,
            n.ATTR_WAIT: response.read_wait_ns / 1e9,
            n.ATTR_WAIT_MAX: response.read_wait_max_ns / 1e9,
        }
    return None
