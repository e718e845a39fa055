"""``otel-fileresp report`` over traces the package itself produced: a real
Starlette app over loopback, exported spans serialised with the real OTLP JSON
encoding (collector file-exporter lines), then summarised and checked; and the
README Quickstart's own ``spans.json``: ``opentelemetry-instrument uvicorn``
with ``OTEL_TRACES_EXPORTER=console``, standard output to the file, uvicorn's
access log lines mixed in with the spans."""

from __future__ import annotations

import http.client
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from support.apps import EagerStaticFiles
from support.harness import Telemetry, serve_asgi
from support.processes import free_port
from support.trace_files import write_collector_jsonl

from otel_fileresp import StarletteFileResponseInstrumentor
from otel_fileresp.report import summarize
from otel_fileresp.report.cli import main


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


# --- the README Quickstart's spans.json ------------------------------------------

QUICKSTART_APP = """\
import os
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

app = Starlette(routes=[Mount("/static", StaticFiles(directory=os.environ["STATIC_DIR"]))])
"""
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
ROUNDS = 3


def _get(port: int, headers: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/static/small.txt", headers=dict(headers or {}))
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("etag")
    finally:
        connection.close()


def _wait_for(server: subprocess.Popen[bytes], condition: Any, what: str, timeout: float) -> Any:
    """The first true value of ``condition()``, polled while the server runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if result := condition():
                return result
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"no {what} (server exit status {server.poll()})")


def _wait_for_response_spans(server: subprocess.Popen[bytes], path: Path, count: int) -> None:
    def exported() -> bool:
        return path.read_text().count('"name": "fileresp.response"') == count

    _wait_for(server, exported, f"{count} fileresp.response spans", STOP_TIMEOUT)


def quickstart_spans_json(tmp_path: Path, files: Path, env: Mapping[str, str] = {}) -> Path:
    """Run the Quickstart's server, 200 then 304 ``ROUNDS`` times, stop it; its spans.json.

    ``opentelemetry-instrument uvicorn app:app > spans.json 2> server.log``, on
    127.0.0.1, stopped with SIGINT so the SDK flushes at exit. Each round
    waits for its spans, so the console exporter's span objects and
    uvicorn's access log lines alternate in the file.
    """
    (tmp_path / "app.py").write_text(QUICKSTART_APP)
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.pop("PYTHONPATH", None)
    environ.update(
        STATIC_DIR=str(files),
        OTEL_SERVICE_NAME="quickstart",
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="50",
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
        **env,
    )
    bin_dir = Path(sys.executable).parent
    launcher, uvicorn = str(bin_dir / "opentelemetry-instrument"), str(bin_dir / "uvicorn")
    command = [launcher, uvicorn, "app:app", "--host", "127.0.0.1", "--port", str(port)]
    spans_json = tmp_path / "spans.json"
    with spans_json.open("wb") as out, (tmp_path / "server.log").open("wb") as err:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # its own process group, killed whole if it hangs
        )
    try:
        for done in range(ROUNDS):
            status, etag = _wait_for(server, lambda: _get(port), "answer", START_TIMEOUT)
            assert status == 200
            assert _get(port, {"If-None-Match": str(etag)})[0] == 304
            if not env:
                _wait_for_response_spans(server, spans_json, 2 * (done + 1))
        server.send_signal(signal.SIGINT)
        assert server.wait(STOP_TIMEOUT) == 0, (tmp_path / "server.log").read_text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(STOP_TIMEOUT)
    return spans_json


def test_check_passes_on_the_quickstart_spans_json(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = quickstart_spans_json(tmp_path, files)
    lines = path.read_text().splitlines()
    log_lines = [line for line in lines if line.startswith("INFO:")]
    assert len(log_lines) == 2 * ROUNDS, lines
    assert lines.index(log_lines[-1]) > lines.index("{")  # logs and spans interleave

    report = summarize([path])

    assert report.ignored_lines == len(log_lines)
    assert report.response_count == 2 * ROUNDS
    assert report.opens_by_status() == {"starlette": {200: ROUNDS}}
    assert report.status_counts["starlette"][304].responses == ROUNDS
    assert report.unresolved_phase_spans == 0
    for phase in ("stat", "precondition", "open", "threadpool.wait", "send"):
        spans = path.read_text().count(f'"name": "fileresp.{phase}"')
        assert report.durations["starlette"][phase].count == spans > 0
    assert main(["report", "--check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"Ignored {len(log_lines)} lines that are not JSON" in out
    assert out.endswith("Check passed: no response with status 304 opened the file.\n")


def test_check_fails_when_the_quickstart_records_no_file_response(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The instrumentation is off: spans.json holds only log lines, and --check exits 3."""
    path = quickstart_spans_json(
        tmp_path, files, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "fileresp_starlette"}
    )

    assert main(["report", "--check", str(path)]) == 3

    out = capsys.readouterr().out
    assert f"Ignored {2 * ROUNDS} lines that are not JSON" in out
    assert "Check FAILED: no file responses" in out
