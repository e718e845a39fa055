# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Decode one OTLP JSON span (Collector ``file`` exporter, Tempo).

A span is an object with ``traceId``, ``spanId``, ``parentSpanId`` (hex or
base64), ``name``, ``startTimeUnixNano`` and ``endTimeUnixNano`` (strings or
numbers) and ``attributes``: a list of ``{"key": ..., "value": {"stringValue"
| "intValue" | "boolValue" | "doubleValue": ...}}``.
"""

from __future__ import annotations

from otel_fileresp.report.attributes import RESPONSE_ATTRIBUTES, duration_ns, make_record
from otel_fileresp.report.errors import TraceShapeError
from otel_fileresp.report.ids import (
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    normalize_id,
    normalize_parent_id,
)
from otel_fileresp.report.model import PHASE_BY_SPAN_NAME, PHASE_RESPONSE, SpanRecord

_VALUE_FIELDS = ("stringValue", "intValue", "boolValue", "doubleValue")


def record_from_otlp_span(span: object) -> SpanRecord | None:
    """The record of a ``fileresp.*`` span, or None for any other span."""
    if not isinstance(span, dict):
        raise TraceShapeError("a span is not a JSON object")
    name = span.get("name")
    phase = PHASE_BY_SPAN_NAME.get(name) if isinstance(name, str) else None
    if phase is None:
        return None
    return make_record(
        trace_id=normalize_id(span.get("traceId"), TRACE_ID_BYTES, "traceId"),
        span_id=normalize_id(span.get("spanId"), SPAN_ID_BYTES, "spanId"),
        parent_span_id=normalize_parent_id(span.get("parentSpanId")),
        phase=phase,
        duration_ns=duration_ns(span.get("startTimeUnixNano"), span.get("endTimeUnixNano")),
        attributes=_attributes(span.get("attributes")) if phase == PHASE_RESPONSE else {},
    )


def _attributes(attributes: object) -> dict[str, object]:
    """The values of the response attributes the report reads."""
    if not isinstance(attributes, list):
        return {}
    found: dict[str, object] = {}
    for attribute in attributes:
        if not isinstance(attribute, dict):
            continue
        key = attribute.get("key")
        value = attribute.get("value")
        if not isinstance(key, str) or key not in RESPONSE_ATTRIBUTES:
            continue
        if not isinstance(value, dict):
            continue
        for field in _VALUE_FIELDS:
            if field in value:
                found[key] = value[field]
                break
    return found
