"""Starlette file responses over a real uvicorn server on loopback.

Every test builds the app first and instruments afterwards, as an app that
imports Starlette before ``instrument()`` would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
import starlette
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from support.apps import counting_jobs, make_app, without_boundary
from support.harness import (
    Telemetry,
    child_names,
    http_scope,
    instrumenting,
    response_tree,
    serve_asgi,
)

from otel_fileresp import StarletteFileResponseInstrumentor

# StaticFiles raises HTTPException for 404/405/401 from Starlette 0.17 (0.15-0.16
# answer with their own PlainTextResponse).
STATIC_FILES_RAISES = tuple(int(p) for p in starlette.__version__.split(".")[:2]) >= (0, 17)

# Starlette answers Range requests from 0.39 (before, the whole file is sent).
RANGES = hasattr(FileResponse, "_handle_single_range")
OPEN_SPANS = ["fileresp.open"]
WAIT = "fileresp.threadpool.wait"


def the_response(telemetry: Telemetry) -> Any:
    [span] = telemetry.wait_for("fileresp.response")
    return span


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes)


@pytest.fixture
def served(files: Path, telemetry: Telemetry) -> Iterator[Any]:
    app = make_app(files)
    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        # StaticFiles checks its directory once, with a stat job of its own,
        # on its first request: make it here so every test sees steady state.
        server.request("GET", "/static/empty.txt")
        telemetry.wait_for("fileresp.response")
        telemetry.clear()
        yield server


def test_200_static_file_has_every_phase(served: Any, telemetry: Telemetry, files: Path) -> None:
    reply = served.request("GET", "/static/small.txt")
    assert reply.status == 200
    assert reply.body == (files / "small.txt").read_bytes()

    response = the_response(telemetry)
    spans = telemetry.spans()
    assert response.kind == SpanKind.INTERNAL
    assert response.parent is None
    assert response.instrumentation_scope.name == "otel_fileresp"
    assert attrs(response) == {
        "fileresp.framework": "starlette",
        "http.response.status_code": 200,
        "fileresp.outcome": "sent",
        "fileresp.opened": True,
        "fileresp.transfer": "read",
        "fileresp.bytes": 1024,
        "fileresp.threadpool.jobs": attrs(response)["fileresp.threadpool.jobs"],
        "fileresp.threadpool.wait": attrs(response)["fileresp.threadpool.wait"],
        "file.size": 1024,
        "file.name": "small.txt",
    }
    # lookup (or stat), open, one read; the close comes after the last byte
    assert attrs(response)["fileresp.threadpool.jobs"] >= 3
    assert attrs(response)["fileresp.threadpool.wait"] > 0
    assert child_names(spans, response) == sorted(
        ["fileresp.stat", "fileresp.precondition", "fileresp.open", "fileresp.send", WAIT, WAIT]
    )
    by_name = {s.name: s for s in response_tree(spans, response)}
    waits = [s for s in response_tree(spans, response) if s.name == WAIT]
    assert sorted(s.attributes["fileresp.threadpool.job"] for s in waits) == sorted(
        ["open", "lookup" if _sync_lookup() else "stat"]
    )
    assert by_name["fileresp.precondition"].attributes["fileresp.precondition.result"] == "none"
    send = attrs(by_name["fileresp.send"])
    assert send["fileresp.transfer"] == "read"
    assert send["fileresp.bytes"] == 1024
    assert send["fileresp.read.count"] >= 1
    for child in response_tree(spans, response):
        assert child.kind == SpanKind.INTERNAL
        assert response.start_time <= child.start_time <= child.end_time <= response.end_time
        assert child.context.trace_id == response.context.trace_id
    # phases happen in this order
    assert by_name["fileresp.stat"].end_time <= by_name["fileresp.precondition"].start_time
    assert by_name["fileresp.precondition"].end_time <= by_name["fileresp.open"].start_time
    assert by_name["fileresp.open"].end_time <= by_name["fileresp.send"].start_time


def _sync_lookup() -> bool:
    return not asyncio.iscoroutinefunction(StaticFiles.lookup_path)


@pytest.mark.parametrize("header", ["If-None-Match", "If-Modified-Since"])
def test_304_skips_the_open(served: Any, telemetry: Telemetry, header: str) -> None:
    first = served.request("GET", "/static/small.txt")
    validator = first.header("etag" if header == "If-None-Match" else "last-modified")
    telemetry.wait_for("fileresp.response")
    telemetry.clear()

    reply = served.request("GET", "/static/small.txt", {header: validator})
    assert reply.status == 304
    assert reply.body == b""

    response = the_response(telemetry)
    spans = telemetry.spans()
    assert attrs(response)["http.response.status_code"] == 304
    assert attrs(response)["fileresp.outcome"] == "not_modified"
    assert attrs(response)["fileresp.opened"] is False
    assert attrs(response)["fileresp.transfer"] == "none"
    assert attrs(response)["fileresp.bytes"] == 0
    assert attrs(response)["file.name"] == "small.txt"
    names = child_names(spans, response)
    assert "fileresp.open" not in names
    assert "fileresp.send" not in names
    assert names == sorted(["fileresp.stat", "fileresp.precondition", WAIT])
    [precondition] = [s for s in response_tree(spans, response) if s.name.endswith("precondition")]
    assert precondition.attributes["fileresp.precondition.result"] == "not_modified"
    assert precondition.attributes["fileresp.precondition.header"] == header.lower()
    # and the alarm counter stays silent for 304 (its series is there, at 0)
    opens = telemetry.metric_points("fileresp.opens")
    assert [p.value for p in opens if p.attributes["http.response.status_code"] == 304] == [0]


def test_head_sends_headers_only(served: Any, telemetry: Telemetry) -> None:
    reply = served.request("HEAD", "/static/small.txt")
    assert reply.status == 200
    assert reply.header("content-length") == "1024"
    response = the_response(telemetry)
    assert attrs(response)["fileresp.outcome"] == "head"
    assert attrs(response)["fileresp.opened"] is False
    assert attrs(response)["fileresp.bytes"] == 0
    assert "fileresp.send" not in child_names(telemetry.spans(), response)


def test_single_range(served: Any, telemetry: Telemetry, files: Path) -> None:
    reply = served.request("GET", "/static/large.bin", {"Range": "bytes=10-109"})
    content = (files / "large.bin").read_bytes()
    response = the_response(telemetry)
    if RANGES:
        assert (reply.status, reply.body) == (206, content[10:110])
        assert attrs(response)["fileresp.outcome"] == "partial"
        assert attrs(response)["fileresp.bytes"] == 100
    else:
        assert (reply.status, len(reply.body)) == (200, len(content))
        assert attrs(response)["fileresp.outcome"] == "sent"
    assert attrs(response)["http.response.status_code"] == reply.status
    assert attrs(response)["fileresp.opened"] is True


def test_multiple_ranges(served: Any, telemetry: Telemetry) -> None:
    reply = served.request("GET", "/static/large.bin", {"Range": "bytes=0-9,100-109"})
    response = the_response(telemetry)
    assert attrs(response)["http.response.status_code"] == reply.status
    if not RANGES:
        assert reply.status == 200
    elif reply.incomplete:
        # Starlette 0.39-0.4x declares a Content-Length shorter than its
        # multipart body and the server aborts the response (the same without
        # instrumentation: see the differential test): recorded as a failure.
        assert attrs(response)["fileresp.outcome"] == "error"
        assert attrs(response)["error.type"] == "LocalProtocolError"
    else:
        assert reply.status == 206
        assert reply.header("content-type").startswith("multipart/byteranges")
        assert attrs(response)["fileresp.outcome"] == "partial"
        # multipart framing + 20 file bytes, all handed to the server
        assert attrs(response)["fileresp.bytes"] == len(reply.body) > 20


@pytest.mark.parametrize(
    ("range_header", "ranged_status", "outcome"),
    [("bytes=abc", 400, "error"), ("bytes=99999999-", 416, "range_not_satisfiable")],
)
def test_malformed_and_unsatisfiable_range(
    served: Any, telemetry: Telemetry, range_header: str, ranged_status: int, outcome: str
) -> None:
    reply = served.request("GET", "/static/large.bin", {"Range": range_header})
    response = the_response(telemetry)
    if RANGES:
        assert reply.status == ranged_status
        assert attrs(response)["fileresp.outcome"] == outcome
        assert attrs(response)["fileresp.opened"] is False
        # An error status Starlette sent itself is its error.type (issue 19).
        expected_error = str(ranged_status) if outcome == "error" else None
        assert attrs(response).get("error.type") == expected_error
    else:
        assert reply.status == 200
    assert attrs(response)["http.response.status_code"] == reply.status


def test_if_range_mismatch_sends_the_whole_file(served: Any, telemetry: Telemetry) -> None:
    reply = served.request(
        "GET", "/static/large.bin", {"Range": "bytes=0-9", "If-Range": '"not-the-etag"'}
    )
    assert reply.status == 200
    assert len(reply.body) == 10 * 1024 * 1024
    response = the_response(telemetry)
    spans = response_tree(telemetry.spans(), response)
    [precondition] = [s for s in spans if s.name == "fileresp.precondition"]
    if RANGES:
        assert precondition.attributes["fileresp.precondition.result"] == "range_ignored"
        assert precondition.attributes["fileresp.precondition.header"] == "if-range"
    else:  # If-Range is not evaluated by this Starlette release
        assert precondition.attributes["fileresp.precondition.result"] == "none"


def test_missing_static_file_is_not_found(served: Any, telemetry: Telemetry) -> None:
    reply = served.request("GET", "/static/missing.txt")
    assert reply.status == 404
    response = the_response(telemetry)
    assert attrs(response)["fileresp.outcome"] == "not_found"
    if STATIC_FILES_RAISES:
        # StaticFiles raises HTTPException(404); the app above sends it: no
        # status is claimed by the file response.
        assert "http.response.status_code" not in attrs(response)
    else:  # Starlette 0.15-0.16 answer PlainTextResponse("Not Found", 404) themselves
        assert attrs(response)["http.response.status_code"] == 404
    assert attrs(response)["fileresp.opened"] is False
    assert "error.type" not in attrs(response)
    assert "fileresp.open" not in child_names(telemetry.spans(), response)


def test_missing_file_response_path_is_an_error(served: Any, telemetry: Telemetry) -> None:
    reply = served.request("GET", "/file/missing.txt")
    assert reply.status == 500
    response = the_response(telemetry)
    assert attrs(response)["fileresp.outcome"] == "error"
    assert attrs(response)["error.type"] == "RuntimeError"
    assert attrs(response)["fileresp.opened"] is False
    assert "http.response.status_code" not in attrs(response)
    assert response.status.is_ok is False


def test_file_response_route(served: Any, telemetry: Telemetry, files: Path) -> None:
    reply = served.request("GET", "/file/small.txt")
    assert reply.status == 200
    assert reply.body == (files / "small.txt").read_bytes()
    response = the_response(telemetry)
    assert attrs(response)["fileresp.outcome"] == "sent"
    assert attrs(response)["fileresp.opened"] is True
    waits = [s for s in response_tree(telemetry.spans(), response) if s.name == WAIT]
    # FileResponse stats the file itself, then opens it
    assert sorted(s.attributes["fileresp.threadpool.job"] for s in waits) == ["open", "stat"]
    assert "fileresp.precondition" not in child_names(telemetry.spans(), response)


def test_bare_file_response_never_answers_304(served: Any, telemetry: Telemetry) -> None:
    etag = served.request("GET", "/file/small.txt").header("etag")
    telemetry.wait_for("fileresp.response")
    telemetry.clear()
    reply = served.request("GET", "/file/small.txt", {"If-None-Match": etag})
    assert reply.status == 200
    response = the_response(telemetry)
    assert attrs(response)["fileresp.opened"] is True
    assert attrs(response)["fileresp.outcome"] == "sent"


def test_span_count_is_bounded_by_phases_not_size(served: Any, telemetry: Telemetry) -> None:
    served.request("GET", "/static/small.txt")
    small = the_response(telemetry)
    small_count = len(response_tree(telemetry.spans(), small)) + 1
    telemetry.clear()
    reply = served.request("GET", "/static/large.bin")
    assert len(reply.body) == 10 * 1024 * 1024
    large = the_response(telemetry)
    large_spans = response_tree(telemetry.spans(), large)
    assert len(large_spans) + 1 == small_count <= 8
    [send] = [s for s in large_spans if s.name == "fileresp.send"]
    assert send.attributes["fileresp.read.count"] >= 160  # 10 MB in 64 KiB reads
    assert send.attributes["fileresp.bytes"] == 10 * 1024 * 1024
    # + lookup and open; the read that finds the end of the file runs after
    # the last byte (Content-Length reached), so it is not the response's.
    assert attrs(large)["fileresp.threadpool.jobs"] >= 162


def test_parent_is_the_asgi_server_span(files: Path, telemetry: Telemetry) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app = OpenTelemetryMiddleware(make_app(files), tracer_provider=telemetry.tracer_provider)
    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        assert server.request("GET", "/static/small.txt").status == 200
        assert server.request("GET", "/file/small.txt").status == 200
        responses = telemetry.wait_for("fileresp.response", 2)
    servers = [s for s in telemetry.spans() if s.kind == SpanKind.SERVER]
    assert len(responses) == 2
    for response in responses:
        [parent] = [s for s in servers if s.context.span_id == response.parent.span_id]
        assert parent.context.trace_id == response.context.trace_id


def test_parent_is_starlettes_own_opentelemetry_middleware(
    files: Path, telemetry: Telemetry
) -> None:
    """Starlette ships its own OpenTelemetry middleware from 1.10."""
    try:
        from starlette.middleware.opentelemetry import OpenTelemetryMiddleware
    except ImportError:
        import starlette

        assert tuple(int(p) for p in starlette.__version__.split(".")[:2]) < (1, 10)
        return
    app = OpenTelemetryMiddleware(make_app(files), tracer_provider=telemetry.tracer_provider)
    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        assert server.request("GET", "/static/small.txt").status == 200
        [response] = telemetry.wait_for("fileresp.response")
    [server_span] = [s for s in telemetry.spans() if s.kind == SpanKind.SERVER]
    assert response.parent.span_id == server_span.context.span_id
    assert server_span.instrumentation_scope.name == "starlette"


def test_pathsend_is_delegated_to_the_server(files: Path, telemetry: Telemetry) -> None:
    """A server offering ``http.response.pathsend`` opens the file itself (no
    loopback ASGI server here implements it, so the scope is driven directly)."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = http_scope(
        "/file/small.txt",
        asgi={"version": "3.0", "spec_version": "2.4"},
        extensions={"http.response.pathsend": {}},
    )
    with instrumenting("starlette", telemetry):
        asyncio.run(make_app(files)(scope, receive, send))
    [response] = telemetry.wait_for("fileresp.response")
    kinds = [m["type"] for m in sent]
    if "http.response.pathsend" in kinds:
        assert attrs(response)["fileresp.transfer"] == "pathsend"
        assert attrs(response)["fileresp.opened"] is False
        assert attrs(response)["fileresp.bytes"] == 1024
        assert "fileresp.send" in child_names(telemetry.spans(), response)
        assert "fileresp.open" not in child_names(telemetry.spans(), response)
    else:  # this Starlette release reads the file itself
        assert attrs(response)["fileresp.transfer"] == "read"
        assert attrs(response)["fileresp.opened"] is True
    assert attrs(response)["http.response.status_code"] == 200


