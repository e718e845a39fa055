"""Hostile conditional and Range headers change nothing, and leak nothing.

Hypothesis generates If-None-Match, If-Modified-Since, If-Match,
If-Unmodified-Since, If-Range and Range headers: garbage bytes, latin-1 and
UTF-8 text, values up to 8 KB, repeated headers, odd casing, and well-formed
values around the real validators (ETags, dates at the file's mtime, byte
ranges, huge numbers). Each example goes to two servers of the same app side
by side: one instrumented in this process, one never instrumented in another
process (``support.serve_subprocess``). Their replies (status, headers but Date
and Server, body) must be identical, rejections by the server included.

And on our spans and metric points every attribute is one we define, every
string is bounded (256 characters) and from our vocabulary, and no request
header value is ever recorded.
"""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.apps import (
    FRAMEWORKS,
    Served,
    metric_attributes,
    send_request,
    serve,
    serve_subprocess,
    without_boundary,
)
from support.harness import Telemetry, our_spans

MTIME = 1_600_000_000
FILES = {"small.txt": b"0123456789" * 100, "medium.bin": bytes(range(256)) * 300, "empty.txt": b""}
PATHS = [f"/{route}/{name}" for route in ("static", "file") for name in FILES]
HEADERS = [
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "If-Range",
    "Range",
]
MAX_VALUE = 8 * 1024
MAX_ATTRIBUTE = 256
# Placeholders replaced by the served file's real validators at request time.
ETAG, LAST_MODIFIED = b"{etag}", b"{last-modified}"

