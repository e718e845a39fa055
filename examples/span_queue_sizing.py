"""How big the batch span processor's queue must be for a rate of file responses.

    python examples/span_queue_sizing.py [--seconds 2] [--rates 500,2000,10000]

Needs the test requirements (``pip install -r tests/requirements.txt -e .``,
Starlette and aiohttp). Everything runs on 127.0.0.1 and is bounded: each
run lasts ``--seconds`` and the whole script well under a minute.

1. **Spans per response**, counted: a Starlette ``StaticFiles`` app and an
   aiohttp ``web.static`` app, instrumented, answer a 200 (a 1 KB file, read
   by Python) and a 304, with ``OTEL_PYTHON_FILERESP_PHASE_SPANS`` true
   (default) and false. Only this package's spans: a server instrumentation
   adds its own (contrib's ASGI middleware: a server span and, unless
   excluded, one internal span per ASGI message).
2. **Drops at a rate**, measured: spans shaped like ``fileresp.*`` spans
   (same names, about 15 attributes) are made at ``rate x spans per
   response`` per second for ``--seconds`` by one thread, through the SDK's
   ``BatchSpanProcessor`` (``OTEL_BSP_*`` defaults unless set) and the
   OTLP/HTTP exporter to a loopback receiver in another process. Dropped =
   ended - exported. A real server also spends its CPU on serving, so this
   is the processor and exporter alone: a lower bound on what is needed.
3. **Export throughput**: 50,000 spans queued, then flushed: the spans per
   second one process's processor and OTLP/HTTP exporter deliver at best.

It prints a Markdown table. A rate the generator cannot reach on the machine
is reported with the rate reached.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# --- 1. spans per response --------------------------------------------------------


def _starlette_spans(static: Path, phase_spans: bool) -> dict[str, int]:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles
    from starlette.testclient import TestClient

    from otel_fileresp.starlette import StarletteFileResponseInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = StarletteFileResponseInstrumentor()
    instrumentor.instrument(tracer_provider=provider, phase_spans=phase_spans, metrics=False)
    try:
        app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(static)))])
        counts = {}
        with TestClient(app) as client:
            client.get("/static/small.txt")  # StaticFiles' one-time directory check
            exporter.clear()
            etag = client.get("/static/small.txt").headers["etag"]
            counts["200"] = len(exporter.get_finished_spans())
            exporter.clear()
            client.get("/static/small.txt", headers={"if-none-match": etag})
            counts["304"] = len(exporter.get_finished_spans())
        return counts
    finally:
        instrumentor.uninstrument()


def _aiohttp_spans(static: Path, phase_spans: bool) -> dict[str, int]:
    import aiohttp
    from aiohttp import web

    from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = AiohttpFileResponseInstrumentor()
    instrumentor.instrument(tracer_provider=provider, phase_spans=phase_spans, metrics=False)

    async def run() -> dict[str, int]:
        app = web.Application()
        app.router.add_routes([web.static("/static", static)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/static/small.txt"
        counts = {}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as reply:
                    etag = reply.headers["etag"]
                    await reply.read()
                await asyncio.sleep(0.05)
                counts["200"] = len(exporter.get_finished_spans())
                exporter.clear()
                async with session.get(url, headers={"if-none-match": etag}) as reply:
                    await reply.read()
                await asyncio.sleep(0.05)
                counts["304"] = len(exporter.get_finished_spans())
        finally:
            await runner.cleanup()
        return counts

    try:
        return asyncio.run(run())
    finally:
        instrumentor.uninstrument()


# --- 2. drops at a rate -----------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_sink(port: int) -> None:
    HTTPServer(("127.0.0.1", port), _Sink).serve_forever()


class _Counting(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


_NAMES = (
    "fileresp.response",
    "fileresp.stat",
    "fileresp.precondition",
    "fileresp.open",
    "fileresp.threadpool.wait",
    "fileresp.threadpool.wait",
    "fileresp.send",
)
_ATTRIBUTES = {
    "fileresp.framework": "starlette",
    "http.response.status_code": 200,
    "fileresp.outcome": "sent",
    "fileresp.opened": True,
    "fileresp.transfer": "read",
    "fileresp.bytes": 1024,
    "file.name": "small.txt",
    "file.size": 1024,
    "fileresp.threadpool.wait": 0.0001,
    "fileresp.threadpool.jobs": 4,
    "fileresp.read.count": 1,
    "fileresp.precondition.result": "none",
    "fileresp.phase_spans": True,
    "http.request.method": "GET",
    "fileresp.head": False,
}


def _drops(
    endpoint: str, responses_per_s: int, spans_per_response: int, queue: int, seconds: float
) -> tuple[int, int, float]:
    """(ended, dropped, responses/s reached)."""
    exporter = _Counting(OTLPSpanExporter(endpoint=endpoint, timeout=5))
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=queue))
    tracer = provider.get_tracer("sizing")
    ended = 0
    start = time.perf_counter()
    deadline = start + seconds
    step = 1.0 / responses_per_s
    next_at = start
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        if now < next_at:
            time.sleep(min(next_at - now, 0.001))
            continue
        with tracer.start_as_current_span(_NAMES[0], attributes=_ATTRIBUTES):
            for name in _NAMES[1:spans_per_response]:
                with tracer.start_as_current_span(name, attributes={"fileresp.phase": name}):
                    pass
        ended += spans_per_response
        next_at += step
    took = time.perf_counter() - start
    provider.force_flush(30_000)
    provider.shutdown()
    return ended, ended - exporter.exported, ended / spans_per_response / took


def _throughput(endpoint: str, spans: int) -> float:
    """Spans/s the processor and exporter deliver from a full queue (no producer)."""
    exporter = _Counting(OTLPSpanExporter(endpoint=endpoint, timeout=5))
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_queue_size=spans, schedule_delay_millis=600_000)
    )
    tracer = provider.get_tracer("sizing")
    for _ in range(spans):
        with tracer.start_as_current_span(_NAMES[0], attributes=_ATTRIBUTES):
            pass
    start = time.perf_counter()
    provider.force_flush(60_000)
    took = time.perf_counter() - start
    provider.shutdown()
    return exporter.exported / took


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rates", default="500,2000,10000")
    parser.add_argument("--queues", default="2048,8192,32768")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    queues = [int(q) for q in args.queues.split(",")]

    with tempfile.TemporaryDirectory() as directory:
        static = Path(directory)
        (static / "small.txt").write_bytes(os.urandom(1024))
        print("| framework | PHASE_SPANS | spans for a 200 | spans for a 304 |")
        print("|---|---|---|---|")
        for name, count in (("starlette", _starlette_spans), ("aiohttp", _aiohttp_spans)):
            for phase_spans in (True, False):
                counts = count(static, phase_spans)
                print(
                    f"| {name} | {str(phase_spans).lower()} | {counts['200']} | {counts['304']} |"
                )

    port = _free_port()
    sink = multiprocessing.Process(target=_serve_sink, args=(port,), daemon=True)
    sink.start()
    try:
        endpoint = f"http://127.0.0.1:{port}/v1/traces"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        print()
        best = _throughput(endpoint, 50_000)
        print(f"export throughput, full queue, no producer: {best:.0f} spans/s")
        print()
        print("| responses/s asked (reached) | spans/response | queue | spans ended | dropped |")
        print("|---|---|---|---|---|")
        for spans_per_response in (len(_NAMES), 1):
            for rate in rates:
                for queue in queues:
                    ended, dropped, reached = _drops(
                        endpoint, rate, spans_per_response, queue, args.seconds
                    )
                    print(
                        f"| {rate} ({reached:.0f}) | {spans_per_response} | {queue} "
                        f"| {ended} | {dropped} ({100 * dropped / max(ended, 1):.1f} %) |",
                        flush=True,
                    )
    finally:
        sink.terminate()
        sink.join(5)


if __name__ == "__main__":
    main()
