"""aiohttp: trace context, metrics, robustness and the instrumentor's lifecycle,
over a real aiohttp server on loopback.

- ``fileresp.response`` is a child of contrib's aiohttp-server span (which
  ends before ``prepare``) for handler and static routes;
- metrics are recorded for every response, sampled or not;
- the instrumentation changes nothing the client or the executor sees, even
  when the telemetry pipeline fails;
- the number of spans does not grow with the file;
- ``instrument()`` twice is once; ``uninstrument()`` restores every attribute.
"""

from __future__ import annotations

import logging
import pathlib
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web, web_fileresponse
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from support.aiohttp_site import (
    AFTER_MTIME,
    BEFORE_MTIME,
    BIG_SIZE,
    CHUNK,
    SMALL,
    STATIC_LOOKUP_JOB,
    SUPPRESS_HEADER,
    Exchange,
    Site,
    child,
    children,
    etag_of,
    only_response,
    points,
    serve_site,
)
from support.harness import Telemetry, attrs, instrumenting, responses

from otel_fileresp import _log
from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

# -- parenting ---------------------------------------------------------------


@pytest.fixture
def server_spans(site: Site) -> Iterator[tuple[Site, Telemetry]]:
    """A server whose app is built while contrib's AioHttpServerInstrumentor is
    active (it swaps ``web.Application`` for a subclass adding its middleware);
    ours is instrumented after the app exists."""
    telemetry = Telemetry()
    contrib = AioHttpServerInstrumentor()
    with warnings.catch_warnings():
        # aiohttp's own warning about contrib subclassing web.Application.
        warnings.filterwarnings("ignore", "Inheritance class", DeprecationWarning)
        contrib.instrument(tracer_provider=telemetry.tracer_provider)
    try:
        with serve_site(site.root) as running, instrumenting("aiohttp", telemetry):
            yield running, telemetry
    finally:
        contrib.uninstrument()
        telemetry.shutdown()


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/file/small.txt", {}, 200),
        ("/static/small.txt", {}, 200),
        ("/static/small.txt", {"If-Modified-Since": AFTER_MTIME}, 304),
    ],
)
def test_response_is_a_child_of_contribs_server_span(
    server_spans: tuple[Site, Telemetry], path: str, headers: dict[str, str], status: int
) -> None:
    site, telemetry = server_spans

    ex = site.request(path, headers)

    assert ex.status == status
    (server,) = [s for s in telemetry.spans() if s.kind is SpanKind.SERVER]
    response = only_response(telemetry)
    assert response.parent is not None
    assert response.parent.span_id == server.context.span_id
    assert response.context.trace_id == server.context.trace_id
    assert attrs(response)["http.response.status_code"] == status
    # The phases hang under fileresp.response, in the same trace.
    for span in children(telemetry, response):
        assert span.context.trace_id == server.context.trace_id
    assert children(telemetry, response)


def test_response_is_a_root_span_without_server_instrumentation(
    site: Site, traced: Telemetry
) -> None:
    site.request("/file/small.txt")
    site.request("/static/small.txt")

    found = responses(traced)
    assert len(found) == 2
    assert all(s.parent is None for s in found)
    assert found[0].context.trace_id != found[1].context.trace_id


# -- metrics ---------------------------------------------------------------


def sampled_telemetry(sampled: bool) -> Telemetry:
    telemetry = Telemetry()
    if not sampled:
        telemetry.tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    return telemetry


