"""OTLP receivers on loopback, for tests that check what really goes over the wire.

Two small receivers stand in for an OpenTelemetry Collector:

- :func:`otlp_http_receiver`: OTLP/HTTP with protobuf bodies (``POST
  /v1/traces``, ``/v1/metrics``, ``/v1/logs``), a ``http.server`` in a thread;
- :func:`otlp_grpc_receiver`: OTLP/gRPC, a ``grpc.server`` implementing the
  trace and metrics services generated in ``opentelemetry-proto``.

Both decode the export requests with ``opentelemetry-proto`` and keep what they
received as flat :class:`ReceivedSpan` and :class:`ReceivedPoint` values.
Attribute values keep their OTLP type: ``attribute_types`` maps each key to
the ``AnyValue`` field that carried it (``int_value``, ``bool_value``,
``double_value``, ``string_value``, ...), so a test can tell an int from a
bool or a double after the trip. Both bind 127.0.0.1 on a free port and stop
within a bounded time.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

STOP_TIMEOUT = 5.0


def any_value(value: common_pb2.AnyValue) -> tuple[Any, str]:
    """The Python value of an OTLP ``AnyValue`` and the name of the field that held it."""
    kind = value.WhichOneof("value") or "empty"
    if kind == "array_value":
        return [any_value(v)[0] for v in value.array_value.values], kind
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value)[0] for kv in value.kvlist_value.values}, kind
    if kind == "empty":
        return None, kind
    return getattr(value, kind), kind


def key_values(pairs: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Attributes as ``{key: value}`` and ``{key: AnyValue field}``."""
    values: dict[str, Any] = {}
    types: dict[str, str] = {}
    for pair in pairs:
        values[pair.key], types[pair.key] = any_value(pair.value)
    return values, types


@dataclass(frozen=True)
class Scope:
    name: str
    version: str
    schema_url: str


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: str  # "INTERNAL", "SERVER", ... (OTLP SpanKind without its prefix)
    trace_id: str
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int
    status: str  # "UNSET", "OK", "ERROR"
    attributes: dict[str, Any]
    attribute_types: dict[str, str]
    scope: Scope
    resource: dict[str, Any]

    @property
    def pid(self) -> Any:
        return self.resource.get("process.pid")


@dataclass(frozen=True)
class ReceivedPoint:
    metric: str
    unit: str
    description: str
    kind: str  # "histogram", "sum", "gauge", ...
    monotonic: bool | None
    temporality: str | None
    attributes: dict[str, Any]
    attribute_types: dict[str, str]
    start_ns: int
    time_ns: int
    # sum / gauge
    value: int | float | None
    value_type: str | None  # "as_int" or "as_double"
    # histogram
    count: int | None
    total: float | None
    bounds: tuple[float, ...]
    scope: Scope
    resource: dict[str, Any]


_SPAN_KINDS = {v: k.removeprefix("SPAN_KIND_") for k, v in trace_pb2.Span.SpanKind.items()}
_STATUS_CODES = {v: k.removeprefix("STATUS_CODE_") for k, v in trace_pb2.Status.StatusCode.items()}
_TEMPORALITIES = {0: "UNSPECIFIED", 1: "DELTA", 2: "CUMULATIVE"}


def decode_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource, _ = key_values(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = Scope(scope_spans.scope.name, scope_spans.scope.version, scope_spans.schema_url)
            for span in scope_spans.spans:
                attributes, types = key_values(span.attributes)
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=_SPAN_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status=_STATUS_CODES.get(span.status.code, str(span.status.code)),
                        attributes=attributes,
                        attribute_types=types,
                        scope=scope,
                        resource=resource,
                    )
                )
    return spans


