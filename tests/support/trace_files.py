"""Trace files as backends write them, for the report's tests: the OTLP JSON
of spans the SDK made (``write_collector_jsonl``, the Collector's file
exporter), and generated responses with known phase durations (``draw``,
``write_otlp``)."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

# -- spans the SDK made, as the Collector's file exporter writes them ------------


def otlp_dict(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The OTLP JSON of an export request, IDs in base64 (protobuf's JSON mapping)."""
    document: dict[str, Any] = MessageToDict(encode_spans(spans))
    return document


def ids_to_hex(document: dict[str, Any]) -> dict[str, Any]:
    """Hex IDs, as the Collector's file exporter writes them."""
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return document


def write_collector_jsonl(
    spans: Sequence[ReadableSpan], path: Path, *, batch: int = 5, reverse: bool = False
) -> Path:
    """One export request per line, ``batch`` spans each, so traces straddle lines."""
    lines = [
        json.dumps(ids_to_hex(otlp_dict(spans[i : i + batch]))) for i in range(0, len(spans), batch)
    ]
    if reverse:
        lines.reverse()
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- generated responses with known phase durations ------------------------------


START_NS = 1_800_000_000_000_000_000
PHASE_SPANS = {
    "stat": "fileresp.stat",
    "open": "fileresp.open",
    "threadpool.wait": "fileresp.threadpool.wait",
    "send": "fileresp.send",
}


@dataclass
class Response:
    framework: str
    status: int
    opened: bool
    #: phase -> duration (ns, whole microseconds so that Jaeger keeps them exact)
    phases: dict[str, int]
    resource: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, object] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        return sum(self.phases.values()) + 10_000


def draw(
    seed: int,
    count: int,
    *,
    send_scale: float = 1.0,
    framework: str = "aiohttp",
    status: int = 200,
    opened: bool = True,
    resource: dict[str, str] | None = None,
    attributes: dict[str, object] | None = None,
) -> list[Response]:
    """``count`` responses whose phase durations are log-normal around fixed medians."""
    rng = random.Random(seed)

    def us(median_us: float, scale: float = 1.0) -> int:
        return max(1, round(rng.lognormvariate(0, 0.25) * median_us * scale)) * 1000

    return [
        Response(
            framework,
            status,
            opened,
            {
                "stat": us(20),
                "open": us(15),
                "threadpool.wait": us(50),
                "send": us(400, send_scale),
            },
            dict(resource or {}),
            dict(attributes or {}),
        )
        for _ in range(count)
    ]


def _ids(index: int, phase_index: int | None = None) -> tuple[str, str]:
    trace_id = f"{index + 1:032x}"
    span_id = f"{(index + 1) * 16 + (0 if phase_index is None else phase_index + 1):016x}"
    return trace_id, span_id


def response_spans(responses: list[Response]) -> Iterator[tuple[Any, ...]]:
    """(response, name, trace, span, parent, start, end, attributes) of every span."""
    for index, response in enumerate(responses):
        trace_id, span_id = _ids(index)
        start = START_NS + index * 10_000_000_000
        attributes = {
            "fileresp.framework": response.framework,
            "http.response.status_code": response.status,
            "fileresp.opened": response.opened,
            "file.name": "app.js",
            **response.attributes,
        }
        yield (
            response,
            "fileresp.response",
            trace_id,
            span_id,
            None,
            start,
            start + (response.duration_ns),
            attributes,
        )
        at = start
        for phase_index, (phase, duration) in enumerate(response.phases.items()):
            if phase == "open" and not response.opened:
                continue
            _, child_id = _ids(index, phase_index)
            yield response, PHASE_SPANS[phase], trace_id, child_id, span_id, at, at + duration, {}
            at += duration


def _otlp_value(value: object) -> dict[str, object]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"stringValue": str(value)}


def write_otlp(path: Path, responses: list[Response]) -> Path:
    """Collector file exporter: one resourceSpans document per line, one per resource."""
    by_resource: dict[tuple[tuple[str, str], ...], list[dict[str, object]]] = {}
    for response, name, trace, span, parent, start, end, attributes in response_spans(responses):
        by_resource.setdefault(tuple(sorted(response.resource.items())), []).append(
            {
                "traceId": trace,
                "spanId": span,
                "parentSpanId": parent or "",
                "name": name,
                "kind": 1,
                "startTimeUnixNano": str(start),
                "endTimeUnixNano": str(end),
                "attributes": [{"key": k, "value": _otlp_value(v)} for k, v in attributes.items()],
            }
        )
    lines = []
    for resource, spans in by_resource.items():
        document = {
            "resourceSpans": [
                {
                    "resource": {
                        "attributes": [
                            {"key": k, "value": {"stringValue": v}}
                            for k, v in (("service.name", "shop"), *resource)
                        ]
                    },
                    "scopeSpans": [{"scope": {"name": "otel_fileresp"}, "spans": spans}],
                }
            ]
        }
        lines.append(json.dumps(document))
    path.write_text("\n".join(lines) + "\n")
    return path
