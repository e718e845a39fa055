"""The contract survives OTLP: real exporters, real receivers, real servers.

The SDK's real OTLP exporters (``opentelemetry-exporter-otlp-proto-http`` and
``-grpc``) send traces and metrics to receivers the test runs on 127.0.0.1
(``tests/support/otlp_receiver.py``: protobuf decoded with ``opentelemetry-proto``)
after real requests over loopback to an instrumented Starlette app (behind
contrib's asgi middleware) and an instrumented aiohttp app (with contrib's
aiohttp-server instrumentation). What is asserted is what a collector would
receive:

- span names and kinds (``INTERNAL`` for ours), attribute names and OTLP
  value types (an int stays ``int_value``, a bool ``bool_value``, a duration
  ``double_value``);
- parent links: phase spans → ``fileresp.response`` → the SERVER span, all in
  one trace;
- the instrumentation scope: name ``otel_fileresp``, the package version and a
  semantic-conventions ``schema_url``;
- the three metrics, their kinds, units, attributes and counts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from apps import aiohttp_app, starlette_app
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from support.harness import Reply, serve_aiohttp, serve_asgi
from support.otlp_receiver import Received, ReceivedPoint, ReceivedSpan, Receiver, otlp_receiver

from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

BODY = b"0123456789abcdef" * 4096  # 64 KiB: several reads where the body is read in chunks
SCOPE = "otel_fileresp"
SCHEMA_URL = re.compile(r"^https://opentelemetry\.io/schemas/\d+\.\d+\.\d+$")
WAIT = 10.0

STRING, INT, BOOL, DOUBLE = "string_value", "int_value", "bool_value", "double_value"
RESPONSE_TYPES = {
    "fileresp.framework": STRING,
    "http.response.status_code": INT,
    "fileresp.outcome": STRING,
    "fileresp.opened": BOOL,
    "fileresp.transfer": STRING,
    "fileresp.bytes": INT,
    "fileresp.threadpool.jobs": INT,
    "fileresp.threadpool.wait": DOUBLE,
    "file.size": INT,
    "file.name": STRING,
}
SEND_TYPES = {
    "fileresp.transfer": STRING,
    "fileresp.bytes": INT,
    "fileresp.read.count": INT,
    "fileresp.threadpool.wait": DOUBLE,
    "fileresp.threadpool.wait.max": DOUBLE,
}


def _exporters(receiver: Receiver) -> tuple[SpanExporter, MetricExporter]:
    if receiver.transport == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return (
            GrpcSpanExporter(endpoint=receiver.traces_endpoint(), insecure=True, timeout=5),
            GrpcMetricExporter(endpoint=receiver.metrics_endpoint(), insecure=True, timeout=5),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=receiver.traces_endpoint(), timeout=5),
        OTLPMetricExporter(endpoint=receiver.metrics_endpoint(), timeout=5),
    )


@dataclass
class Wire:
    receiver: Receiver
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @property
    def received(self) -> Received:
        return self.receiver.received

    def collect(self, ready: Callable[[Received], bool]) -> Received:
        """Flush both providers until ``ready(received)`` holds (at most WAIT s).

        The client can read the last byte just before the server ends the
        span, so one flush right after the requests may be too early.
        """
        deadline = time.monotonic() + WAIT
        while True:
            assert self.tracer_provider.force_flush(int(WAIT * 1000))
            assert self.meter_provider.force_flush(int(WAIT * 1000))
            if ready(self.received) or time.monotonic() > deadline:
                return self.received
            time.sleep(0.05)


@pytest.fixture(params=["http/protobuf", "grpc"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Wire]:
    """SDK providers exporting over OTLP (``request.param``) to a loopback receiver."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with otlp_receiver(request.param) as receiver:
        span_exporter, metric_exporter = _exporters(receiver)
        resource = Resource.create({"service.name": "fileresp-wire-test"})
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(span_exporter, schedule_delay_millis=50)
        )
        reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=600_000)
        meter_provider = MeterProvider(
            metric_readers=[reader], resource=resource, shutdown_on_exit=False
        )
        try:
            yield Wire(receiver, tracer_provider, meter_provider)
        finally:
            tracer_provider.shutdown()
            meter_provider.shutdown()


@contextmanager
def _serve_starlette(wire: Wire, static_dir: Path, **settings: Any) -> Iterator[Any]:
    """The Starlette app behind contrib's asgi middleware, instrumented."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    instrumentor = StarletteFileResponseInstrumentor()
    instrumentor.instrument(
        tracer_provider=wire.tracer_provider, meter_provider=wire.meter_provider, **settings
    )
    try:
        app = OpenTelemetryMiddleware(
            starlette_app.build_app(static_dir),
            tracer_provider=wire.tracer_provider,
            meter_provider=wire.meter_provider,
        )
        with serve_asgi(app) as server:
            yield server
    finally:
        instrumentor.uninstrument()


@contextmanager
def _serve_aiohttp(wire: Wire, static_dir: Path, **settings: Any) -> Iterator[Any]:
    """The aiohttp app with contrib's aiohttp-server instrumentation, instrumented."""
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    server_instrumentor = AioHttpServerInstrumentor()
    server_instrumentor.instrument(
        tracer_provider=wire.tracer_provider, meter_provider=wire.meter_provider
    )
    instrumentor = AiohttpFileResponseInstrumentor()
    try:
        instrumentor.instrument(
            tracer_provider=wire.tracer_provider, meter_provider=wire.meter_provider, **settings
        )
        with serve_aiohttp(lambda: aiohttp_app.make_app(static_dir)) as server:
            yield server
    finally:
        instrumentor.uninstrument()
        server_instrumentor.uninstrument()