def differential_requests(server: Any) -> list[tuple[str, str, dict[str, str]]]:
    first = server.request("GET", "/static/small.txt")
    etag, modified = first.header("etag"), first.header("last-modified")
    return [
        ("GET", "/static/small.txt", {}),
        ("GET", "/static/small.txt", {"If-None-Match": etag}),
        ("GET", "/static/small.txt", {"If-Modified-Since": modified}),
        ("HEAD", "/static/small.txt", {}),
        ("GET", "/static/large.bin", {"Range": "bytes=0-99"}),
        ("GET", "/static/large.bin", {"Range": "bytes=0-9,20-29"}),
        ("GET", "/static/large.bin", {"Range": "bytes=abc"}),
        ("GET", "/static/large.bin", {"Range": "bytes=99999999-"}),
        ("GET", "/static/small.txt", {"Range": "bytes=0-9", "If-Range": '"mismatch"'}),
        ("GET", "/static/missing.txt", {}),
        ("GET", "/static/empty.txt", {}),
        ("GET", "/static/sub/page.html", {}),
        ("POST", "/static/small.txt", {}),
        ("GET", "/file/small.txt", {}),
        ("GET", "/file/small.txt", {"Range": "bytes=5-"}),
        ("GET", "/file/missing.txt", {}),
    ]


