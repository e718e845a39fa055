"""How fast ``otel-fileresp report`` reads a large trace file.

    python benchmarks/report_large_file.py                     # ~40 MB, ~90 000 spans
    python benchmarks/report_large_file.py --shape jaeger      # one Jaeger document
    python benchmarks/report_large_file.py --package-root DIR  # another checkout's code

The file is generated once (deterministic, in a temporary directory unless
``--file`` names one; an existing ``--file`` is read as it is): file
responses of both frameworks, each with its server span and phase spans, as
the Collector's ``file`` exporter writes them
(OTLP JSON, one export request of 512 spans per line, hex IDs), or as one
Jaeger query-API document (``--shape jaeger``). Then ``summarize()`` reads it
``--runs`` times in this process; the best and median wall times and the
peak of Python allocations (one extra run under tracemalloc) are printed.

To compare with older code, extract its package and point at it::

    git archive main otel_fileresp | tar -x -C /tmp/report-main
    python benchmarks/report_large_file.py --package-root /tmp/report-main
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESPONSES = 13_000  # 7 spans per response on average: ~90 000 spans, ~40 MB
BATCH_SPANS = 512  # the SDK's BatchSpanProcessor export size
T0_NS = 1_700_000_000_000_000_000


def _otlp_attribute(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def _spans(rng: random.Random) -> Iterator[dict[str, Any]]:
    """OTLP JSON spans of the responses, children before parents as exporters write them."""
    clock = T0_NS
    for number in range(RESPONSES):
        trace_id = f"{rng.getrandbits(128):032x}"
        server_id, response_id = f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}"
        framework = ("starlette", "aiohttp")[number % 2]
        not_modified = number % 3 == 1
        phases = ["threadpool.wait", "stat", "precondition"]
        if not not_modified:
            phases += ["threadpool.wait", "open", "send"]
        at = clock
        for phase in phases:
            duration = rng.randint(2_000, 400_000)
            span_id = f"{rng.getrandbits(64):016x}"
            yield _span(trace_id, span_id, response_id, f"fileresp.{phase}", at, at + duration, [])
            at += duration
        status = 304 if not_modified else 200
        attributes = [
            _otlp_attribute(key, value)
            for key, value in {
                "fileresp.framework": framework,
                "http.response.status_code": status,
                "fileresp.outcome": "not_modified" if not_modified else "sent",
                "fileresp.opened": not not_modified,
                "fileresp.transfer": "none" if not_modified else "sendfile",
                "fileresp.bytes": 0 if not_modified else 40_960,
                "file.name": f"asset{number % 50}.js",
            }.items()
        ]
        yield _span(trace_id, response_id, server_id, "fileresp.response", clock, at, attributes)
        server_attributes = [_otlp_attribute(k, v) for k, v in _server_attributes(number, status)]
        yield _span(trace_id, server_id, None, "GET /static", clock, at + 5_000, server_attributes)
        clock = at + 1_000_000


def _server_attributes(number: int, status: int) -> list[tuple[str, object]]:
    """What an HTTP server instrumentation records on its span."""
    return [
        ("http.request.method", "GET"),
        ("url.scheme", "http"),
        ("url.path", f"/static/asset{number % 50}.js"),
        ("http.route", "/static"),
        ("server.address", "127.0.0.1"),
        ("server.port", 8000),
        ("network.protocol.version", "1.1"),
        ("user_agent.original", "python-urllib3/2.2.3"),
        ("client.address", "127.0.0.1"),
        ("client.port", 50_000 + number % 10_000),
        ("http.response.status_code", status),
    ]


def _span(
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    start: int,
    end: int,
    attributes: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent_id or "",
        "flags": 257,
        "name": name,
        "kind": 2 if parent_id is None else 1,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "attributes": attributes,
        "status": {},
    }


def _resource() -> dict[str, Any]:
    return {"attributes": [_otlp_attribute("service.name", "report-benchmark")]}


def write_collector_file(path: Path) -> int:
    """Collector ``file`` exporter lines; returns the number of spans."""
    spans = list(_spans(random.Random(14)))
    with path.open("w") as out:
        for start in range(0, len(spans), BATCH_SPANS):
            scope = {
                "scope": {"name": "otel_fileresp"},
                "spans": spans[start : start + BATCH_SPANS],
            }
            request = {"resourceSpans": [{"resource": _resource(), "scopeSpans": [scope]}]}
            out.write(json.dumps(request, separators=(",", ":")) + "\n")
    return len(spans)


def write_jaeger_file(path: Path) -> int:
    """One Jaeger query-API document (``{"data": [trace, ...]}``); returns the number of spans."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in _spans(random.Random(14)):
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        references = []
        if span["parentSpanId"]:
            parent = {
                "refType": "CHILD_OF",
                "traceID": span["traceId"],
                "spanID": span["parentSpanId"],
            }
            references.append(parent)
        tags = [
            {"key": a["key"], "type": "string", "value": next(iter(a["value"].values()))}
            for a in span["attributes"]
        ]
        traces.setdefault(span["traceId"], []).append(
            {
                "traceID": span["traceId"],
                "spanID": span["spanId"],
                "operationName": span["name"],
                "references": references,
                "startTime": start // 1000,
                "duration": (end - start) // 1000,
                "tags": tags,
                "logs": [],
                "processID": "p1",
                "warnings": None,
            }
        )
    data = [
        {"traceID": trace_id, "spans": spans, "processes": {"p1": {"serviceName": "bench"}}}
        for trace_id, spans in traces.items()
    ]
    path.write_text(json.dumps({"data": data, "total": 0, "limit": 0, "errors": None}))
    return sum(len(spans) for spans in traces.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("collector", "jaeger"), default="collector")
    parser.add_argument(
        "--file", type=Path, help="where to write the generated file (kept; reused if it exists)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--package-root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="directory holding the otel_fileresp package to time (default: this checkout)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(args.package_root))
    from otel_fileresp.report import summarize

    with tempfile.TemporaryDirectory() as scratch:
        path = args.file or Path(scratch) / f"traces-{args.shape}.json"
        if not path.exists():
            write = write_collector_file if args.shape == "collector" else write_jaeger_file
            print(f"generated {write(path)} spans")
        size_mb = path.stat().st_size / 1e6
        print(f"{path}: {size_mb:.1f} MB ({args.shape})")
        print(f"package: {Path(sys.modules['otel_fileresp'].__file__ or '').parent}")
        times, cpu_times = [], []
        for _ in range(args.runs):
            started, cpu_started = time.perf_counter(), time.process_time()
            report = summarize([path])
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
        tracemalloc.start()
        summarize([path])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"fileresp spans: {report.span_count}, of which responses: {report.response_count}")
        print(
            f"summarize: best {min(times):.3f} s, median {statistics.median(times):.3f} s"
            f" over {args.runs} runs ({size_mb / min(times):.0f} MB/s);"
            f" CPU time best {min(cpu_times):.3f} s; peak Python allocations {peak / 1e6:.1f} MB"
        )


if __name__ == "__main__":
    main()