settings.register_profile(
    "fileresp-bad-input",
    max_examples=60,
    deadline=None,
    database=None,
    # The same examples on every run, so CI is repeatable; HYPOTHESIS_RANDOM=1
    # draws new ones (run it now and then to explore).
    derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
PROFILE = settings.get_profile("fileresp-bad-input")

# Every attribute we may record, and the values a string one may take.
VOCABULARY: dict[str, set[str] | None] = {
    "fileresp.framework": {"starlette", "aiohttp"},
    "fileresp.outcome": {
        "sent",
        "partial",
        "not_modified",
        "precondition_failed",
        "range_not_satisfiable",
        "head",
        "not_found",
        "forbidden",
        "error",
    },
    "fileresp.transfer": {"sendfile", "read", "pathsend", "none"},
    "fileresp.precondition.result": {
        "not_modified",
        "precondition_failed",
        "range_ignored",
        "pass",
        "none",
    },
    "fileresp.precondition.header": {h.lower() for h in HEADERS if h != "Range"},
    "fileresp.threadpool.job": {"stat", "lookup", "open", "make_response"},
    "fileresp.phase": {"stat", "precondition", "open", "threadpool.wait", "send"},
    "fileresp.content_encoding": {"br", "gzip", "identity"},
    "file.name": set(FILES),
    "error.type": None,  # an exception class name or incomplete_body
    "http.response.status_code": None,
    "fileresp.opened": None,
    "fileresp.bytes": None,
    "fileresp.threadpool.jobs": None,
    "fileresp.threadpool.wait": None,
    "fileresp.threadpool.wait.max": None,
    "fileresp.read.count": None,
    "file.size": None,
}
# An exception's class name, incomplete_body, or an error status the
# framework sent itself (its code: "400").
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*|[45][0-9][0-9]")


# -- strategies ------------------------------------------------------------------


def _no_line_breaks(value: bytes) -> bytes:
    return value.replace(b"\r", b"").replace(b"\n", b"")


garbage = st.binary(max_size=64).map(_no_line_breaks)
latin1 = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(lambda text: text.encode("latin-1"))
utf8 = st.text(max_size=20).map(lambda text: _no_line_breaks(text.encode("utf-8")))
huge = st.builds(
    lambda unit, count: (unit * count)[:MAX_VALUE],
    st.sampled_from([b"a", b'"x", ', b"bytes=0-1,", b'W/"e", ', b"\xe9"]),
    st.integers(100, MAX_VALUE),
)
number = st.one_of(st.integers(-3, 12_000), st.just(10**30)).map(lambda n: str(n).encode())
range_spec = st.one_of(
    st.builds(lambda a, b: a + b"-" + b, number, number),
    st.builds(lambda a: a + b"-", number),
    st.builds(lambda b: b"-" + b, number),
    st.sampled_from([b"", b"-", b" 0 - 5 ", b"x-y"]),
)
small = st.integers(0, 1200).map(lambda n: str(n).encode())
ranges = st.one_of(
    # well formed, within or just past the files' sizes
    st.builds(lambda a, b: b"bytes=" + a + b"-" + b, small, small),
    st.builds(lambda a: b"bytes=" + a + b"-", small),
    st.builds(lambda b: b"bytes=-" + b, small),
    st.builds(
        lambda unit, specs, separator: unit + b"=" + separator.join(specs),
        st.sampled_from([b"bytes", b"BYTES", b" bytes ", b"items", b""]),
        st.lists(range_spec, max_size=6),
        st.sampled_from([b",", b", ", b" ,"]),
    ),
)
etags = st.lists(
    st.one_of(
        st.just(ETAG),
        st.just(b"W/" + ETAG),
        st.just(b"*"),
        st.builds(lambda t: b'"' + t + b'"', st.binary(max_size=8).map(_no_line_breaks)),
    ),
    min_size=1,
    max_size=4,
).map(b", ".join)
dates = st.one_of(
    st.just(LAST_MODIFIED),
    st.integers(MTIME - 2, MTIME + 2).map(lambda t: formatdate(t, usegmt=True).encode()),
    st.integers(0, 2**33).map(lambda t: formatdate(t, usegmt=True).encode()),
    st.sampled_from([b"Sun, 13 Sep 2020 12:26:40", b"yesterday", b"0", b"Thu, 01 Jan 1970"]),
)
STRUCTURED = {
    "If-None-Match": etags,
    "If-Match": etags,
    "If-Modified-Since": dates,
    "If-Unmodified-Since": dates,
    "If-Range": st.one_of(etags, dates),
    "Range": ranges,
}


@st.composite
def header(draw: Any) -> tuple[str, bytes]:
    name = draw(st.sampled_from(HEADERS))
    spelled = draw(st.sampled_from([name, name.lower(), name.upper()]))
    value = draw(st.one_of(STRUCTURED[name], STRUCTURED[name], garbage, latin1, utf8, huge))
    return spelled, value


request_headers = st.lists(header(), max_size=5).filter(
    lambda headers: sum(len(v) for _, v in headers) <= MAX_VALUE + 1024
)


# -- servers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    root = tmp_path_factory.mktemp("bad-input")
    for name, content in FILES.items():
        (root / name).write_bytes(content)
        os.utime(root / name, (MTIME, MTIME))
    return root


@dataclass
class Pair:
    served: Served
    reference_port: int
    telemetry: Telemetry
    validators: dict[str, tuple[bytes, bytes]]


@pytest.fixture(scope="module", params=FRAMEWORKS)
def pair(request: pytest.FixtureRequest, root: Path) -> Iterator[Pair]:
    telemetry = Telemetry()
    with (
        serve_subprocess(request.param, root) as port,
        serve(request.param, root, telemetry) as served,
    ):
        validators = {}
        for path in PATHS:
            head = send_request(port, "HEAD", path)
            etag, modified = head.header("etag") or "", head.header("last-modified") or ""
            validators[path] = (etag.encode("latin-1"), modified.encode("latin-1"))
            assert served.request("HEAD", path).status == head.status == 200
        assert served.settled()
        telemetry.clear()
        yield Pair(served, port, telemetry, validators)
    telemetry.shutdown()


def exchange(port: int, method: str, path: str, headers: list[tuple[str, bytes]]) -> Any:
    try:
        return without_boundary(send_request(port, method, path, headers))
    except (http.client.HTTPException, OSError):
        return "no reply"  # the server closed the connection without one


def assert_attribute_bounded(key: str, value: Any, sent: list[bytes]) -> None:
    assert key in VOCABULARY or re.fullmatch(r"fileresp\.\w+\.duration", key), key
    if not isinstance(value, str):
        assert isinstance(value, bool | int | float), (key, value)
        return
    assert len(value) <= MAX_ATTRIBUTE, (key, value)
    allowed = VOCABULARY.get(key)
    if allowed is not None:
        # One of a fixed set of values, never copied from the request (a
        # header may well read "none" or "head", as these values do).
        assert value in allowed, (key, value)
        return
    if key == "error.type":
        assert ERROR_TYPE.fullmatch(value), value
        return
    for header_value in sent:
        text = header_value.decode("latin-1")
        if len(text) >= 4:
            assert text not in value, (key, value)


# -- the property --------------------------------------------------------------------


@PROFILE
@given(
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    path=st.sampled_from(PATHS),
    headers=request_headers,
)
def test_hostile_headers_change_nothing_and_leak_nothing(
    pair: Pair, method: str, path: str, headers: list[tuple[str, bytes]]
) -> None:
    etag, modified = pair.validators[path]
    headers = [
        (name, value.replace(ETAG, etag).replace(LAST_MODIFIED, modified))
        for name, value in headers
    ]
    traced = exchange(pair.served.port, method, path, headers)
    plain = exchange(pair.reference_port, method, path, headers)
    assert traced == plain
    event(f"status {plain if isinstance(plain, str) else plain[0]}")

    assert pair.served.settled()
    sent = [value for _, value in headers]
    try:
        for span in our_spans(pair.telemetry):
            assert span.name.startswith("fileresp.")
            for key, value in (span.attributes or {}).items():
                assert_attribute_bounded(key, value, sent)
        for _, point_attributes in metric_attributes(pair.telemetry):
            for key, value in point_attributes.items():
                assert_attribute_bounded(key, value, sent)
    finally:
        pair.telemetry.clear()
