# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The fixed set of file-response scenarios the probe runs.

The probe serves a temporary directory it fills with these files:

============== ================================================================
``page.txt``   10 000 bytes of text: the file most scenarios ask for
``empty.txt``  0 bytes
``large.bin``  4 MiB
``dir/``       a directory (with ``dir/inner.txt`` in it, and no index file)
``text.txt``   20 000 bytes of text, with the siblings ``text.txt.gz`` (a real
               gzip of it) and ``text.txt.br`` (12 345 bytes standing in for
               a Brotli encoding: the server never decodes it)
============== ================================================================

and serves it two ways: ``/static/`` is the framework's static-files route
(Starlette ``StaticFiles``, aiohttp ``web.static``), ``/handler/{name}`` a
handler that returns a bare ``FileResponse`` for the file (GET and HEAD).
For each scenario it sends one request (``Connection: close``). The
validators (``ETag``, ``Last-Modified``) are the ones the framework itself
sent for ``page.txt`` on a warm-up request; a framework that sends no ETag
gets ``"probe-no-etag"``, which can never match.

====================== ====== ============================================== =========
scenario               method request headers (beyond Host)                  RFC 9110
====================== ====== ============================================== =========
``get``                GET    (none), ``page.txt``                           200
``head``               HEAD   (none), ``page.txt``                           200
``range``              GET    ``Range: bytes=0-99``                          206
``multi_range``        GET    ``Range: bytes=0-9,20-29``                     206 or 200
``if_range_fresh``     GET    ``Range: bytes=0-99``, ``If-Range: <LM>``      206
``if_range_stale``     GET    ``Range: bytes=0-99``, ``If-Range: <2001>``    200
``not_modified_etag``  GET    ``If-None-Match: <ETag>``                      304
``not_modified_date``  GET    ``If-Modified-Since: <LM>``                    304
``failed_if_match``    GET    ``If-Match: "probe-no-such-etag"``             412
``failed_unmodified``  GET    ``If-Unmodified-Since: <2001>``                412
``range_unsatisfiable`` GET   ``Range: bytes=20000-20010``                   416
``not_found``          GET    (none), ``missing.txt``                        404
``empty_file``         GET    (none), ``empty.txt``                          200
``large_file``         GET    (none), ``large.bin``                          200
``directory``          GET    (none), ``dir``                                404 or 403
``handler_get``        GET    (none), ``page.txt`` from a handler            200
``handler_head``       HEAD   (none), ``page.txt`` from a handler            200
``handler_not_modified`` GET  ``If-None-Match: <ETag>``, from a handler      304
``compressed_none``    GET    (none), ``text.txt`` (aiohttp only)            200
``compressed_gzip``    GET    ``Accept-Encoding: gzip`` (aiohttp only)       200
``compressed_br``      GET    ``Accept-Encoding: br, gzip`` (aiohttp only)   200
====================== ====== ============================================== =========

``<LM>`` is the ``Last-Modified`` the framework sent, ``<2001>`` is
``Mon, 01 Jan 2001 00:00:00 GMT``. The last column is what RFC 9110 says the
request should get (:attr:`Scenario.expected`, the preferred answer first: a
server may ignore a multi-range request and send the whole file); the probe records what the
framework answered, whatever it is. A framework that does not implement a
feature answers something else (Starlette before 0.39 ignores ``Range`` and
answers 200; Starlette never evaluates ``If-Match``); ``--against`` uses this
column only to tell a framework that starts answering as the RFC asks (an
improvement) from one that stops (a regression).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PAGE: Final = "page.txt"
PAGE_SIZE: Final = 10_000
EMPTY: Final = "empty.txt"
LARGE: Final = "large.bin"
LARGE_SIZE: Final = 4 << 20
DIRECTORY: Final = "dir"
TEXT: Final = "text.txt"
TEXT_SIZE: Final = 20_000
BROTLI_STAND_IN_SIZE: Final = 12_345
MISSING: Final = "missing.txt"
#: A date long before any file the probe makes.
OLD_DATE: Final = "Mon, 01 Jan 2001 00:00:00 GMT"
NO_ETAG: Final = '"probe-no-etag"'
#: Placeholders in :attr:`Scenario.headers`, replaced by the warm-up's validators.
ETAG: Final = "{etag}"
LAST_MODIFIED: Final = "{last_modified}"


@dataclass(frozen=True)
class Scenario:
    """One request of the probe."""

    name: str
    #: One line for the table and the docs.
    description: str
    method: str
    #: The file, relative to the served directory.
    file: str
    headers: tuple[tuple[str, str], ...] = ()
    #: What RFC 9110 says the request should get, the preferred answer first.
    expected: tuple[int, ...] = (200,)
    #: Only aiohttp serves pre-compressed siblings.
    aiohttp_only: bool = False
    #: ``static`` (StaticFiles / ``web.static``) or ``handler`` (a handler
    #: returning a bare ``FileResponse``).
    route: str = "static"

    @property
    def path(self) -> str:
        """The request path."""
        return f"/{self.route}/{self.file}"

    def request_headers(self, etag: str | None, last_modified: str | None) -> list[tuple[str, str]]:
        """The headers, with the warm-up's validators filled in."""
        values = {ETAG: etag or NO_ETAG, LAST_MODIFIED: last_modified or OLD_DATE}
        return [(name, values.get(value, value)) for name, value in self.headers]


