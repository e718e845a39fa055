# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Read trace files and hand their ``fileresp.*`` spans to a ReportBuilder.

A file is read line by line. A line that starts with ``{`` or ``[`` starts a
JSON document, which may go on over the following lines (pretty-printed
JSON); any other non-blank line is ignored and counted (log lines mixed with
the spans of the SDK's console exporter, for example). Each document has its
own format:

* ``{"resourceSpans": [...]}``: OTLP JSON, one per line from the Collector's
  ``file`` exporter, or a single document (the legacy
  ``instrumentationLibrarySpans`` is read like ``scopeSpans``);
* ``{"batches": [...]}`` or ``{"trace": {"resourceSpans": [...]}}``: Tempo's
  trace-by-ID API (v1 and v2), also ``{"result": {...}}`` from Jaeger's
  OTLP-based API v3;
* ``{"data": [...]}``: Jaeger's query API and UI "Download Results"; a bare
  top-level array of Jaeger traces (older UI downloads) is read too;
* ``{"name": ..., "context": {...}, ...}``: one span as the OpenTelemetry
  Python SDK's ``ConsoleSpanExporter`` prints it (what
  ``OTEL_TRACES_EXPORTER=console`` writes on standard output, pretty-printed
  objects one after the other);
* ``resourceMetrics``/``resourceLogs`` documents (a Collector file shared by
  several pipelines) are skipped.

A file whose first bytes are the gzip magic number is decompressed on the
fly; ``-`` reads standard input.

Memory: a document on one line of up to :data:`LINE_BYTES_PARSED_WHOLE`
(a Collector line), or over several lines of up to
:data:`MULTILINE_BYTES_PARSED_WHOLE` (a console span), is parsed whole with
the standard library's :mod:`json`. A larger one (a Jaeger search result, a
Tempo trace) is streamed with ``ijson`` (its C backend ``yajl2_c`` when it
is installed, else its pure-Python one), one resource group (OTLP) or one
trace (Jaeger) at a time; its format is taken from its first keys, and it is
read to the end of the file, so whatever follows it in the same file must be
documents of the same kind.

``ijson`` is the ``report`` extra (``pip install 'otel-fileresp[report]'``),
imported by the first document that is streamed, so neither an instrumented
app nor a report over Collector lines or console spans loads it. Without it,
such a document is an :class:`InputError` naming the extra: it is not parsed
whole instead, because memory would then grow with the document.
"""

from __future__ import annotations

import codecs
import gzip
import itertools
import json
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, BinaryIO, Final

from otel_fileresp.report.aggregate import ReportBuilder
from otel_fileresp.report.model import SpanRecord
from otel_fileresp.report.spans import (
    TraceShapeError,
    otlp_attribute_values,
    record_from_console_span,
    record_from_jaeger_span,
    record_from_otlp_span,
)

STDIN_PATH: Final = "-"
#: The longest line read whole, in bytes: a longer JSON document is streamed.
LINE_BYTES_PARSED_WHOLE: Final = 1 << 20
#: The largest JSON document over several lines parsed whole; larger ones are streamed.
MULTILINE_BYTES_PARSED_WHOLE: Final = 64 << 10
_STREAM_CHUNK_BYTES: Final = 1 << 16
_GZIP_MAGIC: Final = b"\x1f\x8b"
_UTF8_BOM: Final = codecs.BOM_UTF8
_DOCUMENT_START: Final = re.compile(rb"[ \t\r]*[\[{]")
_DOCUMENT_END: Final = (b"}", b"]")

_RESOURCE_SPANS_KEYS: Final = frozenset({"resourceSpans", "batches"})
_SCOPE_SPANS_KEYS: Final = ("scopeSpans", "instrumentationLibrarySpans")
_WRAPPER_KEYS: Final = frozenset({"trace", "result"})
_JAEGER_TRACES_KEY: Final = "data"
_OTHER_SIGNAL_KEYS: Final = frozenset({"resourceMetrics", "resourceLogs", "resourceProfiles"})
#: Where the resource groups of a streamed OTLP or Tempo document are (ijson prefixes).
_RESOURCE_GROUP_PREFIXES: Final = frozenset(
    f"{path}.item"
    for key in _RESOURCE_SPANS_KEYS
    for path in (key, *(f"{wrapper}.{key}" for wrapper in _WRAPPER_KEYS))
)
_MAX_KEYS_IN_MESSAGE: Final = 5

#: How to install ijson, which streams the large documents.
IJSON_INSTALL: Final = "pip install 'otel-fileresp[report]'"


def ijson_backend() -> Any:
    """The ijson backend large documents are streamed with, imported now.

    Its C backend ``yajl2_c``, else (no compiled extension for this
    platform) its pure-Python one. Raises :class:`ImportError` without ijson.
    """
    import ijson  # type: ignore[import-untyped]

    try:
        return ijson.get_backend("yajl2_c")
    except ImportError:
        return ijson.get_backend("python")


UnitReader = Callable[[object], None]


class InputError(Exception):
    """A trace file that cannot be read: ``path`` and a one-line ``reason``.

    The only exception :func:`otel_fileresp.report.summarize` raises for bad
    input (a missing file, a directory, JSON that is broken or is not a
    trace export). The command line prints it as one line,
    ``otel-fileresp: error: FILE: reason``, and exits with status 2.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def display_name(path: str) -> str:
    """How a path is named in messages."""
    return "<stdin>" if path == STDIN_PATH else path


def read_file(path: str, builder: ReportBuilder, *, group_by: str | None = None) -> int:
    """Feed the ``fileresp.*`` spans of ``path`` to ``builder``; return the lines ignored.

    ``group_by`` names a span or resource attribute that groups the responses
    (``report --by``; see :mod:`otel_fileresp.report.spans`). Raises
    :class:`InputError` if the file cannot be read.
    """
    name = display_name(path)
    try:
        with _open_binary(path) as stream:
            return _FileReader(stream, builder, name, group_by).read()
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


@contextmanager
def _open_binary(path: str) -> Iterator[BinaryIO]:
    opened = nullcontext(sys.stdin.buffer) if path == STDIN_PATH else open(path, "rb")  # noqa: SIM115
    with opened as raw:
        peek = getattr(raw, "peek", None)
        magic = peek(len(_GZIP_MAGIC))[: len(_GZIP_MAGIC)] if peek is not None else b""
        if magic == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unpacked:
                yield unpacked  # type: ignore[misc]
        else:
            yield raw


def _line_ended(piece: bytes) -> bool:
    """Whether a piece returned by ``readline(LINE_BYTES_PARSED_WHOLE)`` ends its line."""
    return piece.endswith(b"\n") or len(piece) < LINE_BYTES_PARSED_WHOLE


class _FileReader:
    """Splits one file into JSON documents and ignored lines, and reads the documents."""

    def __init__(
        self, stream: BinaryIO, builder: ReportBuilder, name: str, group_by: str | None = None
    ) -> None:
        self._stream = stream
        self._builder = builder
        self._name = name
        self._group_by = group_by
        self._lines_read = 0
        self._ignored_lines = 0
        self._document_line = 0  # where the document being read starts

    def read(self) -> int:
        """Read the whole file; return how many lines were ignored."""
        held = bytearray()  # a document whose last line has not come yet
        for piece in self._pieces():
            first_line = not held
            if first_line and (piece.isspace() or not _DOCUMENT_START.match(piece)):
                self._skip_line(piece)
                continue
            if first_line:
                self._document_line = self._lines_read + 1
            too_long = held and len(held) + len(piece) > MULTILINE_BYTES_PARSED_WHOLE
            if too_long or not _line_ended(piece):
                self._stream_document(bytes(held) + piece if held else piece)
                return self._ignored_lines
            held += piece
            self._lines_read += 1
            if first_line or piece.rstrip() in _DOCUMENT_END:
                self._read_held(held, first_line=first_line, final=False)
        if held:
            self._read_held(held, first_line=False, final=True)
        return self._ignored_lines

    def _pieces(self) -> Iterator[bytes]:
        """The file's lines, cut at :data:`LINE_BYTES_PARSED_WHOLE`, without a byte-order mark."""
        pieces = iter(partial(self._stream.readline, LINE_BYTES_PARSED_WHOLE), b"")
        for first in pieces:
            yield first.removeprefix(_UTF8_BOM)
            break
        yield from pieces

    def _read_held(self, held: bytearray, *, first_line: bool, final: bool) -> None:
        """Read the document in ``held`` and empty ``held``, unless the document goes on.

        A whole line that starts like JSON but is not (``[2026-12-01 ...]
        INFO``) is ignored like any other line that is not JSON; a document
        that breaks off, or that the file cuts short, is an error.
        """
        try:
            document = json.loads(held)
        except json.JSONDecodeError as exc:
            line_ended = held.endswith(b"\n") and not final
            if line_ended and _is_truncated(exc):
                return
            if line_ended and first_line:
                self._ignored_lines += 1
                held.clear()
                return
            line = self._document_line + exc.lineno - 1
            raise self._error(f"not JSON: {exc.msg} (line {line}, column {exc.colno})") from None
        held.clear()
        self._document(document)

    def _skip_line(self, piece: bytes) -> None:
        """Skip a blank line, or a line that is not JSON (counted; it must be UTF-8 text)."""
        self._lines_read += 1
        if piece.isspace():
            return
        self._ignored_lines += 1
        decoder = codecs.getincrementaldecoder("utf-8")()
        decoder.decode(piece)
        while not _line_ended(piece):  # a line longer than LINE_BYTES_PARSED_WHOLE
            piece = self._stream.readline(LINE_BYTES_PARSED_WHOLE)
            decoder.decode(piece)
        decoder.decode(b"", final=True)

    def _document(self, document: object) -> None:
        """Read one whole JSON document, whatever its format."""
        try:
            if isinstance(document, list):
                for trace in document:
                    self._jaeger_trace(trace, "the top-level array")
            elif isinstance(document, dict) and "context" in document and "name" in document:
                self._add(record_from_console_span(document, group_by=self._group_by))
                self._builder.end_unit()
            elif isinstance(document, dict):
                found, other_keys = self._object(document, top_level=True)
                if not found:
                    raise TraceShapeError(_unknown_shape(other_keys))
            else:
                raise TraceShapeError("unknown JSON shape: a top-level value is not an object")
        except TraceShapeError as exc:
            raise self._error(f"{exc} (line {self._document_line})") from None

    def _object(self, document: dict[str, object], *, top_level: bool) -> tuple[bool, list[str]]:
        """Read the traces of an object; return whether it held any, and its other keys."""
        found = False
        other_keys: list[str] = []
        for key, value in document.items():
            if key in _RESOURCE_SPANS_KEYS:
                for group in _list(value, key):
                    self._resource_group(group)
                found = True
            elif top_level and key == _JAEGER_TRACES_KEY:
                for trace in _list(value, key):
                    self._jaeger_trace(trace, key)
                found = True
            elif top_level and key in _WRAPPER_KEYS and isinstance(value, dict):
                inner_found, inner_keys = self._object(value, top_level=False)
                # An empty wrapper ({"trace": {}}) is an empty trace.
                found = found or inner_found or not inner_keys
                other_keys.extend(f"{key}.{inner}" for inner in inner_keys)
            elif key in _OTHER_SIGNAL_KEYS:
                found = True
            else:
                other_keys.append(key)
        return found, other_keys

    def _resource_group(self, group: object) -> None:
        """One element of ``resourceSpans`` (or Tempo's ``batches``): the spans of one resource."""
        if not isinstance(group, dict):
            raise TraceShapeError("unknown JSON shape: a resource group is not an object")
        resource = self._otlp_resource(group)
        for key in _SCOPE_SPANS_KEYS:
            for scope in _list(group.get(key), key):
                if not isinstance(scope, dict):
                    raise TraceShapeError(
                        f"unknown JSON shape: an element of {key} is not an object"
                    )
                for span in _list(scope.get("spans"), "spans"):
                    self._add(
                        record_from_otlp_span(span, group_by=self._group_by, resource=resource)
                    )
        self._builder.end_unit()

    def _jaeger_trace(self, trace: object, where: str) -> None:
        """One Jaeger trace, whole: its phase spans' parents are in it or nowhere."""
        if not isinstance(trace, dict):
            raise TraceShapeError(
                f"unknown JSON shape: an element of {where} (expected a Jaeger trace)"
                " is not an object"
            )
        if "spans" not in trace:
            raise TraceShapeError(f"an element of {where} has no spans: not a Jaeger trace")
        processes = self._jaeger_processes(trace)
        for span in _list(trace["spans"], "spans"):
            resource = None
            if processes and isinstance(span, dict):
                resource = processes.get(str(span.get("processID")))
            self._add(record_from_jaeger_span(span, group_by=self._group_by, resource=resource))
        self._builder.end_unit(complete_traces=True)

    def _otlp_resource(self, group: dict[str, object]) -> dict[str, object] | None:
        """The resource attribute ``--by`` groups by, when it asks for one."""
        if self._group_by is None:
            return None
        resource = group.get("resource")
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        if not isinstance(attributes, list):
            return None
        return otlp_attribute_values(attributes, wanted=frozenset({self._group_by}))

    def _jaeger_processes(self, trace: dict[str, object]) -> dict[str, dict[str, object]]:
        """process ID -> its tags (and ``service.name``), when ``--by`` asks for them."""
        processes = trace.get("processes")
        if self._group_by is None or not isinstance(processes, dict):
            return {}
        found: dict[str, dict[str, object]] = {}
        for process_id, process in processes.items():
            if not isinstance(process, dict):
                continue
            tags: dict[str, object] = {}
            for tag in process.get("tags") or ():
                if isinstance(tag, dict) and tag.get("key") == self._group_by:
                    tags[self._group_by] = tag.get("value")
            if isinstance(process.get("serviceName"), str):
                tags.setdefault("service.name", process["serviceName"])
            found[str(process_id)] = tags
        return found

    def _add(self, record: SpanRecord | None) -> None:
        if record is not None:
            self._builder.add(record)

    def _stream_document(self, head: bytes) -> None:
        """Stream a large document that starts with ``head``, to the end of the file."""
        try:
            backend = ijson_backend()
            import ijson  # already imported by ijson_backend()
        except ImportError:
            raise self._error(
                f"the JSON document from line {self._document_line} is too large to be"
                f" read whole and ijson, which streams it, is not installed: {IJSON_INSTALL}"
            ) from None
        # In chunks: ijson builds every unit of a chunk before it yields the first.
        head_chunks = (
            head[at : at + _STREAM_CHUNK_BYTES] for at in range(0, len(head), _STREAM_CHUNK_BYTES)
        )
        rest = iter(partial(self._stream.read, _STREAM_CHUNK_BYTES), b"")
        source = ijson.from_iter(itertools.chain(head_chunks, rest))
        try:
            prefix, read_unit = self._units_of_large_document(head, backend)
            for unit in backend.items(source, prefix, multiple_values=True, use_float=True):
                read_unit(unit)
        except ijson.JSONError as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise self._error(
                f"not JSON: {message} (in the document from line {self._document_line})"
            ) from None
        except TraceShapeError as exc:
            raise self._error(f"{exc} (line {self._document_line})") from None

    def _units_of_large_document(self, head: bytes, backend: Any) -> tuple[str, UnitReader]:
        """The ijson prefix of a document's units and their reader, from its first bytes."""
        import ijson  # imported by ijson_backend(), which gave ``backend``

        readers: dict[str, UnitReader] = {
            "item": partial(self._jaeger_trace, where="the top-level array"),
            f"{_JAEGER_TRACES_KEY}.item": partial(self._jaeger_trace, where=_JAEGER_TRACES_KEY),
            **dict.fromkeys(_RESOURCE_GROUP_PREFIXES, self._resource_group),
            **{f"{key}.item": _skip_unit for key in _OTHER_SIGNAL_KEYS},
        }
        top_level_keys: list[str] = []
        try:
            for prefix, event, value in backend.parse(head):
                if prefix in readers:
                    return prefix, readers[prefix]
                if prefix == "" and event == "map_key":
                    top_level_keys.append(value)
        except ijson.IncompleteJSONError:
            pass  # the head ends inside the document, as it should
        raise TraceShapeError(_unknown_shape(top_level_keys))

    def _error(self, reason: str) -> InputError:
        return InputError(self._name, reason)


def _is_truncated(exc: json.JSONDecodeError) -> bool:
    """Whether the text failed only because it ends early (a document's first lines)."""
    return exc.pos >= len(exc.doc.rstrip())


def _list(value: object, key: str) -> list[object]:
    """A JSON array as a list; null is an empty one."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise TraceShapeError(f"unknown JSON shape: {key} is not a list")
    return value


def _skip_unit(unit: object) -> None:
    """Metrics and logs are not read."""


def _unknown_shape(keys: list[str]) -> str:
    if not keys:
        return "unknown JSON shape: an empty object, no traces"
    shown = ", ".join(keys[:_MAX_KEYS_IN_MESSAGE])
    if len(keys) > _MAX_KEYS_IN_MESSAGE:
        shown += ", ..."
    return (
        "unknown JSON shape: expected OTLP (resourceSpans), Tempo (batches, trace),"
        f" Jaeger (data) traces or console exporter spans (name, context), found keys: {shown}"
    )
