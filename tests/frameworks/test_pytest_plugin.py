"""The pytest plugin, run on sample users' suites with pytester.

The sample suites are what a user writes: Starlette apps tested with
Starlette's ``TestClient``, aiohttp apps with aiohttp's test server and
client, both over the real frameworks.
"""

from __future__ import annotations

import re
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from support.harness import serve_asgi

from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor
from otel_fileresp.pytest_plugin import recording

pytest_plugins = ["pytester"]

TRACE_ID = r"[0-9a-f]{32}"


def plugin_args() -> list[str]:
    """Load the plugin by module unless it is installed as the pytest11 entry point."""
    installed = entry_points(group="pytest11", name="otel_fileresp")
    return [] if installed else ["-p", "otel_fileresp.pytest_plugin"]


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", "-v", *args)


PASSING_SUITE = """
import asyncio
import re

from aiohttp import web
from aiohttp.test_utils import TestClient as AiohttpClient, TestServer
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient


def make_files(tmp_path):
    (tmp_path / "app.js").write_text("console.log('hi')\\n")
    return tmp_path


def test_starlette_304_does_not_open(fileresp_recorder, tmp_path):
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=make_files(tmp_path)))])
    with TestClient(app) as client:
        first = client.get("/static/app.js")
        again = client.get("/static/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert (first.status_code, again.status_code) == (200, 304)

    fileresp_recorder.assert_not_opened(status=304)
    fileresp_recorder.assert_not_opened(lambda r: r.outcome == "not_modified")
    sent, not_modified = fileresp_recorder.responses
    assert fileresp_recorder.frameworks == ["aiohttp", "starlette"]
    assert (sent.framework, sent.status, sent.outcome, sent.opened) == (
        "starlette", 200, "sent", True
    )
    assert (not_modified.status, not_modified.outcome, not_modified.opened) == (
        304, "not_modified", False
    )
    assert sent.file_name == not_modified.file_name == "app.js"
    assert set(sent.phases) == {"stat", "precondition", "open", "send", "threadpool.wait"}
    assert set(not_modified.phases) == {"stat", "precondition", "threadpool.wait"}
    assert all(isinstance(v, float) and v >= 0 for v in sent.phases.values())
    assert sent.duration >= sent.phases["open"]
    assert re.fullmatch("[0-9a-f]{32}", sent.trace_id)
    assert sent.trace_id != not_modified.trace_id
    assert sent.method is None and sent.path is None
    # the metrics were recorded by the recorder's meter provider too
    opens = fileresp_recorder.metric_points("fileresp.opens")
    counted = {
        (p.attributes["fileresp.framework"], p.attributes["http.response.status_code"]): p.value
        for p in opens
    }
    # The 304 series of each instrumented framework is there from the start, at 0.
    assert counted == {("starlette", 200): 1, ("starlette", 304): 0, ("aiohttp", 304): 0}


def test_aiohttp_304_and_412_do_not_open(fileresp_recorder, tmp_path):
    files = make_files(tmp_path)

    async def scenario():
        app = web.Application()
        app.router.add_static("/static", files)
        async with AiohttpClient(TestServer(app)) as client:
            first = await client.get("/static/app.js")
            await first.read()
            etag = first.headers["ETag"]
            again = await client.get("/static/app.js", headers={"If-None-Match": etag})
            failed = await client.get("/static/app.js", headers={"If-Match": '"other"'})
            return first.status, again.status, failed.status

    assert asyncio.run(scenario()) == (200, 304, 412)
    responses = fileresp_recorder.wait_for(3)
    fileresp_recorder.assert_not_opened(status=304)
    fileresp_recorder.assert_not_opened(status=412, framework="aiohttp")
    assert sorted((r.status, r.outcome, r.opened) for r in responses) == [
        (200, "sent", True),
        (304, "not_modified", False),
        (412, "precondition_failed", False),
    ]
    assert {r.framework for r in responses} == {"aiohttp"}
"""


def test_passing_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users_suite=PASSING_SUITE)
    result = run(pytester)
    result.assert_outcomes(passed=2)