def _s(*codes: int) -> tuple[int, ...]:
    return codes


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario("get", "GET a 10 kB file", "GET", PAGE),
    Scenario("head", "HEAD of the same file", "HEAD", PAGE),
    Scenario("range", "one byte range", "GET", PAGE, (("Range", "bytes=0-99"),), _s(206)),
    Scenario(
        "multi_range",
        "two byte ranges",
        "GET",
        PAGE,
        (("Range", "bytes=0-9,20-29"),),
        _s(206, 200),
    ),
    Scenario(
        "if_range_fresh",
        "range with If-Range = Last-Modified",
        "GET",
        PAGE,
        (("Range", "bytes=0-99"), ("If-Range", LAST_MODIFIED)),
        _s(206),
    ),
    Scenario(
        "if_range_stale",
        "range with an older If-Range date",
        "GET",
        PAGE,
        (("Range", "bytes=0-99"), ("If-Range", OLD_DATE)),
    ),
    Scenario(
        "not_modified_etag",
        "If-None-Match = ETag",
        "GET",
        PAGE,
        (("If-None-Match", ETAG),),
        _s(304),
    ),
    Scenario(
        "not_modified_date",
        "If-Modified-Since = Last-Modified",
        "GET",
        PAGE,
        (("If-Modified-Since", LAST_MODIFIED),),
        _s(304),
    ),
    Scenario(
        "failed_if_match",
        "If-Match with another ETag",
        "GET",
        PAGE,
        (("If-Match", '"probe-no-such-etag"'),),
        _s(412),
    ),
    Scenario(
        "failed_unmodified",
        "If-Unmodified-Since an older date",
        "GET",
        PAGE,
        (("If-Unmodified-Since", OLD_DATE),),
        _s(412),
    ),
    Scenario(
        "range_unsatisfiable",
        "a range past the end",
        "GET",
        PAGE,
        (("Range", "bytes=20000-20010"),),
        _s(416),
    ),
    Scenario("not_found", "a file that does not exist", "GET", MISSING, (), _s(404)),
    Scenario("empty_file", "GET a 0-byte file", "GET", EMPTY),
    Scenario("large_file", "GET a 4 MiB file", "GET", LARGE),
    Scenario("directory", "GET a directory", "GET", DIRECTORY, (), _s(404, 403)),
    Scenario("handler_get", "GET, handler returning FileResponse", "GET", PAGE, route="handler"),
    Scenario("handler_head", "HEAD, same handler", "HEAD", PAGE, route="handler"),
    Scenario(
        "handler_not_modified",
        "If-None-Match = ETag, same handler",
        "GET",
        PAGE,
        (("If-None-Match", ETAG),),
        _s(304),
        route="handler",
    ),
    Scenario(
        "compressed_none",
        "file with .gz/.br siblings, no Accept-Encoding",
        "GET",
        TEXT,
        aiohttp_only=True,
    ),
    Scenario(
        "compressed_gzip",
        "same, Accept-Encoding: gzip",
        "GET",
        TEXT,
        (("Accept-Encoding", "gzip"),),
        aiohttp_only=True,
    ),
    Scenario(
        "compressed_br",
        "same, Accept-Encoding: br, gzip",
        "GET",
        TEXT,
        (("Accept-Encoding", "br, gzip"),),
        aiohttp_only=True,
    ),
)


def scenarios_for(framework: str) -> tuple[Scenario, ...]:
    """The scenarios run for ``framework`` (``aiohttp`` gets the compressed siblings)."""
    return tuple(s for s in SCENARIOS if framework == "aiohttp" or not s.aiohttp_only)


def make_files(root: Path) -> None:
    """Create the probe's files in the (empty) directory ``root``."""
    line = b"otel-fileresp probe: the quick brown fox jumps over the lazy dog.\n"
    (root / PAGE).write_bytes((line * (PAGE_SIZE // len(line) + 1))[:PAGE_SIZE])
    (root / EMPTY).write_bytes(b"")
    chunk = bytes(range(256)) * 4096
    (root / LARGE).write_bytes((chunk * (LARGE_SIZE // len(chunk) + 1))[:LARGE_SIZE])
    (root / DIRECTORY).mkdir()
    (root / DIRECTORY / "inner.txt").write_bytes(line)
    text = (line * (TEXT_SIZE // len(line) + 1))[:TEXT_SIZE]
    (root / TEXT).write_bytes(text)
    (root / f"{TEXT}.gz").write_bytes(gzip.compress(text, mtime=0))
    (root / f"{TEXT}.br").write_bytes(b"\x8b" * BROTLI_STAND_IN_SIZE)