Serve = Callable[..., AbstractContextManager[Any]]
SERVERS: dict[str, tuple[Serve, str]] = {
    "starlette": (_serve_starlette, "opentelemetry.instrumentation.asgi"),
    "aiohttp": (_serve_aiohttp, "opentelemetry.instrumentation.aiohttp_server"),
}


def _serve_three(server: Any) -> list[Reply]:
    """A static 200, a static 304 (If-None-Match) and a 200 from a FileResponse route."""
    first = server.request("GET", "/static/hello.bin")
    etag = first.header("etag")
    assert etag, first.headers
    replies = [
        first,
        server.request("GET", "/static/hello.bin", {"If-None-Match": etag}),
        server.request("GET", "/file/hello.bin"),
    ]
    assert [(r.status, r.body == BODY) for r in replies] == [(200, True), (304, False), (200, True)]
    assert replies[1].body == b""
    return replies


def _ours(received: Received) -> list[ReceivedSpan]:
    return [s for s in received.spans() if s.scope.name == SCOPE]


def _check_scope(scope: Any) -> None:
    assert scope.name == SCOPE
    assert scope.version == metadata.version("otel-fileresp")
    assert SCHEMA_URL.match(scope.schema_url), scope.schema_url


def _three_responses(received: Received) -> bool:
    spans = received.spans()
    responses = [s for s in spans if s.name == "fileresp.response"]
    ids = {s.span_id for s in spans}
    # The responses, and the server spans they point to, have all arrived.
    return len(responses) >= 3 and all(s.parent_span_id in ids for s in responses)


def _metrics_arrived(received: Received) -> bool:
    durations = [p for p in received.latest_points("fileresp.duration") if p.scope.name == SCOPE]
    return sum(p.count or 0 for p in durations) >= 3