@pytest.mark.parametrize("sampled", [True, False], ids=["sampled", "ALWAYS_OFF"])
def test_metrics_for_200_304_412(site: Site, sampled: bool) -> None:
    telemetry = sampled_telemetry(sampled)
    etag = etag_of(site.root / "small.txt")
    with instrumenting("aiohttp", telemetry):
        exchanges = [
            site.request("/file/small.txt"),
            site.request("/file/small.txt", {"If-None-Match": etag}),
            site.request("/file/small.txt", {"If-Match": '"other"'}),
        ]
    assert [ex.status for ex in exchanges] == [200, 304, 412]

    durations = points(telemetry, "fileresp.duration")
    expected = [
        (200, "sent", True),
        (304, "not_modified", False),
        (412, "precondition_failed", False),
    ]
    assert sorted((sorted(a.items()), p.count) for a, p in durations) == sorted(
        (
            sorted(
                {
                    "fileresp.framework": "aiohttp",
                    "http.response.status_code": status,
                    "fileresp.outcome": outcome,
                    "fileresp.opened": opened,
                }.items()
            ),
            1,
        )
        for status, outcome, opened in expected
    )
    assert all(p.min >= 0 for _, p in durations)

    # Opens: the 200 only; the 304 series is there at 0 (the alarm stays silent).
    opens = {
        a["http.response.status_code"]: p.value for a, p in points(telemetry, "fileresp.opens")
    }
    assert opens == {200: 1, 304: 0}

    # v2 default: one point per response, its total wait for workers.
    phases = {a["fileresp.phase"]: p for a, p in points(telemetry, "fileresp.phase.duration")}
    assert {a["fileresp.framework"] for a, _ in points(telemetry, "fileresp.phase.duration")} == {
        "aiohttp"
    }
    assert {name: p.count for name, p in phases.items()} == {"threadpool.wait": 3}
    assert all(p.min >= 0 for p in phases.values())

    if sampled:
        assert len(responses(telemetry)) == 3
    else:
        assert telemetry.spans() == []
    telemetry.shutdown()


# -- robustness ---------------------------------------------------------------


class ExplodingProcessor(SpanProcessor):
    """A span processor that fails on every span end."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1
        raise RuntimeError("span processor on fire")


def test_a_failing_span_processor_changes_no_response(
    site: Site, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_log, "_logged_once", set())
    exploding = ExplodingProcessor()
    telemetry = Telemetry(span_processors=(exploding,))
    etag = etag_of(site.root / "small.txt")
    cases: list[tuple[str, dict[str, str], str, int, bytes]] = [
        ("/file/small.txt", {}, "GET", 200, SMALL),
        ("/static/small.txt", {}, "GET", 200, SMALL),
        ("/file/small.txt", {"If-None-Match": etag}, "GET", 304, b""),
        ("/file/small.txt", {"If-Match": '"x"'}, "GET", 412, b""),
        ("/file/small.txt", {"Range": "bytes=1-4"}, "GET", 206, SMALL[1:5]),
        ("/file/small.txt", {}, "HEAD", 200, b""),
        ("/compressed/small.txt", {}, "GET", 200, SMALL),
    ]
    with (
        caplog.at_level(logging.WARNING, logger="otel_fileresp"),
        instrumenting("aiohttp", telemetry),
    ):
        for path, headers, method, status, body in cases:
            ex = site.request(path, headers, method)
            assert (ex.status, ex.body) == (status, body), path

    assert exploding.ended >= len(cases)  # it really was called, and raised
    ours = [r for r in caplog.records if r.name.startswith("otel_fileresp")]
    assert len(ours) == 1, [r.getMessage() for r in ours]
    assert "in emit.spans" in ours[0].getMessage()
    # Metrics come before spans: every response is still counted.
    assert sum(p.count for _, p in points(telemetry, "fileresp.duration")) == len(cases)
    telemetry.shutdown()


@pytest.mark.parametrize("prefix", ["/file", "/static"])
def test_suppress_instrumentation_is_honoured(site: Site, traced: Telemetry, prefix: str) -> None:
    """A middleware serves the request under suppress_instrumentation(); the
    handler's FileResponse is prepared after that block: still suppressed."""
    ex = site.request(f"{prefix}/small.txt", {SUPPRESS_HEADER: "1"})

    assert ex.status == 200
    assert ex.body == SMALL
    assert traced.spans() == []
    assert points(traced, "fileresp.duration") == []
    # The control: the same request, not suppressed.
    site.request(f"{prefix}/small.txt")
    assert len(responses(traced)) == 1


# -- bounded span count -------------------------------------------------------


def trace_of(telemetry: Telemetry, response: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in telemetry.spans() if s.context.trace_id == response.context.trace_id]