ASYNC_SUITE = """
import asyncio
import time

import pytest
from aiohttp import web


class GatedFileResponse(web.FileResponse):
    gate: asyncio.Event

    async def _sendfile(self, *args, **kwargs):
        await self.gate.wait()  # the response is in flight while it waits
        return await super()._sendfile(*args, **kwargs)


def make_app(tmp_path, gate=None):
    (tmp_path / "app.js").write_text("console.log('hi')\\n")

    async def gated(request):
        response = GatedFileResponse(tmp_path / "app.js")
        response.gate = gate
        return response

    app = web.Application()
    app.router.add_static("/static", tmp_path)
    app.router.add_get("/gated", gated)
    return app


async def test_304_does_not_open(aiohttp_client, fileresp_recorder, tmp_path):
    client = await aiohttp_client(make_app(tmp_path))
    first = await client.get("/static/app.js")
    await first.read()
    again = await client.get("/static/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert (first.status, again.status) == (200, 304)
    responses = await fileresp_recorder.await_for(2)
    await fileresp_recorder.asettle()
    await fileresp_recorder.assert_not_opened_async(status=304)
    assert sorted((r.status, r.opened) for r in responses) == [(200, True), (304, False)]


async def test_blocking_helper_fails_while_in_flight(aiohttp_client, fileresp_recorder, tmp_path):
    gate = asyncio.Event()
    client = await aiohttp_client(make_app(tmp_path, gate))
    request = asyncio.ensure_future(client.get("/gated"))
    deadline = time.monotonic() + 10
    while fileresp_recorder.in_flight == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert fileresp_recorder.in_flight == 1
    # Blocking here would stall the server: it fails at once, saying what to await.
    with pytest.raises(AssertionError, match="await recorder.asettle"):
        fileresp_recorder.assert_not_opened(status=200)
    # The awaitable one, with the response still held, fails after its timeout.
    with pytest.raises(AssertionError, match="still in flight"):
        await fileresp_recorder.assert_not_opened_async(status=200, timeout=0.1)
    gate.set()
    reply = await request
    assert reply.status == 200
    await reply.read()
    with pytest.raises(AssertionError, match="1 of 1 file response"):
        await fileresp_recorder.assert_not_opened_async(status=200)
"""


