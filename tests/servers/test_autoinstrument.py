"""``opentelemetry-instrument`` end to end: real servers in subprocesses, real OTLP.

Each test starts a server the way a user would, with no instrumentation code
in the app (``tests/apps/``):

    opentelemetry-instrument uvicorn starlette_app:app --host 127.0.0.1 --port P
    opentelemetry-instrument python aiohttp_app.py --port P

The SDK is configured only through the environment (``OTEL_TRACES_EXPORTER``
and ``OTEL_METRICS_EXPORTER=otlp``, ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at an OTLP/HTTP receiver the test
runs on 127.0.0.1, a 50 ms batch delay), so what is asserted is what the real
OTLP exporter put on the wire. Requests go over loopback; the server is
stopped with SIGINT (uvicorn) or SIGTERM (aiohttp), after which the process
exits normally and the SDK flushes its exporters at exit. (uvicorn 0.29+
re-raises SIGTERM after its graceful shutdown, so the process dies of the
signal and exit-time flushing never runs; see docs/troubleshooting.md.)
Every start, request, wait and stop is bounded; a server that does not stop
is killed with its whole process group, and the test fails.

**Making a framework unimportable without uninstalling it.** Both frameworks
are installed in the test environment. To run "only Starlette importable" (or
only aiohttp), the test writes a directory containing ``aiohttp/__init__.py``
(or ``starlette/__init__.py``) whose only statement raises
``ModuleNotFoundError("No module named 'aiohttp'", name="aiohttp")``, exactly
what Python raises for a missing package, and puts it first on the server's
``PYTHONPATH``. No ``sitecustomize`` or import hook is involved. What differs
from a real uninstall: the distribution's metadata is still there, so
``opentelemetry-instrument`` still loads contrib's ``aiohttp-server`` entry
point and skips it when its import fails (rather than at its dependency
check). Our instrumentors take the same path as with the framework
uninstalled, because ``opentelemetry-instrument`` does not re-check
dependencies when it calls ``instrument()`` and ``_instrument`` imports the
framework itself. The app's ``/info`` route reports which frameworks the
server process imported, which proves the hidden one never was.

**uvicorn ``--workers``.** uvicorn starts workers with multiprocessing's
*spawn* method, and ``opentelemetry-instrument`` works through ``PYTHONPATH``
(its ``sitecustomize``), which spawned workers inherit: every worker sets up
its own SDK and instruments itself. The test proves it by making each of two
workers serve a file (see ``/hold`` in ``tests/apps/starlette_app.py``) and
receiving ``fileresp.response`` spans from both pids (``process.pid``, from
``OTEL_EXPERIMENTAL_RESOURCE_DETECTORS=otel,process``). The supervisor stops
its workers with SIGTERM, so they exit without flushing: the test waits for
the spans (exported by the batch processor every 50 ms) before stopping it,
as a production setup must rely on the schedule delay. Servers that *fork*
workers after the SDK started (gunicorn's default) need the SDK set up in a
post-fork hook instead; see docs/troubleshooting.md.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from support.harness import Reply
from support.otlp_receiver import Received, ReceivedSpan, otlp_http_receiver
from support.processes import APPS, BIN, BODY, REQUEST_TIMEOUT, Server, server_process

DATA_TIMEOUT = 10.0
SCOPE = "otel_fileresp"


def _serve_files(server: Server, file_route: bool = True) -> dict[str, Reply]:
    """200 and 304 from the static route, and 200 from the ``/file`` route."""
    replies = {"static 200": server.request("GET", "/static/hello.txt")}
    etag = replies["static 200"].header("etag")
    assert etag, replies["static 200"].headers
    replies["static 304"] = server.request("GET", "/static/hello.txt", {"If-None-Match": etag})
    if file_route:
        replies["file 200"] = server.request("GET", "/file/hello.txt")
    assert replies["static 200"].status == 200
    assert replies["static 200"].body == BODY
    assert replies["static 304"].status == 304
    assert replies["static 304"].body == b""
    if file_route:
        assert replies["file 200"].status == 200
        assert replies["file 200"].body == BODY
    return replies


def _responses(received: Received, count: int) -> list[ReceivedSpan]:
    received.wait_until(lambda r: len(r.spans("fileresp.response")) >= count, DATA_TIMEOUT)
    return received.spans("fileresp.response")


def _check_trees(received: Received, framework: str, server_scope: str | None) -> None:
    """Every fileresp span is well formed and nested where the contract says."""
    spans = received.spans()
    by_id = {s.span_id: s for s in spans}
    ours = [s for s in spans if s.scope.name == SCOPE]
    assert ours
    for span in ours:
        assert span.name.startswith("fileresp.")
        assert span.kind == "INTERNAL"
        assert span.scope.version
        assert span.scope.schema_url.startswith("https://opentelemetry.io/schemas/")
        if span.name == "fileresp.response":
            assert span.attributes["fileresp.framework"] == framework
            parent = by_id.get(span.parent_span_id) if span.parent_span_id else None
            if server_scope is None:
                assert span.parent_span_id is None, span
            else:
                assert parent is not None, f"parent of {span} not received"
                assert parent.kind == "SERVER"
                assert parent.scope.name == server_scope
                assert parent.trace_id == span.trace_id
        else:
            parent = by_id.get(span.parent_span_id or "")
            assert parent is not None, f"parent of {span} not received"
            assert parent.name == "fileresp.response"
            assert parent.trace_id == span.trace_id


def _check_200_and_304(responses: list[ReceivedSpan]) -> None:
    sent = [s for s in responses if s.attributes["http.response.status_code"] == 200]
    not_modified = [s for s in responses if s.attributes["http.response.status_code"] == 304]
    assert sent and len(not_modified) == 1
    for span in sent:
        assert span.attributes["fileresp.opened"] is True
        assert span.attributes["fileresp.outcome"] == "sent"
        assert span.attributes["fileresp.bytes"] == len(BODY)
        assert span.attributes["file.name"] == "hello.txt"
    assert not_modified[0].attributes["fileresp.opened"] is False
    assert not_modified[0].attributes["fileresp.outcome"] == "not_modified"


def _check_clean_log(server: Server) -> None:
    log = server.log()
    assert "Traceback" not in log, log
    assert "otel_fileresp:" not in log, log  # our own warnings
    assert "Failed to auto initialize" not in log, log


def test_uvicorn_starlette_only_with_contrib_asgi(tmp_path: Path) -> None:
    """uvicorn, aiohttp unimportable, the app wrapped in contrib's asgi middleware.

    ``fileresp.response`` is a child of the middleware's SERVER span (same
    trace), and the phase spans are children of ``fileresp.response``.
    """
    with (
        otlp_http_receiver() as receiver,
        server_process(
            tmp_path,
            _uvicorn(),
            receiver,
            signal.SIGINT,
            env={"FILERESP_TEST_ASGI_MIDDLEWARE": "1"},
            hidden="aiohttp",
        ) as server,
    ):
        info = json.loads(server.request("GET", "/info").body)
        assert info["frameworks_loaded"] == ["starlette"]
        _serve_files(server)
    responses = _responses(receiver.received, 3)
    assert len(responses) == 3
    _check_200_and_304(responses)
    _check_trees(receiver.received, "starlette", "opentelemetry.instrumentation.asgi")
    _check_clean_log(server)
    assert receiver.received.latest_points("fileresp.opens")
    assert receiver.received.latest_points("fileresp.duration")


def test_aiohttp_only_with_contrib_aiohttp_server(tmp_path: Path) -> None:
    """``python aiohttp_app.py``, Starlette unimportable, contrib aiohttp-server on.

    aiohttp-server's SERVER span ends before ``FileResponse.prepare`` runs;
    ``fileresp.response`` is still its child, in the same trace.
    """
    with (
        otlp_http_receiver() as receiver,
        server_process(
            tmp_path,
            _aiohttp(),
            receiver,
            signal.SIGTERM,
            hidden="starlette",
        ) as server,
    ):
        info = json.loads(server.request("GET", "/info").body)
        assert info["frameworks_loaded"] == ["aiohttp"]
        _serve_files(server)
    responses = _responses(receiver.received, 3)
    assert len(responses) == 3
    _check_200_and_304(responses)
    _check_trees(receiver.received, "aiohttp", "opentelemetry.instrumentation.aiohttp_server")
    _check_clean_log(server)
    assert receiver.received.latest_points("fileresp.opens")


def _uvicorn(*extra: str) -> list[str]:
    return [
        str(BIN / "uvicorn"),
        "starlette_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        *extra,
    ]


def _aiohttp() -> list[str]:
    return [sys.executable, str(APPS / "aiohttp_app.py"), "--port", "{port}"]


SERVERS = {
    # framework: (command, stop signal, scope of contrib's SERVER spans)
    "starlette": (_uvicorn, signal.SIGINT, "opentelemetry.instrumentation.asgi"),
    "aiohttp": (_aiohttp, signal.SIGTERM, "opentelemetry.instrumentation.aiohttp_server"),
}


@pytest.mark.parametrize("framework", list(SERVERS))
def test_disabled_instrumentations(tmp_path: Path, framework: str) -> None:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names each entry point to switch it off.

    Both frameworks are importable here. The app still answers 200 and 304
    with the right bodies; the server spans arrive (so the exporter works) and
    nothing from ``otel_fileresp`` does for the framework switched off.
    """
    command, stop_signal, server_scope = SERVERS[framework]
    entry_point = f"fileresp_{framework}"
    with (
        otlp_http_receiver() as receiver,
        server_process(
            tmp_path,
            command(),
            receiver,
            stop_signal,
            env={
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": f"some-other, {entry_point}",
                "FILERESP_TEST_ASGI_MIDDLEWARE": "1",
            },
        ) as server,
    ):
        replies = _serve_files(server)
    received = receiver.received

    def static_server_spans(r: Received) -> list[ReceivedSpan]:
        return [
            s
            for s in r.spans()
            if s.kind == "SERVER" and s.scope.name == server_scope and "/static" in s.name
        ]

    assert received.wait_until(lambda r: len(static_server_spans(r)) >= 2, DATA_TIMEOUT)
    assert replies["static 304"].status == 304
    assert [s for s in received.spans() if s.scope.name == SCOPE] == []
    assert [s for s in received.spans() if s.name.startswith("fileresp.")] == []
    # The other framework's instrumentor still reports its own 304 series (at 0).
    assert [
        p
        for p in received.points()
        if p.metric.startswith("fileresp.") and p.attributes.get("fileresp.framework") == framework
    ] == []
    _check_clean_log(server)


