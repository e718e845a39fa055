# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Trace and span IDs, normalised to lowercase hex.

Exports spell IDs three ways, and the report accepts all of them:

* hex, as the Collector's ``file`` exporter and Jaeger write them
  (32 characters for a trace ID, 16 for a span ID);
* base64 of the raw bytes, the standard protobuf JSON mapping that Tempo's
  API may return (``"AAECAwQFBgcICQoLDA0ODw=="``);
* short hex from Jaeger, which drops leading zeros of the high half of a
  128-bit trace ID and writes 64-bit trace IDs with 16 characters.

An all-zero or empty parent ID means "no parent".
"""

from __future__ import annotations

import base64
import binascii
import re

from otel_fileresp.report.errors import TraceShapeError

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8

_HEX = re.compile(r"[0-9a-fA-F]+")


def normalize_id(value: object, size: int, field: str, *, allow_short_hex: bool = False) -> str:
    """Return ``value`` (hex or base64 of ``size`` bytes) as lowercase hex.

    ``allow_short_hex`` accepts hex shorter than ``2 * size`` characters and
    pads it with leading zeros, as Jaeger's IDs need.
    """
    if not isinstance(value, str) or not value:
        raise TraceShapeError(f"span without {field}")
    hex_length = 2 * size
    if _HEX.fullmatch(value):
        if len(value) == hex_length:
            return value.lower()
        if allow_short_hex and len(value) < hex_length:
            return value.lower().rjust(hex_length, "0")
    raw = _decode_base64(value)
    if raw is None or len(raw) != size:
        raise TraceShapeError(f"{field} {value!r} is neither hex nor base64 of {size} bytes")
    return raw.hex()


def normalize_parent_id(value: object, *, allow_short_hex: bool = False) -> str | None:
    """Return a parent span ID as lowercase hex, or None when there is no parent."""
    if value is None or value == "":
        return None
    span_id = normalize_id(value, SPAN_ID_BYTES, "parentSpanId", allow_short_hex=allow_short_hex)
    return None if span_id == "0" * (2 * SPAN_ID_BYTES) else span_id


def _decode_base64(value: str) -> bytes | None:
    padded = value + "=" * (-len(value) % 4)
    altchars = b"-_" if ("-" in value or "_" in value) else None
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None
