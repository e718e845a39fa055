# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Decode one exported span into a :class:`~otel_fileresp.report.model.SpanRecord`.

Three spellings of a span are read, each by its own function; each returns
None for a span that is not ``fileresp.*``:

* :func:`record_from_otlp_span`: OTLP JSON (Collector ``file`` exporter,
  Tempo). ``traceId``, ``spanId``, ``parentSpanId``, ``name``,
  ``startTimeUnixNano``/``endTimeUnixNano`` (strings or numbers) and
  ``attributes``, a list of ``{"key": ..., "value": {"stringValue" |
  "intValue" | "boolValue" | "doubleValue": ...}}``.
* :func:`record_from_jaeger_span`: Jaeger JSON (query API, UI "Download
  Results"). ``traceID``, ``spanID``, ``operationName``, ``references``
  (the parent is the ``CHILD_OF`` one, else the first), ``duration`` in
  microseconds and ``tags``, a list of ``{"key", "type", "value"}``.
* :func:`record_from_console_span`: the OpenTelemetry Python SDK's
  ``ConsoleSpanExporter`` (``ReadableSpan.to_json()``). ``name``,
  ``context.trace_id``/``context.span_id`` and ``parent_id`` (``0x`` and
  hex), ``start_time``/``end_time`` as ISO 8601 UTC times with microseconds,
  and ``attributes``, a plain object. Durations are therefore whole
  microseconds.

With ``group_by`` (``report --by``), a response span also keeps that
attribute, taken from the span or else from its resource (OTLP
``resource.attributes``, the Jaeger process's tags and ``serviceName`` as
``service.name``, the console span's ``resource.attributes``).

IDs are normalised to lowercase hex. Exports spell them as hex, as base64 of
the raw bytes (the protobuf JSON mapping Tempo's API may use), or as short hex
(Jaeger drops the leading zeros of a 128-bit trace ID's high half). An empty
or all-zero parent ID means "no parent".

Attribute values are read leniently, because exports differ: an integer may
be a JSON number or a string (protobuf JSON writes int64 as a string), a
boolean ``true`` or ``"true"``. A value of the wrong type counts as absent.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Final

from otel_fileresp import _names
from otel_fileresp.report.model import (
    PHASE_BY_SPAN_NAME,
    PHASE_RESPONSE,
    SpanRecord,
    grouped_framework,
)

TRACE_ID_BYTES: Final = 16
SPAN_ID_BYTES: Final = 8
_NS_PER_US: Final = 1000
_OTLP_VALUE_FIELDS: Final = ("stringValue", "intValue", "boolValue", "doubleValue")

#: The attributes of ``fileresp.response`` the report reads.
RESPONSE_ATTRIBUTES: Final = frozenset(
    {
        _names.ATTR_FRAMEWORK,
        _names.ATTR_STATUS_CODE,
        _names.ATTR_OUTCOME,
        _names.ATTR_OPENED,
        _names.ATTR_FILE_NAME,
        _names.ATTR_FILE_PATH,
    }
)


class TraceShapeError(ValueError):
    """Valid JSON that does not have the shape of a known trace export."""


def record_from_otlp_span(
    span: object, *, group_by: str | None = None, resource: Mapping[str, object] | None = None
) -> SpanRecord | None:
    """The record of an OTLP JSON ``fileresp.*`` span, or None for any other span.

    With ``group_by``, a response span's group is that attribute of the span,
    else of ``resource`` (the resource's attributes, see :func:`group_value`).
    """
    span = _span_object(span)
    phase = _phase(span.get("name"))
    if phase is None:
        return None
    start, end = as_int(span.get("startTimeUnixNano")), as_int(span.get("endTimeUnixNano"))
    if start is None or end is None:
        raise TraceShapeError("span without a valid startTimeUnixNano/endTimeUnixNano")
    attributes: dict[str, object] = {}
    otlp_attributes = span.get("attributes")
    if phase == PHASE_RESPONSE and isinstance(otlp_attributes, list):
        attributes = otlp_attribute_values(otlp_attributes, group_by)
    return _record(
        trace_id=normalize_id(span.get("traceId"), TRACE_ID_BYTES, "traceId"),
        span_id=normalize_id(span.get("spanId"), SPAN_ID_BYTES, "spanId"),
        parent_span_id=normalize_parent_id(span.get("parentSpanId")),
        phase=phase,
        duration_ns=max(0, end - start),
        attributes=attributes,
        group_by=group_by,
        resource=resource,
    )


def record_from_jaeger_span(
    span: object, *, group_by: str | None = None, resource: Mapping[str, object] | None = None
) -> SpanRecord | None:
    """The record of a Jaeger JSON ``fileresp.*`` span, or None for any other span.

    ``resource``: the tags of the span's process (and ``service.name``).
    """
    span = _span_object(span)
    phase = _phase(span.get("operationName"))
    if phase is None:
        return None
    duration_us = as_int(span.get("duration"))
    if duration_us is None:
        raise TraceShapeError("Jaeger span without a valid duration")
    attributes: dict[str, object] = {}
    tags = span.get("tags")
    if phase == PHASE_RESPONSE and isinstance(tags, list):
        for tag in tags:
            key, value = _key_and_value(tag, group_by)
            if key is not None:
                attributes[key] = value
    return _record(
        trace_id=normalize_id(span.get("traceID"), TRACE_ID_BYTES, "traceID", short_hex=True),
        span_id=normalize_id(span.get("spanID"), SPAN_ID_BYTES, "spanID", short_hex=True),
        parent_span_id=normalize_parent_id(_jaeger_parent_id(span), short_hex=True),
        phase=phase,
        duration_ns=max(0, duration_us) * _NS_PER_US,
        attributes=attributes,
        group_by=group_by,
        resource=resource,
    )


def record_from_console_span(span: object, *, group_by: str | None = None) -> SpanRecord | None:
    """The record of a ``fileresp.*`` span printed by the SDK's console exporter, or None.

    Its resource is the span's own ``resource.attributes``.
    """
    span = _span_object(span)
    phase = _phase(span.get("name"))
    if phase is None:
        return None
    context = span.get("context")
    if not isinstance(context, dict):
        raise TraceShapeError("console span without a context")
    attributes = span.get("attributes")
    return _record(
        trace_id=normalize_id(_without_0x(context.get("trace_id")), TRACE_ID_BYTES, "trace_id"),
        span_id=normalize_id(_without_0x(context.get("span_id")), SPAN_ID_BYTES, "span_id"),
        parent_span_id=normalize_parent_id(_without_0x(span.get("parent_id"))),
        phase=phase,
        duration_ns=_iso_duration_ns(span.get("start_time"), span.get("end_time")),
        attributes=attributes if isinstance(attributes, dict) else {},
        group_by=group_by,
        resource=_console_resource(span) if group_by is not None else None,
    )


def normalize_id(value: object, size: int, field: str, *, short_hex: bool = False) -> str:
    """``value`` (hex or base64 of ``size`` bytes) as lowercase hex.

    ``short_hex`` accepts hex shorter than ``2 * size`` characters and pads it
    with leading zeros, as Jaeger's IDs need.
    """
    if not isinstance(value, str) or not value:
        raise TraceShapeError(f"span without {field}")
    hex_length = 2 * size
    if len(value) == hex_length or (short_hex and len(value) < hex_length):
        try:
            raw = bytes.fromhex(value.rjust(hex_length, "0"))
        except ValueError:
            raw = b""  # not hex: base64, maybe
        if len(raw) == size:  # (fromhex skips spaces: "ab cd" is not an ID)
            return raw.hex()
    try:
        raw = base64.b64decode(
            value + "=" * (-len(value) % 4),
            altchars=b"-_" if ("-" in value or "_" in value) else None,
            validate=True,
        )
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        raise TraceShapeError(f"{field} {value!r} is neither hex nor base64 of {size} bytes")
    return raw.hex()


def normalize_parent_id(value: object, *, short_hex: bool = False) -> str | None:
    """A parent span ID as lowercase hex, or None when there is no parent."""
    if value is None or value == "":
        return None
    span_id = normalize_id(value, SPAN_ID_BYTES, "parent span ID", short_hex=short_hex)
    return None if span_id == "0" * (2 * SPAN_ID_BYTES) else span_id


def as_str(value: object) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def as_int(value: object) -> int | None:
    """An integer from a number or a decimal string, or None."""
    if isinstance(value, str):  # first: OTLP JSON writes int64 as a string
        try:
            return int(value)
        except ValueError:
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def as_bool(value: object) -> bool | None:
    """A boolean from ``true``/``false`` or their string spellings, or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _span_object(span: object) -> dict[str, object]:
    if not isinstance(span, dict):
        raise TraceShapeError("a span is not a JSON object")
    return span


def _phase(name: object) -> str | None:
    """The report's phase of a span name; None for a span that is not ``fileresp.*``."""
    return PHASE_BY_SPAN_NAME.get(name) if isinstance(name, str) else None


def otlp_attribute_values(
    attributes: list[object], extra: str | None = None, *, wanted: frozenset[str] | None = None
) -> dict[str, object]:
    """The values of OTLP JSON attributes the report reads (and ``extra``), by key.

    ``wanted`` replaces the response attributes as the keys to keep.
    """
    values: dict[str, object] = {}
    for attribute in attributes:
        key, value = _key_and_value(attribute, extra, wanted=wanted)
        if key is None or not isinstance(value, dict):
            continue
        for field in _OTLP_VALUE_FIELDS:
            if field in value:
                values[key] = value[field]
                break
    return values


def group_value(value: object) -> str | None:
    """A grouping attribute's value as text (``true``, ``3``, ``1.4.2``), or None."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)) and value != "":
        return str(value)
    return None


def _console_resource(span: Mapping[str, object]) -> Mapping[str, object] | None:
    resource = span.get("resource")
    attributes = resource.get("attributes") if isinstance(resource, dict) else None
    return attributes if isinstance(attributes, dict) else None


def _key_and_value(
    attribute: object, extra: str | None = None, *, wanted: frozenset[str] | None = None
) -> tuple[str | None, object]:
    """The key (None unless the report reads it) and value of an attribute or tag."""
    if not isinstance(attribute, dict):
        return None, None
    key = attribute.get("key")
    if not isinstance(key, str) or (
        key not in (RESPONSE_ATTRIBUTES if wanted is None else wanted) and key != extra
    ):
        return None, None
    return key, attribute.get("value")


def _jaeger_parent_id(span: dict[str, object]) -> object:
    """The span ID of the ``CHILD_OF`` reference, else of the first reference."""
    references = span.get("references")
    first = None
    for ref in references if isinstance(references, list) else ():
        if isinstance(ref, dict):
            if ref.get("refType") == "CHILD_OF":
                return ref.get("spanID")
            if first is None:
                first = ref
    if first is not None:
        return first.get("spanID")
    # Older Jaeger JSON and some converters carry the parent directly.
    return span.get("parentSpanID")


def _without_0x(value: object) -> object:
    return value[2:] if isinstance(value, str) and value.startswith("0x") else value


def _iso_duration_ns(start: object, end: object) -> int:
    try:
        elapsed = datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
    except ValueError:
        raise TraceShapeError("console span without a valid start_time/end_time") from None
    elapsed_us = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
    return max(0, elapsed_us) * _NS_PER_US


def _record(
    *,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    phase: str,
    duration_ns: int,
    attributes: Mapping[str, object],
    group_by: str | None = None,
    resource: Mapping[str, object] | None = None,
) -> SpanRecord:
    """The record of one span; only a response span keeps its attributes.

    With ``group_by`` the response's framework is ``GROUP<US>framework``
    (:func:`otel_fileresp.report.model.grouped_framework`), so that its phase
    spans, which find their framework through their parent, fall in its group.
    """
    if phase != PHASE_RESPONSE:
        return SpanRecord(trace_id, span_id, parent_span_id, phase, duration_ns)
    framework = _interned(as_str(attributes.get(_names.ATTR_FRAMEWORK)))
    if group_by is not None:
        group = group_value(attributes.get(group_by))
        if group is None and resource is not None:
            group = group_value(resource.get(group_by))
        framework = sys.intern(grouped_framework(group, framework))
    return SpanRecord(
        trace_id,
        span_id,
        parent_span_id,
        phase,
        duration_ns,
        framework=framework,
        status_code=as_int(attributes.get(_names.ATTR_STATUS_CODE)),
        outcome=_interned(as_str(attributes.get(_names.ATTR_OUTCOME))),
        opened=as_bool(attributes.get(_names.ATTR_OPENED)),
        file_name=as_str(attributes.get(_names.ATTR_FILE_NAME))
        or as_str(attributes.get(_names.ATTR_FILE_PATH)),
    )


def _interned(value: str | None) -> str | None:
    """One shared copy of a low-cardinality value (the report keeps many)."""
    return None if value is None else sys.intern(value)