def test_uvicorn_workers_each_instrumented(tmp_path: Path) -> None:
    """``uvicorn --workers 2``: each worker instruments itself and exports its own spans.

    ``/hold/{token}`` blocks the event loop of the worker that accepted it, so
    the next connection can only be accepted by the other worker: hold A,
    fetch a file (served by B), hold B, release A, fetch a file (served by A),
    release B. No ASGI middleware here, so ``fileresp.response`` is a root
    span. Spans are awaited before the stop: the workers are stopped with
    SIGTERM by uvicorn's supervisor and do not flush at exit.
    """
    held: dict[str, int] = {}

    def hold(server: Server, pool: ThreadPoolExecutor, token: str) -> Future[Reply]:
        future = pool.submit(server.request, "GET", f"/hold/{token}")
        marker = tmp_path / f"held-{token}"
        deadline = time.monotonic() + REQUEST_TIMEOUT
        while time.monotonic() < deadline and not future.done():
            pid = marker.read_text().strip() if marker.exists() else ""
            if pid.isdigit():
                held[token] = int(pid)
                return future
            time.sleep(0.01)
        pytest.fail(f"/hold/{token} was not picked up: {future}")

    def release(token: str, future: Future[Reply]) -> None:
        (tmp_path / f"release-{token}").touch()
        assert future.result(REQUEST_TIMEOUT).status == 200

    served_by: list[int] = []
    with (
        otlp_http_receiver() as receiver,
        server_process(tmp_path, _uvicorn("--workers", "2"), receiver, signal.SIGTERM) as server,
        ThreadPoolExecutor(max_workers=2) as pool,
    ):
        hold_a = hold(server, pool, "a")
        assert server.request("GET", "/static/hello.txt").body == BODY
        served_by.append(json.loads(server.request("GET", "/info").body)["pid"])
        hold_b = hold(server, pool, "b")
        release("a", hold_a)
        assert server.request("GET", "/file/hello.txt").body == BODY
        served_by.append(json.loads(server.request("GET", "/info").body)["pid"])
        release("b", hold_b)
        responses = _responses(receiver.received, 2)
    pid_a, pid_b = held["a"], held["b"]
    assert pid_a != pid_b
    assert served_by == [pid_b, pid_a]
    assert {s.pid: s.attributes["file.name"] for s in responses} == {
        pid_b: "hello.txt",
        pid_a: "hello.txt",
    }
    assert all(s.attributes["http.response.status_code"] == 200 for s in responses)
    _check_trees(receiver.received, "starlette", None)
    _check_clean_log(server)
