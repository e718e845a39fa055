"""aiohttp file responses over a real aiohttp server on loopback: what each
kind of answer reports (spans, attributes, phases), on every supported release.

The app (handler routes returning ``web.FileResponse``, a ``web.static``
route, a ``FileResponse`` subclass) is built once per module *before* the
tests instrument. Where aiohttp releases differ, the test asserts what the
installed release does, detected by feature (see ``support.aiohttp_site``):
3.9.5, 3.11.9, 3.11.10 and 3.14.5 are each run by the CI matrix.

Span and attribute names are spelled as literal contract strings on purpose.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web_fileresponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from support.aiohttp_site import (
    AFTER_MTIME,
    BEFORE_MTIME,
    BROTLI_VARIANTS,
    COMBINED_JOB,
    FILE_RESPONSE_HANDLES_ERRORS,
    PAGE,
    PAGE_BR,
    PAGE_GZ,
    SMALL,
    STATIC_LOOKUP_JOB,
    WAIT,
    Exchange,
    Site,
    child,
    child_names,
    children,
    drop_file_permissions,
    etag_of,
    job_kinds,
    only_response,
    points,
    serve_site,
    wait_jobs,
)
from support.harness import Telemetry, attrs, instrumenting, responses

ROUTES = ["/file", "/static"]
STAT = "fileresp.stat"
PRECONDITION = "fileresp.precondition"
OPEN = "fileresp.open"
SEND = "fileresp.send"


def pool_jobs(prefix: str, *, opened: bool) -> int:
    """Executor jobs aiohttp submits: stat (+open) or make_response, the close
    of an opened file, and the static lookup (3.10+); body reads not included."""
    jobs = (1 if COMBINED_JOB else 1 + opened) + opened
    return jobs + (prefix == "/static" and STATIC_LOOKUP_JOB)


def without_wait(attributes: dict[str, Any]) -> dict[str, Any]:
    wait = attributes.pop("fileresp.threadpool.wait")
    assert isinstance(wait, float)
    assert wait >= 0
    return attributes


def expected_response(
    ex: Exchange,
    *,
    status: int | None,
    outcome: str,
    opened: bool,
    name: str = "small.txt",
    size: int | None = 1024,
    transfer: str = "none",
    sent: int = 0,
    encoding: str | None = "identity",
    error: str | None = None,
) -> dict[str, Any]:
    expected: dict[str, Any] = {
        "fileresp.framework": "aiohttp",
        "fileresp.outcome": outcome,
        "fileresp.opened": opened,
        "fileresp.transfer": transfer,
        "fileresp.bytes": sent,
        # The close of an opened file comes after the response's end: not its job.
        "fileresp.threadpool.jobs": ex.jobs - opened,
        "file.name": name,
    }
    if status is not None:
        expected["http.response.status_code"] = status
    if size is not None:
        expected["file.size"] = size
    if encoding is not None:
        expected["fileresp.content_encoding"] = encoding
    if error is not None:
        expected["error.type"] = error
    return expected


def assert_tree(telemetry: Telemetry, response: ReadableSpan, *, early_open: bool = False) -> None:
    """Phase spans: children of the response, in its trace and time span,
    in the order aiohttp does the work; at most 8 spans in all. With
    ``early_open`` (the alarm's test double) the open comes first, so it is
    left out of the order."""
    assert response.kind is SpanKind.INTERNAL
    trace = [s for s in telemetry.spans() if s.context.trace_id == response.context.trace_id]
    phases = children(telemetry, response)
    assert len(trace) == 1 + len(phases) <= 8
    for span in phases:
        assert span.kind is SpanKind.INTERNAL
        assert response.start_time <= span.start_time <= span.end_time <= response.end_time
    by_name = {s.name: s for s in phases if s.name != WAIT}
    in_order = (STAT, PRECONDITION, SEND) if early_open else (STAT, PRECONDITION, OPEN, SEND)
    order = [by_name[name] for name in in_order if name in by_name]
    for before, after in itertools.pairwise(order):
        assert before.end_time <= after.start_time, (before.name, after.name)


# -- 200: sendfile and the read fallback ------------------------------------


@pytest.mark.parametrize("prefix", ROUTES)
def test_200_is_sent_with_sendfile(site: Site, traced: Telemetry, prefix: str) -> None:
    ex = site.request(f"{prefix}/small.txt")

    assert ex.status == 200
    assert ex.body == SMALL
    assert ex.jobs == pool_jobs(prefix, opened=True)
    response = only_response(traced)
    assert response.parent is None  # no server instrumentation: a root span
    assert without_wait(attrs(response)) == expected_response(
        ex, status=200, outcome="sent", opened=True, transfer="sendfile", sent=1024
    )
    assert child_names(traced, response) == sorted(
        [STAT, PRECONDITION, OPEN, SEND] + [WAIT] * len(job_kinds(prefix, open_job=True))
    )
    assert wait_jobs(traced, response) == job_kinds(prefix, open_job=True)
    assert attrs(child(traced, response, PRECONDITION)) == {"fileresp.precondition.result": "none"}
    send = attrs(child(traced, response, SEND))
    assert send.pop("fileresp.threadpool.wait") == send.pop("fileresp.threadpool.wait.max") == 0
    assert send == {
        "fileresp.transfer": "sendfile",
        "fileresp.bytes": 1024,
        "fileresp.read.count": 0,
    }
    assert_tree(traced, response)


@pytest.mark.parametrize("fallback", ["compression", "AIOHTTP_NOSENDFILE"])
def test_200_read_fallback_reads_in_the_pool(
    site: Site, traced: Telemetry, monkeypatch: pytest.MonkeyPatch, fallback: str
) -> None:
    if fallback == "compression":
        path = "/compressed/small.txt"  # enable_compression() forces the fallback
    else:
        # AIOHTTP_NOSENDFILE is read when aiohttp is imported; set its result.
        monkeypatch.setattr(web_fileresponse, "NOSENDFILE", True)
        path = "/file/small.txt"

    ex = site.request(path)

    assert ex.status == 200
    assert ex.body == SMALL
    reads = ex.jobs - pool_jobs("/file", opened=True)
    assert reads >= 1
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=200, outcome="sent", opened=True, transfer="read", sent=1024
    )
    send = attrs(child(traced, response, SEND))
    total, longest = send.pop("fileresp.threadpool.wait"), send.pop("fileresp.threadpool.wait.max")
    assert 0 <= longest <= total
    assert send == {
        "fileresp.transfer": "read",
        "fileresp.bytes": 1024,
        "fileresp.read.count": reads,
    }
    # Reads are aggregated on fileresp.send: no wait span per read.
    assert wait_jobs(traced, response) == job_kinds("/file", open_job=True)
    assert_tree(traced, response)


# -- conditional requests ----------------------------------------------------


@pytest.mark.parametrize("prefix", ROUTES)
@pytest.mark.parametrize("header", ["If-None-Match", "If-Modified-Since"])
def test_304_never_opens_the_file(site: Site, traced: Telemetry, prefix: str, header: str) -> None:
    value = etag_of(site.root / "small.txt") if header == "If-None-Match" else AFTER_MTIME

    ex = site.request(f"{prefix}/small.txt", {header: value})

    assert ex.status == 304
    assert ex.body == b""
    assert ex.jobs == pool_jobs(prefix, opened=False)
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=304, outcome="not_modified", opened=False
    )
    assert OPEN not in child_names(traced, response)
    assert SEND not in child_names(traced, response)
    assert wait_jobs(traced, response) == job_kinds(prefix, open_job=False)
    assert attrs(child(traced, response, PRECONDITION)) == {
        "fileresp.precondition.result": "not_modified",
        "fileresp.precondition.header": header.lower(),
    }
    assert_tree(traced, response)


@pytest.mark.parametrize(
    ("header", "value"), [("If-Match", '"no-such-etag"'), ("If-Unmodified-Since", BEFORE_MTIME)]
)
def test_412_never_opens_the_file(site: Site, traced: Telemetry, header: str, value: str) -> None:
    ex = site.request("/file/small.txt", {header: value})

    assert ex.status == 412
    assert ex.body == b""
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=412, outcome="precondition_failed", opened=False
    )
    assert child_names(traced, response) == sorted([STAT, PRECONDITION, WAIT])
    assert attrs(child(traced, response, PRECONDITION)) == {
        "fileresp.precondition.result": "precondition_failed",
        "fileresp.precondition.header": header.lower(),
    }
    assert_tree(traced, response)


def test_conditional_header_that_passes_is_named(site: Site, traced: Telemetry) -> None:
    ex = site.request("/file/small.txt", {"If-None-Match": '"another-version"'})

    assert ex.status == 200
    assert ex.body == SMALL
    response = only_response(traced)
    assert attrs(response)["fileresp.outcome"] == "sent"
    assert attrs(child(traced, response, PRECONDITION)) == {
        "fileresp.precondition.result": "pass",
        "fileresp.precondition.header": "if-none-match",
    }


# -- ranges --------------------------------------------------------------------


def test_206_single_range(site: Site, traced: Telemetry) -> None:
    ex = site.request("/file/small.txt", {"Range": "bytes=10-19"})

    assert ex.status == 206
    assert ex.body == SMALL[10:20]
    assert ex.reply is not None
    assert ex.reply.header("Content-Range") == "bytes 10-19/1024"
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=206, outcome="partial", opened=True, transfer="sendfile", sent=10
    )
    assert attrs(child(traced, response, SEND))["fileresp.bytes"] == 10
    assert_tree(traced, response)


def test_416_opens_the_file_from_3_11_10(site: Site, traced: Telemetry) -> None:
    ex = site.request("/file/small.txt", {"Range": "bytes=5000-"})

    assert ex.status == 416
    assert ex.reply is not None
    assert ex.reply.header("Content-Range") == "bytes */1024"
    # aiohttp 3.11.10+ opens (and closes) the file before the range checks.
    assert ex.jobs == pool_jobs("/file", opened=COMBINED_JOB)
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=416, outcome="range_not_satisfiable", opened=COMBINED_JOB
    )
    expected = [STAT, PRECONDITION, WAIT] + ([OPEN] if COMBINED_JOB else [])
    assert child_names(traced, response) == sorted(expected)
    assert_tree(traced, response)


@pytest.mark.parametrize(
    ("if_range", "status", "result"),
    [(BEFORE_MTIME, 200, "range_ignored"), (AFTER_MTIME, 206, "none")],
    ids=["mismatch", "match"],
)
def test_if_range(site: Site, traced: Telemetry, if_range: str, status: int, result: str) -> None:
    ex = site.request("/file/small.txt", {"Range": "bytes=10-19", "If-Range": if_range})

    assert ex.status == status
    assert ex.body == (SMALL if status == 200 else SMALL[10:20])
    response = only_response(traced)
    assert attrs(response)["fileresp.outcome"] == ("sent" if status == 200 else "partial")
    assert attrs(response)["fileresp.bytes"] == len(ex.body)
    expected = {"fileresp.precondition.result": result}
    if result == "range_ignored":
        expected["fileresp.precondition.header"] = "if-range"
    assert attrs(child(traced, response, PRECONDITION)) == expected
    assert_tree(traced, response)


# -- no body: HEAD and an empty file ---------------------------------------


@pytest.mark.parametrize("prefix", ROUTES)
def test_head_sends_headers_only(site: Site, traced: Telemetry, prefix: str) -> None:
    ex = site.request(f"{prefix}/small.txt", method="HEAD")

    assert ex.status == 200
    assert ex.body == b""
    assert ex.reply is not None
    assert ex.reply.header("Content-Length") == "1024"
    # From 3.11.10 aiohttp opens the file before it looks at the method.
    assert ex.jobs == pool_jobs(prefix, opened=COMBINED_JOB)
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=200, outcome="head", opened=COMBINED_JOB
    )
    assert SEND not in child_names(traced, response)
    assert (OPEN in child_names(traced, response)) is COMBINED_JOB
    assert_tree(traced, response)


def test_zero_length_file(site: Site, traced: Telemetry) -> None:
    ex = site.request("/file/empty.txt")

    assert ex.status == 200
    assert ex.body == b""
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex, status=200, outcome="sent", opened=COMBINED_JOB, name="empty.txt", size=0
    )
    assert SEND not in child_names(traced, response)
    assert (OPEN in child_names(traced, response)) is COMBINED_JOB
    assert_tree(traced, response)


# -- errors: missing, not a regular file, not readable ---------------------


def test_404_missing_file_from_a_handler(site: Site, traced: Telemetry) -> None:
    ex = site.request("/file/missing.txt")

    response = only_response(traced)
    if FILE_RESPONSE_HANDLES_ERRORS:
        assert ex.status == 404
        assert without_wait(attrs(response)) == expected_response(
            ex,
            status=404,
            outcome="not_found",
            opened=False,
            name="missing.txt",
            size=None,
            encoding=None,
        )
    else:
        # aiohttp 3.9: the FileNotFoundError escapes prepare(); aiohttp logs it
        # and closes the connection. No status was sent, and the span says so.
        assert ex.reply is None
        assert without_wait(attrs(response)) == expected_response(
            ex,
            status=None,
            outcome="error",
            opened=False,
            name="missing.txt",
            size=None,
            encoding=None,
            error="FileNotFoundError",
        )
        assert response.status.status_code is StatusCode.ERROR
    assert child_names(traced, response) == [STAT, WAIT]


def test_404_missing_file_from_a_static_route(site: Site, traced: Telemetry) -> None:
    ex = site.request("/static/missing.txt")

    assert ex.status == 404
    if STATIC_LOOKUP_JOB:
        response = only_response(traced)
        assert without_wait(attrs(response)) == expected_response(
            ex,
            status=404,
            outcome="not_found",
            opened=False,
            name="missing.txt",
            size=None,
            encoding=None,
        )
        assert wait_jobs(traced, response) == job_kinds("/static", open_job=False)
    else:
        # Known gap (module docstring): aiohttp 3.9 answers on the loop before
        # any FileResponse exists.
        assert ex.jobs == 0
        assert traced.spans() == []


def test_403_directory_from_a_handler(site: Site, traced: Telemetry) -> None:
    ex = site.request("/file/sub")

    response = only_response(traced)
    if FILE_RESPONSE_HANDLES_ERRORS:
        assert ex.status == 403
        assert without_wait(attrs(response)) == expected_response(
            ex,
            status=403,
            outcome="forbidden",
            opened=False,
            name="sub",
            size=os.stat(site.root / "sub").st_size,
        )
        assert child_names(traced, response) == [STAT, WAIT]
    else:
        # aiohttp 3.9 tries to open the directory; IsADirectoryError escapes
        # prepare() and aiohttp closes the connection.
        assert ex.reply is None
        assert without_wait(attrs(response)) == expected_response(
            ex,
            status=None,
            outcome="error",
            opened=False,
            name="sub",
            size=os.stat(site.root / "sub").st_size,
            error="IsADirectoryError",
        )
        assert OPEN not in child_names(traced, response)  # tried, not opened
        assert wait_jobs(traced, response) == ["open", "stat"]


def test_403_directory_from_a_static_route(site: Site, traced: Telemetry) -> None:
    ex = site.request("/static/sub")

    assert ex.status == 403
    if STATIC_LOOKUP_JOB:
        # The lookup job raises 403 itself, before any FileResponse exists;
        # aiohttp sends it above the file response, which claims no status.
        response = only_response(traced)
        assert without_wait(attrs(response)) == expected_response(
            ex,
            status=None,
            outcome="forbidden",
            opened=False,
            name="sub",
            size=None,
            encoding=None,
        )
        assert wait_jobs(traced, response) == ["lookup"]
        assert child_names(traced, response) == [WAIT]
    else:
        assert ex.jobs == 0
        assert traced.spans() == []  # 3.9: decided on the loop, no FileResponse


@pytest.mark.parametrize("prefix", ROUTES)
def test_fifo_is_not_opened(site: Site, traced: Telemetry, prefix: str) -> None:
    ex = site.request(f"{prefix}/fifo")  # opening a FIFO would block: nobody must

    if FILE_RESPONSE_HANDLES_ERRORS:
        assert ex.status == 403
        response = only_response(traced)
        assert without_wait(attrs(response)) == expected_response(
            ex, status=403, outcome="forbidden", opened=False, name="fifo", size=0
        )
    elif prefix == "/file":
        # aiohttp 3.9 stats the FIFO (size 0) and answers an empty 200 unopened.
        assert ex.status == 200
        assert ex.body == b""
        response = only_response(traced)
        assert without_wait(attrs(response)) == expected_response(
            ex, status=200, outcome="sent", opened=False, name="fifo", size=0
        )
    else:
        assert ex.status == 404  # aiohttp 3.9's static route: not a file
        assert traced.spans() == []


@pytest.fixture(scope="module")
def locked_site() -> Iterator[Site]:
    """A server whose executor threads check permissions as ``nobody``, and a
    mode-000 file: the open really fails with EACCES, even when the tests run
    as root (``drop_file_permissions``)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="fileresp-locked-"))
    try:
        os.chmod(root, 0o755)
        (root / "public.txt").write_bytes(SMALL)
        os.chmod(root / "public.txt", 0o644)
        (root / "secret.txt").write_bytes(b"secret")
        os.chmod(root / "secret.txt", 0o000)
        with serve_site(root, worker_initializer=drop_file_permissions) as running:
            # The premise, checked in a worker thread of that very executor.
            with pytest.raises(PermissionError):
                running.probe.executor.submit(open, root / "secret.txt", "rb").result(10)
            running.probe.executor.submit(open, root / "public.txt", "rb").result(10).close()
            yield running
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("prefix", ROUTES)
def test_403_permission_denied(locked_site: Site, prefix: str) -> None:
    telemetry = Telemetry()
    with instrumenting("aiohttp", telemetry):
        readable = locked_site.request(f"{prefix}/public.txt")
        # "Connection: close": aiohttp 3.10-3.11.9 declare the file's length
        # on this 403 and send no body, so a keep-alive client would wait.
        denied = locked_site.request(f"{prefix}/secret.txt", {"Connection": "close"})

    assert readable.status == 200
    assert readable.body == SMALL
    response = next(s for s in responses(telemetry) if attrs(s)["file.name"] == "secret.txt")
    names = child_names(telemetry, response)
    if FILE_RESPONSE_HANDLES_ERRORS:
        assert denied.status == 403
        assert denied.reply is not None
        assert denied.reply.body == b""
        # aiohttp's own bug up to 3.11.9: Content-Length: 6 and no body.
        assert denied.reply.incomplete is not COMBINED_JOB
        assert without_wait(attrs(response)) == expected_response(
            denied, status=403, outcome="forbidden", opened=False, name="secret.txt", size=6
        )
        # The checks passed, then the open failed: no fileresp.open.
        assert attrs(child(telemetry, response, PRECONDITION)) == {
            "fileresp.precondition.result": "none"
        }
        assert OPEN not in names
        assert wait_jobs(telemetry, response) == job_kinds(prefix, open_job=True)
    else:
        # aiohttp 3.9: the PermissionError escapes prepare() (even from the
        # static route, whose on-loop checks run as root and pass).
        assert denied.reply is None
        assert without_wait(attrs(response)) == expected_response(
            denied,
            status=None,
            outcome="error",
            opened=False,
            name="secret.txt",
            size=6,
            error="PermissionError",
        )
        assert OPEN not in names
    telemetry.shutdown()