def test_span_count_does_not_grow_with_the_file(site: Site, traced: Telemetry) -> None:
    # Compression forces aiohttp's executor-read fallback: one read job per chunk.
    small = site.request("/compressed/small.txt")
    big = site.request("/compressed/big.bin")

    assert small.body == SMALL
    assert len(big.body) == BIG_SIZE
    small_span, big_span = responses(traced)
    assert attrs(big_span)["fileresp.bytes"] == BIG_SIZE
    small_reads = attrs(child(traced, small_span, "fileresp.send"))["fileresp.read.count"]
    big_reads = attrs(child(traced, big_span, "fileresp.send"))["fileresp.read.count"]
    assert big_reads >= BIG_SIZE // CHUNK
    assert big.jobs - small.jobs == big_reads - small_reads  # the reads, counted
    assert len(trace_of(traced, big_span)) == len(trace_of(traced, small_span)) <= 8


# -- the instrumentation changes nothing --------------------------------------


def diff_cases(site: Site) -> list[tuple[str, str, dict[str, str]]]:
    etag = etag_of(site.root / "small.txt")
    cases: list[tuple[str, str, dict[str, str]]] = []
    for prefix in ("/file", "/static"):
        cases += [
            ("GET", f"{prefix}/small.txt", {}),
            ("HEAD", f"{prefix}/small.txt", {}),
            ("GET", f"{prefix}/small.txt", {"If-None-Match": etag}),
            ("GET", f"{prefix}/small.txt", {"If-Modified-Since": AFTER_MTIME}),
            ("GET", f"{prefix}/small.txt", {"If-Match": '"other"'}),
            ("GET", f"{prefix}/small.txt", {"If-Unmodified-Since": BEFORE_MTIME}),
            ("GET", f"{prefix}/small.txt", {"If-None-Match": '"other"'}),
            ("GET", f"{prefix}/small.txt", {"Range": "bytes=5000-"}),
            ("GET", f"{prefix}/small.txt", {"Range": "bytes=10-19"}),
            ("GET", f"{prefix}/small.txt", {"Range": "bytes=-7"}),
            ("GET", f"{prefix}/small.txt", {"Range": "bytes=10-19", "If-Range": BEFORE_MTIME}),
            ("GET", f"{prefix}/empty.txt", {}),
            ("GET", f"{prefix}/missing.txt", {}),
            ("GET", f"{prefix}/sub", {}),
            ("GET", f"{prefix}/fifo", {}),
            ("GET", f"{prefix}/page.html", {"Accept-Encoding": "br, gzip"}),
            ("GET", f"{prefix}/page.html", {"Accept-Encoding": "gzip"}),
            ("GET", f"{prefix}/big.bin", {}),
        ]
    cases += [
        ("GET", "/compressed/small.txt", {}),
        ("GET", "/compressed/small.txt", {"Accept-Encoding": "gzip"}),
        ("GET", "/compressed/big.bin", {}),
        ("GET", "/early/small.txt", {"If-None-Match": etag}),
        ("GET", "/early/small.txt", {}),
        ("GET", "/plain", {}),
    ]
    return cases


def observe(ex: Exchange) -> tuple[Any, ...]:
    if ex.reply is None:
        return (None, ex.jobs)  # aiohttp 3.9 dropped the connection
    reply = ex.reply
    return (reply.status, reply.comparable_headers(), reply.body, reply.incomplete, ex.jobs)


@pytest.mark.parametrize("nosendfile", [False, True], ids=["sendfile", "NOSENDFILE"])
def test_instrumentation_changes_no_response_and_no_job_count(
    site: Site, monkeypatch: pytest.MonkeyPatch, nosendfile: bool
) -> None:
    """Same requests, without and with instrumentation: the same status,
    headers (minus Date and Server), body, and executor jobs (counted by the
    loop's default executor, installed before instrumenting)."""
    monkeypatch.setattr(web_fileresponse, "NOSENDFILE", nosendfile)
    cases = diff_cases(site)

    def run() -> list[tuple[Any, ...]]:
        return [observe(site.request(path, headers, method)) for method, path, headers in cases]

    plain = run()
    telemetry = Telemetry()
    with instrumenting("aiohttp", telemetry):
        instrumented_run = run()
    again = run()

    for case, before, during, after in zip(cases, plain, instrumented_run, again, strict=True):
        assert during == before, case
        assert after == before, case
    # It was on: one fileresp.response per file response (not /plain; not the
    # three static answers aiohttp 3.9 gives on the loop: missing, sub, fifo).
    assert len(responses(telemetry)) == len(cases) - 1 - (0 if STATIC_LOOKUP_JOB else 3)
    telemetry.shutdown()