def run_requests(
    files: Path, telemetry: Telemetry | None, wait_for_spans: bool = True
) -> tuple[list[Any], int]:
    """The differential requests against a fresh app; replies and job count."""
    app = make_app(files)
    with counting_jobs() as jobs:
        context = instrumenting("starlette", telemetry) if telemetry else _nothing()
        with context, serve_asgi(app) as server:
            replies = []
            for method, path, headers in differential_requests(server):
                reply = server.request(method, path, headers)
                replies.append((method, path, *without_boundary(reply)))
            if telemetry is not None and wait_for_spans:
                telemetry.wait_for("fileresp.response", len(replies) + 1)
        return replies, len(jobs)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def test_differential_same_responses_and_jobs(files: Path, telemetry: Telemetry) -> None:
    plain, plain_jobs = run_requests(files, None)
    traced, traced_jobs = run_requests(files, telemetry)
    assert traced == plain
    assert traced_jobs == plain_jobs
    assert len(telemetry.spans()) > len(plain)


class ExplodingProcessor(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor on_start fails")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("processor on_end fails")


def test_failing_span_processor_does_not_touch_responses(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_fileresp._log import forget_logged

    broken = Telemetry(span_processors=(ExplodingProcessor(),))
    plain, plain_jobs = run_requests(files, None)
    forget_logged()
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    traced, traced_jobs = run_requests(files, broken, wait_for_spans=False)
    assert traced == plain
    assert traced_jobs == plain_jobs
    ours = [r for r in caplog.records if r.name.startswith("otel_fileresp")]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "in emit.spans" in ours[0].getMessage()
    broken.shutdown()


def test_phase_spans_off_puts_durations_on_the_response(
    served: Any, files: Path, telemetry: Telemetry
) -> None:
    StarletteFileResponseInstrumentor().uninstrument()
    with instrumenting("starlette", telemetry, phase_spans=False):
        assert served.request("GET", "/static/small.txt").status == 200
        [response] = telemetry.wait_for("fileresp.response")
    assert [s.name for s in telemetry.spans()] == ["fileresp.response"]
    for phase in ("stat", "precondition", "open", "send"):
        assert attrs(response)[f"fileresp.{phase}.duration"] >= 0
    StarletteFileResponseInstrumentor().instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )


@pytest.mark.parametrize(
    ("capture", "expected"),
    [("name", {"file.name"}), ("full", {"file.name", "file.path"}), ("none", set())],
)
def test_capture_path(
    files: Path, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, capture: str, expected: set
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FILERESP_CAPTURE_PATH", capture)
    with instrumenting("starlette", telemetry), serve_asgi(make_app(files)) as server:
        server.request("GET", "/static/small.txt")
        [response] = telemetry.wait_for("fileresp.response")
    assert {k for k in attrs(response) if k.startswith("file.") and k != "file.size"} == expected
    if capture == "full":
        assert attrs(response)["file.path"] == str(files / "small.txt")
    values = " ".join(str(v) for s in telemetry.spans() for v in s.attributes.values())
    if capture != "full":
        assert str(files) not in values


def test_invalid_setting_warns_once_and_uses_default(
    files: Path, telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_FILERESP_PHASE_SPANS", "maybe")
    caplog.set_level(logging.WARNING, logger="otel_fileresp")
    with instrumenting("starlette", telemetry), serve_asgi(make_app(files)) as server:
        server.request("GET", "/static/small.txt")
        [response] = telemetry.wait_for("fileresp.response")
    warnings = [r.getMessage() for r in caplog.records if "OTEL_PYTHON_FILERESP" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_PYTHON_FILERESP_PHASE_SPANS" in warnings[0]
    assert "'true'" in warnings[0]
    assert len(response_tree(telemetry.spans(), response)) > 0  # default: phase spans on


@pytest.mark.parametrize("direct_reads", [True, False], ids=["direct-reads", "public-calls"])
def test_suppressed_requests_emit_nothing(
    files: Path, telemetry: Telemetry, direct_reads: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suppression is honoured whether the package reads the context's keys
    itself (the installed API agrees with its public calls) or, when an API
    release would not, asks ``is_instrumentation_enabled()``."""
    from otel_fileresp import _telemetry

    assert _telemetry._DIRECT_READS  # the installed API: the direct reads agree
    monkeypatch.setattr(_telemetry, "_DIRECT_READS", direct_reads)
    inner = make_app(files)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if (b"x-suppress", b"1") in scope.get("headers", []):
            with suppress_instrumentation():
                await inner(scope, receive, send)
        else:
            await inner(scope, receive, send)

    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        assert server.request("GET", "/static/small.txt", {"X-Suppress": "1"}).status == 200
        assert server.request("GET", "/static/small.txt").status == 200
        telemetry.wait_for("fileresp.response")
    # The server has stopped: every response it served has ended.
    responses = [s for s in telemetry.spans() if s.name == "fileresp.response"]
    assert len(responses) == 1
    assert telemetry.metric_points("fileresp.duration")[0].count == 1


def test_instrument_twice_equals_once_and_uninstrument_restores(
    files: Path, telemetry: Telemetry
) -> None:
    originals = (
        StaticFiles.__dict__["__call__"],
        StaticFiles.__dict__["is_not_modified"],
        FileResponse.__dict__["__call__"],
        anyio.to_thread.run_sync,
    )
    instrumentor = StarletteFileResponseInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    with serve_asgi(make_app(files)) as server:
        server.request("GET", "/static/small.txt")
        assert len(telemetry.wait_for("fileresp.response")) == 1
        instrumentor.uninstrument()
        instrumentor.uninstrument()
        assert (
            StaticFiles.__dict__["__call__"],
            StaticFiles.__dict__["is_not_modified"],
            FileResponse.__dict__["__call__"],
            anyio.to_thread.run_sync,
        ) == originals
        telemetry.clear()
        assert server.request("GET", "/static/small.txt").status == 200
    assert telemetry.spans() == []


def test_subclasses_defined_before_instrument_are_covered(
    files: Path, telemetry: Telemetry
) -> None:
    class MyStatic(StaticFiles):
        pass

    app = Starlette(routes=[Mount("/s", MyStatic(directory=str(files)))])
    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        assert server.request("GET", "/s/small.txt").status == 200
        [response] = telemetry.wait_for("fileresp.response")
    assert attrs(response)["fileresp.opened"] is True


def test_entry_point_loads_the_instrumentor() -> None:
    from importlib.metadata import entry_points

    [entry_point] = entry_points(group="opentelemetry_instrumentor", name="fileresp_starlette")
    assert entry_point.load() is StarletteFileResponseInstrumentor
    deps = StarletteFileResponseInstrumentor().instrumentation_dependencies()
    assert deps == ("starlette >= 0.15",)