def decode_points(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[ReceivedPoint]:
    points: list[ReceivedPoint] = []
    for resource_metrics in request.resource_metrics:
        resource, _ = key_values(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = Scope(
                scope_metrics.scope.name, scope_metrics.scope.version, scope_metrics.schema_url
            )
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                data: Any = getattr(metric, kind)
                for point in data.data_points:
                    attributes, types = key_values(point.attributes)
                    is_histogram = kind == "histogram"
                    value_type = None if is_histogram else point.WhichOneof("value")
                    points.append(
                        ReceivedPoint(
                            metric=metric.name,
                            unit=metric.unit,
                            description=metric.description,
                            kind=kind,
                            monotonic=data.is_monotonic if kind == "sum" else None,
                            temporality=_TEMPORALITIES.get(
                                getattr(data, "aggregation_temporality", 0)
                            ),
                            attributes=attributes,
                            attribute_types=types,
                            start_ns=point.start_time_unix_nano,
                            time_ns=point.time_unix_nano,
                            value=getattr(point, value_type) if value_type else None,
                            value_type=value_type,
                            count=point.count if is_histogram else None,
                            total=point.sum if is_histogram else None,
                            bounds=tuple(point.explicit_bounds) if is_histogram else (),
                            scope=scope,
                            resource=resource,
                        )
                    )
    return points


@dataclass
class Received:
    """Everything a receiver decoded, safe to read while exports keep arriving."""

    _spans: list[ReceivedSpan] = field(default_factory=list)
    _points: list[ReceivedPoint] = field(default_factory=list)
    # (signal, transport detail) per export request, e.g. ("traces", "application/x-protobuf").
    requests: list[tuple[str, str]] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def add(
        self,
        signal: str,
        detail: str,
        spans: Sequence[ReceivedSpan] = (),
        points: Sequence[ReceivedPoint] = (),
    ) -> None:
        with self._changed:
            self.requests.append((signal, detail))
            self._spans.extend(spans)
            self._points.extend(points)
            self._changed.notify_all()

    def spans(self, name: str | None = None) -> list[ReceivedSpan]:
        with self._changed:
            return [s for s in self._spans if name is None or s.name == name]

    def points(self, metric: str | None = None) -> list[ReceivedPoint]:
        """Every data point received, in arrival order (cumulative exports repeat)."""
        with self._changed:
            return [p for p in self._points if metric is None or p.metric == metric]

    def latest_points(self, metric: str) -> list[ReceivedPoint]:
        """The last point of each series (resource + attributes) of ``metric``."""
        latest: dict[tuple[Any, ...], ReceivedPoint] = {}
        for point in self.points(metric):
            key = (
                tuple(sorted((k, repr(v)) for k, v in point.resource.items())),
                tuple(sorted((k, repr(v)) for k, v in point.attributes.items())),
            )
            latest[key] = point
        return list(latest.values())

    def wait_until(self, predicate: Callable[[Received], bool], timeout: float = 10.0) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate(self)`` holds; whether it did."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if predicate(self):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.2))


@dataclass
class Receiver:
    """A running receiver: where to send, and what arrived."""

    transport: str  # "http/protobuf" or "grpc"
    endpoint: str  # base URL: http://127.0.0.1:PORT
    port: int
    received: Received

    def traces_endpoint(self) -> str:
        """The endpoint the trace exporter of this transport is configured with."""
        return f"{self.endpoint}/v1/traces" if self.transport == "http/protobuf" else self.endpoint

    def metrics_endpoint(self) -> str:
        return f"{self.endpoint}/v1/metrics" if self.transport == "http/protobuf" else self.endpoint


def _http_handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            content_type = self.headers.get("Content-Type") or ""
            reply: Any
            try:
                if self.path == "/v1/traces":
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    received.add("traces", content_type, spans=decode_spans(request))
                    reply = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/metrics":
                    request_m = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    received.add("metrics", content_type, points=decode_points(request_m))
                    reply = metrics_service_pb2.ExportMetricsServiceResponse()
                elif self.path == "/v1/logs":
                    received.add("logs", content_type)
                    reply = logs_service_pb2.ExportLogsServiceResponse()
                else:
                    self._reply(404, b"")
                    return
            except Exception:
                received.add("undecodable", f"{self.path} {content_type}")
                self._reply(400, b"")
                return
            self._reply(200, reply.SerializeToString())

        def _reply(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def otlp_http_receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP (protobuf) receiver on 127.0.0.1."""
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(received))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    port = server.server_address[1]
    try:
        yield Receiver("http/protobuf", f"http://127.0.0.1:{port}", port, received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(STOP_TIMEOUT)


@contextmanager
def otlp_grpc_receiver() -> Iterator[Receiver]:
    """An OTLP/gRPC receiver (trace and metrics services) on 127.0.0.1."""
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    received = Received()

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.add("traces", "grpc", spans=decode_spans(request))
            return trace_service_pb2.ExportTraceServiceResponse()

    class MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:
            received.add("metrics", "grpc", points=decode_points(request))
            return metrics_service_pb2.ExportMetricsServiceResponse()

    executor = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(executor)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Receiver("grpc", f"http://127.0.0.1:{port}", port, received)
    finally:
        server.stop(grace=None).wait(STOP_TIMEOUT)
        executor.shutdown(wait=False, cancel_futures=True)


@contextmanager
def otlp_receiver(transport: str) -> Iterator[Receiver]:
    """The receiver for ``transport``: ``"http/protobuf"`` or ``"grpc"``."""
    if transport == "grpc":
        with otlp_grpc_receiver() as receiver:
            yield receiver
    elif transport == "http/protobuf":
        with otlp_http_receiver() as receiver:
            yield receiver
    else:
        raise ValueError(f"unknown OTLP transport {transport!r}")
