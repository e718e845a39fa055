# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Read trace exports and hand their ``fileresp.*`` spans to a sink.

The format is detected for each top-level JSON value, so a file may mix them
and a JSON-lines file is detected line by line:

* ``{"resourceSpans": [...]}``: OTLP JSON, one per line from the Collector's
  ``file`` exporter, or a single document (the legacy
  ``instrumentationLibrarySpans`` is read like ``scopeSpans``);
* ``{"batches": [...]}`` or ``{"trace": {"resourceSpans": [...]}}``: Tempo's
  trace-by-ID API (v1 and v2), also ``{"result": {...}}`` from Jaeger's
  OTLP-based API v3;
* ``{"data": [...]}``: Jaeger's query API and UI "Download Results"; a bare
  top-level array of Jaeger traces (older UI downloads) is read too;
* ``resourceMetrics``/``resourceLogs`` lines (a Collector file shared by
  several pipelines) are skipped.

A file whose first bytes are the gzip magic number is decompressed on the
fly; ``-`` reads standard input.

Memory: spans are decoded one at a time by
:class:`~otel_fileresp.report.jsonstream.JsonPullParser`, so a file of any
size is read with memory for one span, one chunk of text and the
aggregates. The sink is told where each *unit* ends (one ``resourceSpans``
element, one Tempo batch, one Jaeger trace, which holds a whole trace) so it
can forget what it keeps only to resolve parents.
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, Final, Protocol, TextIO

from otel_fileresp.report.errors import InputError, TraceShapeError
from otel_fileresp.report.jaeger import record_from_jaeger_span
from otel_fileresp.report.jsonstream import CHUNK_CHARS, JsonPullParser, JsonSyntaxError
from otel_fileresp.report.model import SpanRecord
from otel_fileresp.report.otlp import record_from_otlp_span

STDIN_PATH: Final = "-"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ENCODING: Final = "utf-8-sig"  # UTF-8, with or without a byte-order mark

_RESOURCE_SPANS_KEYS: Final = frozenset({"resourceSpans", "batches"})
_SCOPE_SPANS_KEYS: Final = frozenset({"scopeSpans", "instrumentationLibrarySpans"})
_WRAPPER_KEYS: Final = frozenset({"trace", "result"})
_JAEGER_TRACES_KEY: Final = "data"
_OTHER_SIGNAL_KEYS: Final = frozenset({"resourceMetrics", "resourceLogs", "resourceProfiles"})
_MAX_KEYS_IN_MESSAGE: Final = 5

SpanDecoder = Callable[[object], SpanRecord | None]


class SpanSink(Protocol):
    """Receives the spans of a file, and the end of each unit of them."""

    def add(self, span: SpanRecord) -> None:
        """Take one ``fileresp.*`` span."""

    def end_unit(self, *, complete_traces: bool = False) -> None:
        """The spans of one resource group, or one whole Jaeger trace, are all read."""


def display_name(path: str) -> str:
    """How a path is named in messages."""
    return "<stdin>" if path == STDIN_PATH else path


def read_file(path: str, sink: SpanSink, *, chunk_chars: int = CHUNK_CHARS) -> None:
    """Feed the ``fileresp.*`` spans of ``path`` to ``sink``; raise InputError if unreadable."""
    name = display_name(path)
    try:
        with _open_text(path) as stream:
            _ExportWalker(JsonPullParser(stream, chunk_chars), sink).read_all()
    except FileNotFoundError:
        raise InputError(name, "no such file") from None
    except IsADirectoryError:
        raise InputError(name, "is a directory") from None
    except PermissionError:
        raise InputError(name, "permission denied") from None
    except UnicodeDecodeError:
        raise InputError(name, "not UTF-8 text") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(name, f"cannot decompress gzip data: {exc}") from None
    except OSError as exc:
        raise InputError(name, exc.strerror or str(exc)) from None
    except JsonSyntaxError as exc:
        raise InputError(name, f"not JSON: {exc}") from None
    except TraceShapeError as exc:
        raise InputError(name, str(exc)) from None


@contextmanager
def _open_text(path: str) -> Iterator[TextIO]:
    if path == STDIN_PATH:
        text = _decoded(sys.stdin.buffer)
        try:
            yield text
        finally:
            text.detach()  # leave standard input open
        return
    with open(path, "rb") as raw, _decoded(raw) as text:
        yield text