# -- lifecycle ------------------------------------------------------------------


def patched_owners() -> dict[str, dict[str, Any]]:
    return {
        "FileResponse": dict(vars(web.FileResponse)),
        "ThreadPoolExecutor": dict(vars(ThreadPoolExecutor)),
        "Path": dict(vars(pathlib.Path)),
    }


def test_instrument_twice_is_once_and_uninstrument_restores_everything(site: Site) -> None:
    original = patched_owners()
    original_prepare = web.FileResponse.prepare
    telemetry = Telemetry()
    instrumentor = AiohttpFileResponseInstrumentor()

    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    once = patched_owners()
    assert once["FileResponse"]["prepare"] is not original_prepare
    AiohttpFileResponseInstrumentor().instrument(  # the same singleton: a no-op
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    twice = patched_owners()
    for owner, attributes in once.items():
        for name, value in attributes.items():
            assert twice[owner][name] is value, (owner, name)
    assert once["FileResponse"]["prepare"].__wrapped__ is original_prepare  # one layer

    ex = site.request("/file/small.txt")
    assert ex.status == 200
    assert len(responses(telemetry)) == 1
    opens = {
        a["http.response.status_code"]: p.value for a, p in points(telemetry, "fileresp.opens")
    }
    assert opens == {200: 1, 304: 0}

    instrumentor.uninstrument()
    restored = patched_owners()
    assert web.FileResponse.prepare is original_prepare
    for owner, attributes in original.items():
        assert restored[owner].keys() == attributes.keys(), owner
        for name, value in attributes.items():
            assert restored[owner][name] is value, (owner, name)

    telemetry.clear()
    for path in ("/file/small.txt", "/static/small.txt"):
        ex = site.request(path)
        assert ex.status == 200
        assert ex.body == SMALL
    assert telemetry.spans() == []
    assert sum(p.count for _, p in points(telemetry, "fileresp.duration")) == 1
    telemetry.shutdown()


# -- settings -------------------------------------------------------------------


@pytest.mark.parametrize("capture", ["name", "full", "none"])
def test_capture_path(site: Site, capture: str) -> None:
    telemetry = Telemetry()
    with instrumenting("aiohttp", telemetry, capture_path=capture):
        site.request("/static/small.txt")
    found = attrs(only_response(telemetry))
    recorded = {k: v for k, v in found.items() if k in ("file.name", "file.path")}
    expected = {
        "name": {"file.name": "small.txt"},
        "full": {"file.name": "small.txt", "file.path": str((site.root / "small.txt").resolve())},
        "none": {},
    }[capture]
    assert recorded == expected
    telemetry.shutdown()


def test_phase_spans_off_puts_phase_durations_on_the_response(site: Site) -> None:
    telemetry = Telemetry()
    with instrumenting("aiohttp", telemetry, phase_spans=False):
        ex = site.request("/file/small.txt")
    assert ex.status == 200
    (response,) = telemetry.spans()
    assert response.name == "fileresp.response"
    durations = {k for k in attrs(response) if k.endswith(".duration")}
    assert durations == {
        "fileresp.stat.duration",
        "fileresp.precondition.duration",
        "fileresp.open.duration",
        "fileresp.send.duration",
    }
    assert all(attrs(response)[k] >= 0 for k in durations)
    # Metrics are unchanged: by default the wait only.
    phases = Counter(a["fileresp.phase"] for a, _ in points(telemetry, "fileresp.phase.duration"))
    assert phases == {"threadpool.wait": 1}
    telemetry.shutdown()