# -- pre-compressed variants --------------------------------------------------

VARIANTS = {"br": PAGE_BR, "gzip": PAGE_GZ, "identity": PAGE}


@pytest.mark.parametrize(
    ("prefix", "accept", "served"),
    [
        ("/file", "br, gzip", "br" if BROTLI_VARIANTS else "gzip"),
        ("/static", "br, gzip", "br" if BROTLI_VARIANTS else "gzip"),
        ("/file", "gzip", "gzip"),
        ("/file", "br", "br" if BROTLI_VARIANTS else "identity"),
        ("/file", "", "identity"),
    ],
)
def test_content_encoding_names_the_variant_served(
    site: Site, traced: Telemetry, prefix: str, accept: str, served: str
) -> None:
    ex = site.request(f"{prefix}/page.html", {"Accept-Encoding": accept} if accept else {})

    assert ex.status == 200
    assert ex.body == VARIANTS[served]
    assert ex.reply is not None
    assert ex.reply.header("Content-Encoding") == (None if served == "identity" else served)
    response = only_response(traced)
    assert without_wait(attrs(response)) == expected_response(
        ex,
        status=200,
        outcome="sent",
        opened=True,
        name="page.html",
        size=len(ex.body),
        transfer="sendfile",
        sent=len(ex.body),
        encoding=served,
    )