@pytest.mark.filterwarnings("ignore:Inheritance class _InstrumentedApplication")
@pytest.mark.parametrize("framework", list(SERVERS))
def test_contract_survives_otlp(wire: Wire, framework: str, tmp_path: Path) -> None:
    (tmp_path / "hello.bin").write_bytes(BODY)
    serve, server_scope = SERVERS[framework]
    with serve(wire, tmp_path) as server:
        _serve_three(server)
    received = wire.collect(lambda r: _three_responses(r) and _metrics_arrived(r))

    # What arrived, and how.
    signals = {signal for signal, _ in received.requests}
    assert {"traces", "metrics"} <= signals
    expected_detail = "grpc" if wire.receiver.transport == "grpc" else "application/x-protobuf"
    assert {detail for _, detail in received.requests} == {expected_detail}

    # Spans: names, kinds, scope, nesting.
    spans = received.spans()
    by_id = {s.span_id: s for s in spans}
    ours = _ours(received)
    assert {s.name for s in ours} <= {
        "fileresp.response",
        "fileresp.stat",
        "fileresp.precondition",
        "fileresp.open",
        "fileresp.threadpool.wait",
        "fileresp.send",
    }
    for span in ours:
        assert span.kind == "INTERNAL"
        _check_scope(span.scope)
    responses = [s for s in ours if s.name == "fileresp.response"]
    assert len(responses) == 3
    children: dict[str, list[ReceivedSpan]] = {r.span_id: [] for r in responses}
    for span in ours:
        if span.name != "fileresp.response":
            parent_id = span.parent_span_id or ""
            assert parent_id in children, f"{span.name} is not under a fileresp.response"
            children[parent_id].append(span)
            assert span.trace_id == by_id[parent_id].trace_id
    for response in responses:
        server_span = by_id[response.parent_span_id or ""]
        assert server_span.kind == "SERVER"
        assert server_span.scope.name == server_scope
        assert server_span.trace_id == response.trace_id
        assert len(children[response.span_id]) + 1 <= 8

    # Attribute names and OTLP value types.
    for response in responses:
        types = {k: response.attribute_types.get(k) for k in RESPONSE_TYPES}
        assert types == RESPONSE_TYPES
        assert response.attributes["fileresp.framework"] == framework
        assert response.attributes["file.name"] == "hello.bin"
        assert response.attributes["file.size"] == len(BODY)
        assert "file.path" not in response.attributes
        assert response.attributes["fileresp.threadpool.jobs"] >= 1
        assert response.attributes["fileresp.threadpool.wait"] >= 0.0
    sent = [r for r in responses if r.attributes["http.response.status_code"] == 200]
    (not_modified,) = [r for r in responses if r.attributes["http.response.status_code"] == 304]
    assert len(sent) == 2
    for response in sent:
        assert response.attributes["fileresp.opened"] is True
        assert response.attributes["fileresp.outcome"] == "sent"
        assert response.attributes["fileresp.bytes"] == len(BODY)
        names = {c.name for c in children[response.span_id]}
        assert {"fileresp.stat", "fileresp.open", "fileresp.send"} <= names
        (send,) = [c for c in children[response.span_id] if c.name == "fileresp.send"]
        assert {k: send.attribute_types.get(k) for k in SEND_TYPES} == SEND_TYPES
        assert send.attributes["fileresp.bytes"] == len(BODY)
    assert not_modified.attributes["fileresp.opened"] is False
    assert not_modified.attributes["fileresp.outcome"] == "not_modified"
    assert not_modified.attributes["fileresp.bytes"] == 0
    names = [c.name for c in children[not_modified.span_id]]
    assert "fileresp.open" not in names
    (precondition,) = [
        c for c in children[not_modified.span_id] if c.name == "fileresp.precondition"
    ]
    assert precondition.attributes == {
        "fileresp.precondition.result": "not_modified",
        "fileresp.precondition.header": "if-none-match",
    }
    assert precondition.attribute_types["fileresp.precondition.result"] == STRING
    for wait in (s for s in ours if s.name == "fileresp.threadpool.wait"):
        assert wait.attribute_types == {"fileresp.threadpool.job": STRING}
        assert wait.attributes["fileresp.threadpool.job"] in {
            "stat",
            "lookup",
            "open",
            "make_response",
        }

    # Metrics.
    def ours_latest(name: str) -> list[ReceivedPoint]:
        points = [p for p in received.latest_points(name) if p.scope.name == SCOPE]
        for point in points:
            _check_scope(point.scope)
        return points

    durations = ours_latest("fileresp.duration")
    assert {
        (
            p.attributes["http.response.status_code"],
            p.attributes["fileresp.outcome"],
            p.attributes["fileresp.opened"],
        ): p.count
        for p in durations
    } == {(200, "sent", True): 2, (304, "not_modified", False): 1}
    for point in durations:
        assert (point.kind, point.unit) == ("histogram", "s")
        assert point.attributes["fileresp.framework"] == framework
        assert point.attribute_types == {
            "fileresp.framework": STRING,
            "http.response.status_code": INT,
            "fileresp.outcome": STRING,
            "fileresp.opened": BOOL,
        }
        # Bucket advice for file work: tens of microseconds to seconds.
        assert point.bounds[0] <= 0.0001 and point.bounds[-1] >= 1.0

    phases = ours_latest("fileresp.phase.duration")
    # v2 default: the wait only, one point per response.
    assert {p.attributes["fileresp.phase"] for p in phases} == {"threadpool.wait"}
    for point in phases:
        assert (point.kind, point.unit) == ("histogram", "s")
        assert point.attributes["fileresp.framework"] == framework
        assert point.attribute_types == {"fileresp.framework": STRING, "fileresp.phase": STRING}
        assert point.count and point.total is not None and point.total >= 0.0

    opens = ours_latest("fileresp.opens")
    # The 304 series is reported from the app's start, at 0.
    assert {p.attributes["http.response.status_code"]: p.value for p in opens} == {200: 2, 304: 0}
    for point in opens:
        assert (point.kind, point.unit, point.monotonic) == ("sum", "{open}", True)
        assert point.value_type == "as_int"
        assert point.attributes["fileresp.framework"] == framework
        assert point.attribute_types == {
            "fileresp.framework": STRING,
            "http.response.status_code": INT,
        }


@pytest.mark.filterwarnings("ignore:Inheritance class _InstrumentedApplication")
@pytest.mark.parametrize("framework", list(SERVERS))
def test_phase_durations_as_attributes_survive_otlp(
    wire: Wire, framework: str, tmp_path: Path
) -> None:
    """``phase_spans=False``: one span per response, phase durations as doubles."""
    (tmp_path / "hello.bin").write_bytes(BODY)
    serve, _ = SERVERS[framework]
    with serve(wire, tmp_path, phase_spans=False) as server:
        _serve_three(server)
    received = wire.collect(_three_responses)
    ours = _ours(received)
    assert {s.name for s in ours} == {"fileresp.response"}
    sent = [s for s in ours if s.attributes["http.response.status_code"] == 200]
    assert len(sent) == 2
    for span in sent:
        durations = {k: v for k, v in span.attribute_types.items() if k.endswith(".duration")}
        assert {
            "fileresp.stat.duration",
            "fileresp.open.duration",
            "fileresp.send.duration",
        } <= set(durations)
        assert set(durations.values()) == {DOUBLE}
        assert all(span.attributes[k] >= 0.0 for k in durations)