def _decoded(raw: BinaryIO | io.BufferedReader) -> io.TextIOWrapper:
    peek = getattr(raw, "peek", None)
    magic = peek(len(_GZIP_MAGIC))[: len(_GZIP_MAGIC)] if peek is not None else b""
    if magic == _GZIP_MAGIC:
        return io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode="rb"), encoding=_ENCODING)
    return io.TextIOWrapper(raw, encoding=_ENCODING)


class _ExportWalker:
    """Walks the structure of trace exports and decodes their spans one by one."""

    def __init__(self, parser: JsonPullParser, sink: SpanSink) -> None:
        self._parser = parser
        self._sink = sink

    def read_all(self) -> None:
        try:
            while (char := self._parser.peek()) is not None:
                if char == "{":
                    self._document()
                elif char == "[":
                    self._jaeger_traces("the top-level array")
                else:
                    self._parser.skip_value()  # raises JsonSyntaxError if not JSON
                    raise TraceShapeError("unknown JSON shape: a top-level value is not an object")
        except TraceShapeError as exc:
            raise TraceShapeError(f"{exc} (line {self._parser.line()})") from None

    def _document(self) -> None:
        found, other_keys = self._object_with_traces(top_level=True)
        if not found:
            raise TraceShapeError(_unknown_shape(other_keys))

    def _object_with_traces(self, *, top_level: bool) -> tuple[bool, list[str]]:
        """Walk an object; return whether it held traces, and its other keys."""
        found = False
        other_keys: list[str] = []
        for key in self._parser.members():
            if key in _RESOURCE_SPANS_KEYS:
                self._resource_spans(key)
                found = True
            elif top_level and key == _JAEGER_TRACES_KEY:
                self._jaeger_traces(key)
                found = True
            elif top_level and key in _WRAPPER_KEYS and self._parser.peek() == "{":
                inner_found, inner_keys = self._object_with_traces(top_level=False)
                # An empty wrapper ({"trace": {}}) is an empty trace.
                found = found or inner_found or not inner_keys
                other_keys.extend(f"{key}.{inner}" for inner in inner_keys)
            elif key in _OTHER_SIGNAL_KEYS:
                self._parser.skip_value()
                found = True
            else:
                self._parser.skip_value()
                other_keys.append(key)
        return found, other_keys

    def _resource_spans(self, key: str) -> None:
        if self._null_or_list(key):
            return
        for _ in self._parser.items():
            self._require_object(f"an element of {key}")
            for member in self._parser.members():
                if member in _SCOPE_SPANS_KEYS:
                    self._scope_spans(member)
                else:
                    self._parser.skip_value()
            self._sink.end_unit()

    def _scope_spans(self, key: str) -> None:
        if self._null_or_list(key):
            return
        for _ in self._parser.items():
            self._require_object(f"an element of {key}")
            for member in self._parser.members():
                if member == "spans":
                    self._spans(record_from_otlp_span)
                else:
                    self._parser.skip_value()

    def _jaeger_traces(self, where: str) -> None:
        if self._null_or_list(where):
            return
        for _ in self._parser.items():
            self._require_object(f"an element of {where} (expected a Jaeger trace)")
            has_spans = False
            for member in self._parser.members():
                if member == "spans":
                    self._spans(record_from_jaeger_span)
                    has_spans = True
                else:
                    self._parser.skip_value()
            if not has_spans:
                raise TraceShapeError(f"an element of {where} has no spans: not a Jaeger trace")
            self._sink.end_unit(complete_traces=True)

    def _spans(self, decode: SpanDecoder) -> None:
        if self._null_or_list("spans"):
            return
        for _ in self._parser.items():
            record = decode(self._parser.value())
            if record is not None:
                self._sink.add(record)

    def _null_or_list(self, key: str) -> bool:
        """True (and consumed) for null; False when a list follows; else a shape error."""
        char = self._parser.peek()
        if char == "[":
            return False
        if char == "n" and self._parser.value() is None:
            return True
        raise TraceShapeError(f"unknown JSON shape: {key} is not a list")

    def _require_object(self, what: str) -> None:
        if self._parser.peek() != "{":
            raise TraceShapeError(f"unknown JSON shape: {what} is not an object")


def _unknown_shape(keys: list[str]) -> str:
    if not keys:
        return "unknown JSON shape: an empty object, no traces"
    shown = ", ".join(keys[:_MAX_KEYS_IN_MESSAGE])
    if len(keys) > _MAX_KEYS_IN_MESSAGE:
        shown += ", ..."
    return (
        "unknown JSON shape: expected OTLP (resourceSpans), Tempo (batches, trace)"
        f" or Jaeger (data) traces, found keys: {shown}"
    )