def test_stat_span_covers_the_variant_candidates(
    site: Site, traced: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ``.br``/``.gz`` candidate aiohttp looks up is inside fileresp.stat:
    each candidate lookup is made to take at least ``delay``, so the span
    lasts at least that many delays (a lower bound a sleep guarantees)."""
    delay_s = 0.02
    probed: list[str] = []
    inside: list[bool] = []

    def slowed(original: Any) -> Any:
        # aiohttp looks the candidates up with Path.lstat (3.10.2+), which
        # calls Path.stat up to Python 3.13 and os.lstat from 3.14: both are
        # slowed, once per lookup.
        def slow_candidate(self: pathlib.Path, *args: Any, **kwargs: Any) -> os.stat_result:
            if self.name in ("small.txt.br", "small.txt.gz") and not inside:
                probed.append(self.name)
                time.sleep(delay_s)
            inside.append(True)
            try:
                return original(self, *args, **kwargs)
            finally:
                inside.pop()

        return slow_candidate

    monkeypatch.setattr(pathlib.Path, "stat", slowed(pathlib.Path.stat))
    monkeypatch.setattr(pathlib.Path, "lstat", slowed(pathlib.Path.lstat))
    ex = site.request("/file/small.txt", {"Accept-Encoding": "br, gzip"})
    monkeypatch.undo()

    assert ex.status == 200
    assert ex.body == SMALL
    assert probed == (["small.txt.br", "small.txt.gz"] if BROTLI_VARIANTS else ["small.txt.gz"])
    response = only_response(traced)
    assert attrs(response)["fileresp.content_encoding"] == "identity"
    stat = child(traced, response, STAT)
    assert stat.end_time - stat.start_time >= len(probed) * delay_s * 1e9


# -- the alarm: a 304 that opens the file ---------------------------------


@pytest.mark.parametrize(("header", "status"), [("If-None-Match", 304), ("If-Match", 412)])
def test_the_alarm_rings_when_the_file_is_opened_before_the_checks(
    site: Site, traced: Telemetry, header: str, status: int
) -> None:
    """``EarlyOpenFileResponse`` does what aiohttp PR #10101 did (never
    released): open the file before the precondition checks."""
    value = etag_of(site.root / "small.txt") if header == "If-None-Match" else '"other"'

    ex = site.request("/early/small.txt", {header: value})

    assert ex.status == status
    assert ex.body == b""
    response = only_response(traced)
    assert attrs(response)["fileresp.opened"] is True
    assert attrs(response)["http.response.status_code"] == status
    assert OPEN in child_names(traced, response)
    assert_tree(traced, response, early_open=True)
    opens = {a["http.response.status_code"]: p.value for a, p in points(traced, "fileresp.opens")}
    # The 304 series is reported from the app's start (at 0 until a 304 opens).
    assert opens == {304: 1} if status == 304 else {304: 0, status: 1}
    durations = points(traced, "fileresp.duration")
    assert [a["fileresp.opened"] for a, _ in durations] == [True]


def test_an_early_open_before_a_200_keeps_phases_well_formed(site: Site, traced: Telemetry) -> None:
    ex = site.request("/early/small.txt")

    assert ex.status == 200
    assert ex.body == SMALL
    response = only_response(traced)
    assert attrs(response)["fileresp.opened"] is True
    assert_tree(traced, response, early_open=True)
    for _, point in points(traced, "fileresp.phase.duration"):
        assert point.min >= 0
