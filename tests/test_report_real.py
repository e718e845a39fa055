"""``otel-fileresp report`` over traces the package itself produced: a real
Starlette app over loopback, exported spans serialised with the real OTLP JSON
encoding (collector file-exporter lines), then summarised and checked."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
from harness import Telemetry, serve_asgi
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from test_report_cli import write_collector_jsonl

from otel_fileresp import StarletteFileResponseInstrumentor
from otel_fileresp.report import summarize
from otel_fileresp.report.cli import main


class EagerStaticFiles(StaticFiles):
    """A regression on purpose: opens the file before knowing it is a 304."""

    async def get_response(self, path: str, scope: Any) -> Any:
        response = await super().get_response(path, scope)
        if response.status_code == 304:
            file = await anyio.open_file(Path(str(self.directory), path), "rb")
            await file.aclose()
        return response


def produce_traces(files: Path, telemetry: Telemetry, static: type[StaticFiles]) -> int:
    app = Starlette(routes=[Mount("/static", static(directory=str(files)))])
    StarletteFileResponseInstrumentor().instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    try:
        with serve_asgi(app) as server:
            etag = server.request("GET", "/static/small.txt").header("etag")
            for _ in range(10):
                assert server.request("GET", "/static/small.txt").status == 200
                assert (
                    server.request("GET", "/static/small.txt", {"If-None-Match": etag}).status
                    == 304
                )
                assert server.request("HEAD", "/static/large.bin").status == 200
            telemetry.wait_for("fileresp.response", 31)
    finally:
        StarletteFileResponseInstrumentor().uninstrument()
    return 31


def nearest_rank(values: list[int], p: int) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def test_report_of_real_traces(files: Path, telemetry: Telemetry, tmp_path: Path, capsys) -> None:
    count = produce_traces(files, telemetry, StaticFiles)
    spans = telemetry.spans()
    path = write_collector_jsonl(spans, tmp_path / "traces.jsonl")

    report = summarize([str(path)])
    assert report.response_count == count
    assert report.not_modified_opened_count == 0
    assert report.unresolved_phase_spans == 0
    assert report.opens_by_status() == {"starlette": {200: 11}}
    for phase in ("response", "stat", "precondition", "open", "threadpool.wait", "send"):
        name = "fileresp." + phase
        durations = [s.end_time - s.start_time for s in spans if s.name == name]
        stats = report.durations["starlette"][phase]
        assert stats.count == len(durations)
        assert stats.p50_ns == nearest_rank(durations, 50)
        assert stats.p95_ns == nearest_rank(durations, 95)
        assert stats.p99_ns == nearest_rank(durations, 99)
        assert stats.max_ns == max(durations)

    assert main(["report", "--check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "starlette" in out and "threadpool.wait" in out


def test_check_fails_on_a_304_that_opened(
    files: Path, telemetry: Telemetry, tmp_path: Path, capsys
) -> None:
    produce_traces(files, telemetry, EagerStaticFiles)
    path = write_collector_jsonl(telemetry.spans(), tmp_path / "traces.jsonl")
    assert summarize([str(path)]).not_modified_opened_count == 10
    assert main(["report", "--check", str(path)]) == 1
    listing = capsys.readouterr()
    assert "small.txt" in listing.out + listing.err
