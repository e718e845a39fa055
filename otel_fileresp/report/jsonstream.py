# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""A pull parser that walks large JSON text without loading it whole.

Trace exports can be one huge document (a Jaeger search result, a Tempo
trace) or many documents, one per line (the Collector's ``file`` exporter).
:class:`JsonPullParser` reads the text in chunks and lets the caller walk the
outer structure one step at a time: :meth:`~JsonPullParser.members` iterates
the keys of an object, :meth:`~JsonPullParser.items` the elements of an array,
and :meth:`~JsonPullParser.value` decodes one complete value (a span, say)
with :meth:`json.JSONDecoder.raw_decode` on a sliding buffer. Memory is
bounded by the largest value decoded at once plus one chunk, not by the file.

A sequence of top-level values (JSON lines, or documents simply concatenated)
is read by calling :meth:`~JsonPullParser.peek` until it returns None.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Final, TextIO

CHUNK_CHARS: Final = 1 << 16
# A decoding error further than this from the end of the buffer cannot be
# caused by the buffer ending early: the JSON really is invalid. An
# unterminated string is reported where the string starts, so it gets a
# window as large as the longest string the report accepts.
_TRUNCATION_WINDOW: Final = 1 << 20
_STRING_TRUNCATION_WINDOW: Final = 1 << 26
_WHITESPACE = re.compile(r"[ \t\n\r]*")


class JsonSyntaxError(ValueError):
    """Text that is not valid JSON, with a 1-based line and column."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{message} (line {line}, column {column})")
        self.message = message
        self.line = line
        self.column = column


class JsonPullParser:
    """Walks JSON text from ``stream`` one structural step at a time."""

    def __init__(self, stream: TextIO, chunk_chars: int = CHUNK_CHARS) -> None:
        self._stream = stream
        self._chunk_chars = max(1, chunk_chars)
        self._decoder = json.JSONDecoder()
        self._buffer = ""
        self._pos = 0
        self._eof = False
        # Where the buffer starts in the whole text, to report line and column.
        self._buffer_offset = 0
        self._lines_before_buffer = 0
        self._last_newline_before_buffer = -1

    def peek(self) -> str | None:
        """Skip whitespace; return the next character, or None at the end of the text."""
        while True:
            whitespace = _WHITESPACE.match(self._buffer, self._pos)
            if whitespace is not None:
                self._pos = whitespace.end()
            if self._pos < len(self._buffer):
                return self._buffer[self._pos]
            if not self._fill():
                return None

    def value(self) -> object:
        """Decode the next complete JSON value."""
        if self.peek() is None:
            raise self._error("Expecting value: the text ends here", self._pos)
        while True:
            try:
                value, end = self._decoder.raw_decode(self._buffer, self._pos)
            except json.JSONDecodeError as exc:
                window = _TRUNCATION_WINDOW
                if exc.msg.startswith("Unterminated string"):
                    window = _STRING_TRUNCATION_WINDOW
                if exc.pos >= len(self._buffer) - window and not self._eof:
                    self._fill()  # then decode again, from the moved buffer
                    continue
                raise self._error(exc.msg, exc.pos) from None
            # A number that touches the end of the buffer may continue in the
            # next chunk ("12" of "125"); objects, arrays and strings cannot.
            is_number = isinstance(value, int | float) and not isinstance(value, bool)
            if is_number and end == len(self._buffer) and not self._eof:
                self._fill()
                continue
            self._pos = end
            return value

    def skip_value(self) -> None:
        """Decode the next value and drop it."""
        self.value()

    def members(self) -> Iterator[str]:
        """Iterate the keys of the object that comes next.

        After each key, the caller must consume that member's value (with
        :meth:`value`, :meth:`skip_value`, :meth:`members` or :meth:`items`)
        before asking for the next key.
        """
        self._expect("{")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            if self.peek() != '"':
                raise self._error("Expecting property name enclosed in double quotes", self._pos)
            key = str(self.value())
            self._expect(":")
            yield key
            if self._delimiter_ends("}"):
                return

    def items(self) -> Iterator[int]:
        """Iterate the elements of the array that comes next, yielding their index.

        The caller must consume each element before asking for the next one.
        """
        self._expect("[")
        if self.peek() == "]":
            self._pos += 1
            return
        index = 0
        while True:
            if self.peek() is None:
                raise self._error("Expecting value: the text ends here", self._pos)
            yield index
            index += 1
            if self._delimiter_ends("]"):
                return

    def line(self) -> int:
        """The 1-based line of the next unread character."""
        return self._location(self._pos)[0]

    def _delimiter_ends(self, closing: str) -> bool:
        char = self.peek()
        self._pos += 1
        if char == ",":
            return False
        if char == closing:
            return True
        self._pos -= 1
        raise self._error("Expecting ',' delimiter", self._pos)

    def _expect(self, char: str) -> None:
        if self.peek() != char:
            raise self._error(f"Expecting {char!r}", self._pos)
        self._pos += 1

    def _fill(self) -> bool:
        """Read more text into the buffer, dropping what was consumed; False at the end."""
        if self._eof:
            return False
        self._drop_consumed()
        # Read at least as much as is buffered, so a value larger than a chunk
        # is decoded again O(log size) times, not once per chunk.
        chunk = self._stream.read(max(self._chunk_chars, len(self._buffer)))
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _drop_consumed(self) -> None:
        consumed = self._pos
        if consumed == 0:
            return
        newlines = self._buffer.count("\n", 0, consumed)
        if newlines:
            self._lines_before_buffer += newlines
            last = self._buffer.rfind("\n", 0, consumed)
            self._last_newline_before_buffer = self._buffer_offset + last
        self._buffer_offset += consumed
        self._buffer = self._buffer[consumed:]
        self._pos = 0

    def _location(self, pos: int) -> tuple[int, int]:
        line = self._lines_before_buffer + self._buffer.count("\n", 0, pos) + 1
        last_newline = self._buffer.rfind("\n", 0, pos)
        if last_newline >= 0:
            return line, pos - last_newline
        return line, self._buffer_offset + pos - self._last_newline_before_buffer

    def _error(self, message: str, pos: int) -> JsonSyntaxError:
        line, column = self._location(pos)
        return JsonSyntaxError(message, line, column)
