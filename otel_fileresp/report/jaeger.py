# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Decode one Jaeger JSON span (query API ``/api/traces``, UI "Download Results").

A span is an object with ``traceID``, ``spanID`` (hex, possibly without
leading zeros), ``operationName``, ``references`` (``[{"refType":
"CHILD_OF", "traceID", "spanID"}]``), ``startTime`` and ``duration`` in
microseconds, and ``tags``: ``[{"key", "type", "value"}]``. The parent is the
``CHILD_OF`` reference, or the first reference when there is none.
"""

from __future__ import annotations

from otel_fileresp.report.attributes import RESPONSE_ATTRIBUTES, as_int, make_record
from otel_fileresp.report.errors import TraceShapeError
from otel_fileresp.report.ids import (
    SPAN_ID_BYTES,
    TRACE_ID_BYTES,
    normalize_id,
    normalize_parent_id,
)
from otel_fileresp.report.model import PHASE_BY_SPAN_NAME, PHASE_RESPONSE, SpanRecord

_NANOS_PER_MICRO = 1000


def record_from_jaeger_span(span: object) -> SpanRecord | None:
    """The record of a ``fileresp.*`` span, or None for any other span."""
    if not isinstance(span, dict):
        raise TraceShapeError("a span is not a JSON object")
    name = span.get("operationName")
    phase = PHASE_BY_SPAN_NAME.get(name) if isinstance(name, str) else None
    if phase is None:
        return None
    duration_us = as_int(span.get("duration"))
    if duration_us is None:
        raise TraceShapeError("Jaeger span without a valid duration")
    return make_record(
        trace_id=normalize_id(span.get("traceID"), TRACE_ID_BYTES, "traceID", allow_short_hex=True),
        span_id=normalize_id(span.get("spanID"), SPAN_ID_BYTES, "spanID", allow_short_hex=True),
        parent_span_id=normalize_parent_id(_parent_span_id(span), allow_short_hex=True),
        phase=phase,
        duration_ns=max(0, duration_us) * _NANOS_PER_MICRO,
        attributes=_tags(span.get("tags")) if phase == PHASE_RESPONSE else {},
    )


def _parent_span_id(span: dict[str, object]) -> object:
    references = span.get("references")
    if isinstance(references, list):
        parents = [ref for ref in references if isinstance(ref, dict)]
        for ref in parents:
            if ref.get("refType") == "CHILD_OF":
                return ref.get("spanID")
        if parents:
            return parents[0].get("spanID")
    # Older Jaeger JSON and some converters carry the parent directly.
    return span.get("parentSpanID")


def _tags(tags: object) -> dict[str, object]:
    """The values of the response attributes the report reads."""
    if not isinstance(tags, list):
        return {}
    found: dict[str, object] = {}
    for tag in tags:
        if not isinstance(tag, dict):
            continue
        key = tag.get("key")
        if isinstance(key, str) and key in RESPONSE_ATTRIBUTES:
            found[key] = tag.get("value")
    return found
