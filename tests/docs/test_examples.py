"""The example apps of examples/ really serve and really produce the contract.

- ``starlette_app`` and ``aiohttp_app`` are imported as a user would and
  served over loopback (uvicorn, aiohttp's AppRunner), instrumented with the
  test's in-memory providers: a 200 opens the file, a 304 does not.
- ``aiohttp_app.py --manual`` and ``starlette_app.py --manual`` run as
  subprocesses, setting up OpenTelemetry in code (``examples/otel_setup.py``),
  and export over real OTLP/HTTP to a receiver on loopback; the spans and the
  ``fileresp.opens`` counter arrive when the app is stopped.

The FastAPI example is tested in ``test_examples_fastapi.py`` (FastAPI is
installed only in the matrix session whose Starlette it supports).
"""

from __future__ import annotations

import importlib
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support.harness import Telemetry, instrumenting, serve_aiohttp, serve_asgi
from support.otlp_receiver import otlp_http_receiver
from support.processes import server_process

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = (EXAMPLES / "static" / "hello.txt").read_bytes()


def example(name: str) -> ModuleType:
    return importlib.import_module(name)


def check_200_then_304(server: Any, path: str, telemetry: Telemetry) -> None:
    """A 200 that opens the file, then a 304 (its ETag sent back) that does not."""
    first = server.request("GET", path)
    assert (first.status, first.body) == (200, HELLO)
    again = server.request("GET", path, {"If-None-Match": first.header("etag")})
    assert (again.status, again.body) == (304, b"")
    sent, not_modified = sorted(
        telemetry.wait_for("fileresp.response", 2),
        key=lambda span: span.attributes["http.response.status_code"],
    )
    assert sent.attributes["fileresp.opened"] is True
    assert sent.attributes["fileresp.outcome"] == "sent"
    assert sent.attributes["file.name"] == "hello.txt"
    assert not_modified.attributes["http.response.status_code"] == 304
    assert not_modified.attributes["fileresp.opened"] is False
    assert not_modified.attributes["fileresp.outcome"] == "not_modified"
    telemetry.clear()


def check_download(server: Any, telemetry: Telemetry) -> None:
    reply = server.request("GET", "/download/hello.txt")
    assert (reply.status, reply.body) == (200, HELLO)
    [span] = telemetry.wait_for("fileresp.response")
    assert span.attributes["fileresp.opened"] is True
    assert reply.header("content-disposition") == 'attachment; filename="hello.txt"'
    telemetry.clear()


def test_starlette_example(examples_path: None, telemetry: Telemetry) -> None:
    app = example("starlette_app").app
    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        check_200_then_304(server, "/static/hello.txt", telemetry)
        check_download(server, telemetry)


def test_aiohttp_example(examples_path: None, telemetry: Telemetry) -> None:
    make_app = example("aiohttp_app").make_app
    with instrumenting("aiohttp", telemetry), serve_aiohttp(make_app) as server:
        check_200_then_304(server, "/static/hello.txt", telemetry)
        check_200_then_304(server, "/download/hello.txt", telemetry)


@pytest.mark.parametrize(
    ("script", "stop_signal"),
    [("starlette_app.py", signal.SIGINT), ("aiohttp_app.py", signal.SIGTERM)],
)
def test_manual_setup_exports_over_otlp(
    tmp_path: Path, script: str, stop_signal: signal.Signals
) -> None:
    """``python APP --manual``: no opentelemetry-instrument, the app's own
    set-up exports the contract over OTLP/HTTP and flushes when stopped."""
    command = [sys.executable, script, "--manual", "--port", "{port}"]
    with (
        otlp_http_receiver() as receiver,
        server_process(
            tmp_path,
            command,
            receiver,
            stop_signal,
            env={"FILERESP_EXAMPLE_STATIC": str(EXAMPLES / "static")},
            cwd=EXAMPLES,
            auto=False,
            ready_path="/static/page.html",
        ) as server,
    ):
        first = server.request("GET", "/static/hello.txt")
        assert (first.status, first.body) == (200, HELLO)
        etag = first.header("etag")
        assert server.request("GET", "/static/hello.txt", {"If-None-Match": etag}).status == 304
    # Stopped: the providers were shut down, so everything was exported.
    responses = receiver.received.spans("fileresp.response")
    by_status = {s.attributes["http.response.status_code"]: s for s in responses}
    assert set(by_status) == {200, 304}  # the readiness probe's 200 included
    assert by_status[304].attributes["fileresp.opened"] is False
    assert by_status[200].attributes["fileresp.opened"] is True
    opens = receiver.received.latest_points("fileresp.opens")
    # 200s opened the file; the 304 series is there, at 0.
    assert {p.attributes["http.response.status_code"]: p.value > 0 for p in opens} == {
        200: True,
        304: False,
    }
    assert "Traceback" not in server.log(), server.log()
