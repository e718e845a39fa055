# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""From decoded span attributes to a :class:`~otel_fileresp.report.model.SpanRecord`.

The readers collect the raw values of the few attributes the report uses
(:data:`RESPONSE_ATTRIBUTES`); this module turns them into typed fields.
Values are read leniently, because exports differ in how they spell them:
an integer may arrive as a JSON number or as a string (protobuf JSON writes
int64 as a string), a boolean as ``true`` or as the string ``"true"``.
A value of the wrong type is treated as absent rather than as an error.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Final

from otel_fileresp import _names
from otel_fileresp.report.errors import TraceShapeError
from otel_fileresp.report.model import PHASE_RESPONSE, SpanRecord

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


def make_record(
    *,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    phase: str,
    duration_ns: int,
    attributes: Mapping[str, object],
) -> SpanRecord:
    """Build the record of one span; only a response span keeps its attributes."""
    if phase != PHASE_RESPONSE:
        return SpanRecord(trace_id, span_id, parent_span_id, phase, duration_ns)
    return SpanRecord(
        trace_id,
        span_id,
        parent_span_id,
        phase,
        duration_ns,
        framework=_interned(as_str(attributes.get(_names.ATTR_FRAMEWORK))),
        status_code=as_int(attributes.get(_names.ATTR_STATUS_CODE)),
        outcome=_interned(as_str(attributes.get(_names.ATTR_OUTCOME))),
        opened=as_bool(attributes.get(_names.ATTR_OPENED)),
        file_name=as_str(attributes.get(_names.ATTR_FILE_NAME))
        or as_str(attributes.get(_names.ATTR_FILE_PATH)),
    )


def _interned(value: str | None) -> str | None:
    """One shared copy of a low-cardinality value (the report keeps many)."""
    return None if value is None else sys.intern(value)


def as_str(value: object) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value else None


def as_int(value: object) -> int | None:
    """An integer from a number or a decimal string, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def as_bool(value: object) -> bool | None:
    """A boolean from ``true``/``false`` or their string spellings, or None."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    return None


def duration_ns(start: object, end: object) -> int:
    """``end - start`` of two nanosecond timestamps (numbers or decimal strings)."""
    start_ns = as_int(start)
    end_ns = as_int(end)
    if start_ns is None or end_ns is None:
        raise TraceShapeError("span without a valid startTimeUnixNano/endTimeUnixNano")
    return max(0, end_ns - start_ns)