def test_async_suite_with_pytest_aiohttp(pytester: pytest.Pytester) -> None:
    """pytest-aiohttp tests, whose server runs on the test's own event loop:
    the awaitable helpers pass, and the blocking ones fail instead of stalling."""
    pytester.makepyfile(test_async_suite=ASYNC_SUITE)
    result = run(pytester, "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2)


FAILING_SUITE = """
import hashlib
import os

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
from starlette.testclient import TestClient


def make_app(directory):
    async def asset(request):
        path = os.path.join(directory, request.path_params["name"])
        stat = os.stat(path)
        etag = '"' + hashlib.md5(f"{stat.st_mtime}-{stat.st_size}".encode()).hexdigest() + '"'
        if request.headers.get("if-none-match") == etag:
            # The bug: FileResponse still opens and streams the file.
            return FileResponse(path, status_code=304, headers={"etag": etag})
        return FileResponse(path, headers={"etag": etag})

    return strip_304_body(Starlette(routes=[Route("/asset/{name}", asset)]))


def strip_304_body(app):
    # Drops the body of a 304, as HTTP requires of the server (Starlette
    # 0.16's requests-based TestClient fails on a 304 that has one).

    async def app_without_304_body(scope, receive, send):
        statuses = []

        async def send_without_304_body(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif message["type"] == "http.response.body" and statuses == [304]:
                message = {**message, "body": b""}
            await send(message)

        await app(scope, receive, send_without_304_body)

    return app_without_304_body


def revalidate(client):
    etag = client.get("/asset/app.js").headers["etag"]
    return client.get("/asset/app.js", headers={"If-None-Match": etag})


def test_304_opens_behind_the_asgi_middleware(fileresp_recorder, tmp_path):
    (tmp_path / "app.js").write_text("x" * 100)
    app = OpenTelemetryMiddleware(
        make_app(tmp_path), tracer_provider=fileresp_recorder.tracer_provider
    )
    with TestClient(app) as client:
        assert revalidate(client).status_code == 304
    fileresp_recorder.assert_not_opened(status=304)


def test_304_opens_without_a_server_span(fileresp_recorder, tmp_path):
    (tmp_path / "app.js").write_text("x" * 100)
    with TestClient(make_app(tmp_path)) as client:
        assert revalidate(client).status_code == 304
    fileresp_recorder.assert_none(lambda r: r.bytes_sent > 0 and r.status == 304,
                                  "streamed the file into a 304")


def test_waiting_for_a_response_that_never_comes(fileresp_recorder):
    fileresp_recorder.wait_for(1, timeout=0.2)
"""


def test_failing_suite_lists_each_offending_response(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users_suite=FAILING_SUITE)
    result = run(pytester)
    result.assert_outcomes(failed=3)
    output = result.stdout.str()

    result.stdout.re_match_lines(
        [
            r"E\s+AssertionError: 1 of 2 file response\(s\) opened the file \(status=304\):",
            r"E\s+GET /asset/app\.js  file=app\.js  status=304  outcome=not_modified  "
            rf"opened=true  framework=starlette  trace_id={TRACE_ID}$",
        ]
    )
    result.stdout.re_match_lines(
        [
            r"E\s+AssertionError: 1 of 2 file response\(s\) streamed the file into a 304:",
            r"E\s+\(method/path unknown\)  file=app\.js  status=304  outcome=not_modified  "
            rf"opened=true  framework=starlette  trace_id={TRACE_ID}$",
        ]
    )
    result.stdout.re_match_lines(
        [
            r"E\s+AssertionError: expected at least 1 file response\(s\) within 0\.2 s, "
            r"recorded 0 \(0 in flight\):",
            r"E\s+\(none\)",
        ]
    )
    # the failure points at the user's line, not into the plugin
    assert "pytest_plugin.py" not in output
    # the 200s that opened the file are not listed
    assert "status=200" not in output


STATE_SUITE = """
from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

ORIGINAL = {}


def setup_module():
    instrumentor = StarletteFileResponseInstrumentor()
    instrumentor.instrument()  # as a conftest or opentelemetry-instrument would
    ORIGINAL["telemetry"] = instrumentor._hooks.telemetry


def teardown_module():
    StarletteFileResponseInstrumentor().uninstrument()


def test_during(fileresp_recorder):
    starlette = StarletteFileResponseInstrumentor()
    assert starlette.is_instrumented_by_opentelemetry
    assert starlette._hooks.telemetry is not ORIGINAL["telemetry"]
    assert AiohttpFileResponseInstrumentor().is_instrumented_by_opentelemetry


def test_after():
    starlette = StarletteFileResponseInstrumentor()
    # the suite's own instrumentation is back, with its telemetry
    assert starlette.is_instrumented_by_opentelemetry
    assert starlette._hooks.telemetry is ORIGINAL["telemetry"]
    # the one the fixture instrumented is uninstrumented again
    assert not AiohttpFileResponseInstrumentor().is_instrumented_by_opentelemetry
    assert AiohttpFileResponseInstrumentor()._hooks.telemetry is None
"""


def test_previous_instrumentation_is_restored(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_state=STATE_SUITE)
    result = run(pytester)
    result.assert_outcomes(passed=2)


# -- in this process, against a real server ---------------------------------


def gated_app(directory: Path, gate: threading.Event) -> Any:
    """StaticFiles whose last body message waits for ``gate`` (no pool job)."""
    static = Starlette(routes=[Mount("/static", StaticFiles(directory=str(directory)))])

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def gated_send(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                import asyncio

                deadline = time.monotonic() + 10
                while not gate.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
            await send(message)

        await static(scope, receive, gated_send)

    return app


def test_assertions_wait_for_responses_in_flight(files: Path) -> None:
    gate = threading.Event()
    replies: list[Any] = []
    with recording() as recorder, serve_asgi(gated_app(files, gate)) as server:
        client = threading.Thread(
            target=lambda: replies.append(server.request("GET", "/static/small.txt"))
        )
        client.start()
        try:
            deadline = time.monotonic() + 10
            while recorder.in_flight == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            # Held in flight: known to the recorder, not recorded yet. Settling
            # fails, naming it, rather than judging nothing.
            assert recorder.in_flight == 1
            with pytest.raises(AssertionError, match=r"1 file response\(s\) still in flight"):
                recorder.settle(timeout=0.05)
            assert recorder.responses == []
            threading.Thread(target=gate.set).start()
            with pytest.raises(AssertionError) as failure:
                recorder.assert_not_opened(status=200)
        finally:
            gate.set()
            client.join(10)
        assert recorder.in_flight == 0
        assert [r.status for r in replies] == [200]
    assert re.search(
        r"^1 of 1 file response\(s\) opened the file \(status=200\):\n"
        r"  \(method/path unknown\)  file=small\.txt  status=200  outcome=sent  opened=true  "
        rf"framework=starlette  trace_id={TRACE_ID}$",
        str(failure.value),
    )


def test_recording_leaves_no_instrumentation_behind(files: Path) -> None:
    with recording(capture_path="none", phase_spans=False) as recorder:
        assert recorder.frameworks == ["aiohttp", "starlette"]
        with serve_asgi(Starlette(routes=[Mount("/s", StaticFiles(directory=str(files)))])) as s:
            assert s.request("GET", "/s/small.txt").status == 200
            [response] = recorder.wait_for(1)
    # phases from the response's attributes when phase spans are off
    assert set(response.phases) == {"stat", "precondition", "open", "send", "threadpool.wait"}
    assert response.file_name is None
    assert [span.name for span in recorder.spans()] == ["fileresp.response"]
    assert not StarletteFileResponseInstrumentor().is_instrumented_by_opentelemetry
    assert not AiohttpFileResponseInstrumentor().is_instrumented_by_opentelemetry


UNITTEST_SUITE = """
import sys
import unittest

sys.modules["pytest"] = None  # a unittest suite: pytest is not there to import

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

from otel_fileresp.testing import recording


class RevalidationTest(unittest.TestCase):
    def test_304_does_not_open(self):
        app = Starlette(routes=[Mount("/static", StaticFiles(directory=sys.argv[-1]))])
        with recording() as recorder, TestClient(app) as client:
            etag = client.get("/static/app.js").headers["etag"]
            again = client.get("/static/app.js", headers={"If-None-Match": etag})
            self.assertEqual(again.status_code, 304)
            recorder.assert_not_opened(status=304)
            seen = sorted((r.status, r.opened) for r in recorder.responses)
            self.assertEqual(seen, [(200, True), (304, False)])


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
"""


def test_recording_works_in_a_unittest_suite_without_pytest(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "app.js").write_text("console.log('hi')\n")
    suite = tmp_path / "test_unittest_suite.py"
    suite.write_text(UNITTEST_SUITE)
    result = subprocess.run(
        [sys.executable, str(suite), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Ran 1 test" in result.stderr and "OK" in result.stderr
