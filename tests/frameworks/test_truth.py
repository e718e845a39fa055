"""The contract's truth rules, each on the case that broke it (issue 12).

Each test drives a real app over a real socket (uvicorn for Starlette, an
aiohttp runner) and checks what was recorded against what the client got:

1. only the served file counts as opened (not a manifest, not a signal's read);
2. a complete response is never an error, even when the client leaves right
   after the head (a 0-byte file, a 304);
3. a static lookup cancelled while queued still ends its response;
4. the close after the last byte is not part of the response's wait;
5. the status recorded is the one sent (the SPA fallback);
6. redirects, 405s, the header that decided by the framework's precedence,
   file names that are not UTF-8;
7. contrib's threading and asyncio instrumentations, in either order, change
   none of our spans.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import starlette
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from support.harness import (
    LoopbackServer,
    Telemetry,
    attrs,
    child_names,
    instrumenting,
    serve_aiohttp,
    serve_asgi,
)

STARLETTE = tuple(int(p) for p in starlette.__version__.split(".")[:2])
RESPONSE = "fileresp.response"
BODY = b"the served file\n"


def opens_by_status(telemetry: Telemetry, framework: str) -> dict[int, int]:
    return {
        p.attributes["http.response.status_code"]: p.value
        for p in telemetry.metric_points("fileresp.opens")
        if p.attributes["fileresp.framework"] == framework
    }


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "app.js").write_bytes(BODY)
    (root / "manifest.json").write_text('{"app.js": "app.js"}')
    (root / "empty.txt").write_bytes(b"")
    (root / "index.html").write_text("<h1>app</h1>")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_text("<h1>docs</h1>")
    return root


def etag_of(server: LoopbackServer, path: str) -> str:
    reply = server.request("GET", path)
    assert reply.status == 200
    etag = reply.header("etag")
    assert etag
    return etag


def head_then_close(port: int, path: str, timeout: float = 10.0) -> bytes:
    """A health checker: read the response head, then close the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head.split(b"\r\n", 1)[0]


# -- 1. only the served file counts --------------------------------------------


class ManifestStaticFiles(StaticFiles):
    """Reads its manifest (another file) in the response's context, as asset
    pipelines do, on every request: 304s included."""

    async def get_response(self, path: str, scope: Any) -> Any:
        async with await anyio.open_file(os.path.join(str(self.directory), "manifest.json")) as f:
            await f.read()
        return await super().get_response(path, scope)


def test_starlette_manifest_read_in_a_304_is_not_the_open(site: Path, telemetry: Telemetry) -> None:
    app = Starlette(routes=[Mount("/static", ManifestStaticFiles(directory=str(site)))])
    with serve_asgi(app) as server, instrumenting("starlette", telemetry):
        etag = etag_of(server, "/static/app.js")
        again = server.request("GET", "/static/app.js", {"If-None-Match": etag})
        assert (again.status, again.body) == (304, b"")
        responses = telemetry.wait_for(RESPONSE, 2)
    sent, not_modified = sorted(responses, key=lambda s: s.start_time)
    assert attrs(sent)["fileresp.opened"] is True
    assert attrs(sent)["fileresp.bytes"] == len(BODY)
    assert attrs(not_modified)["http.response.status_code"] == 304
    assert attrs(not_modified)["fileresp.opened"] is False
    names = child_names(telemetry.spans(), not_modified)
    assert "fileresp.open" not in names and "fileresp.send" not in names
    # The manifest's open and read are pool jobs the 304 used, nothing more.
    assert attrs(not_modified)["fileresp.threadpool.jobs"] >= 3
    assert opens_by_status(telemetry, "starlette") == {200: 1, 304: 0}


def test_aiohttp_signal_reading_a_template_in_a_304_is_not_the_open(
    site: Path, telemetry: Telemetry
) -> None:
    from aiohttp import web

    def make_app() -> Any:
        async def on_prepare(request: Any, response: Any) -> None:
            # A signal reading another file on the loop (a template, a manifest).
            response.headers["X-Manifest-Size"] = str(len((site / "manifest.json").read_text()))

        app = web.Application()
        app.on_response_prepare.append(on_prepare)
        app.router.add_static("/static", site)
        return app

    with serve_aiohttp(make_app) as server, instrumenting("aiohttp", telemetry):
        etag = etag_of(server, "/static/app.js")
        again = server.request("GET", "/static/app.js", {"If-None-Match": etag})
        assert again.status == 304
        responses = telemetry.wait_for(RESPONSE, 2)
    sent, not_modified = sorted(responses, key=lambda s: s.start_time)
    assert attrs(sent)["fileresp.opened"] is True
    assert attrs(not_modified)["fileresp.opened"] is False
    assert "fileresp.open" not in child_names(telemetry.spans(), not_modified)
    assert opens_by_status(telemetry, "aiohttp") == {200: 1, 304: 0}


# -- 2. a complete response is never an error -----------------------------------


def hold_the_only_token(seconds: float) -> None:
    """Saturate anyio's worker pool (limited to one token) for ``seconds``, as
    another request's long job would: the next file job waits behind it."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = 1
    borrower = object()
    limiter.acquire_on_behalf_of_nowait(borrower)
    asyncio.get_running_loop().call_later(seconds, limiter.release_on_behalf_of, borrower)


def saturated_after_head(app: Any, hold: float = 1.0) -> Any:
    """A busy worker pool: once a response's head is out, another request's
    job takes anyio's only token for ``hold`` seconds, so the file's next job
    waits; a client that only wanted the head leaves meanwhile (Starlette 1.8+
    then sees ``http.disconnect`` and stops before its final body message)."""

    async def saturated(scope: Any, receive: Any, send: Any) -> None:
        async def send_then_saturate(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.start" and not scope["path"].startswith(
                "/warm-up/"
            ):
                hold_the_only_token(hold)

        await app(scope, receive, send_then_saturate)

    return saturated


@pytest.mark.parametrize(
    ("path", "status", "outcome"),
    [("/static/empty.txt", 200, "sent"), ("/not-modified", 304, "not_modified")],
)
def test_client_leaving_after_a_complete_head_is_no_error(
    site: Path, telemetry: Telemetry, path: str, status: int, outcome: str
) -> None:
    async def not_modified(request: Any) -> FileResponse:
        return FileResponse(site / "app.js", status_code=304)

    app = Starlette(
        routes=[
            Route("/not-modified", not_modified),
            Mount("/static", StaticFiles(directory=str(site))),
            Mount("/warm-up", StaticFiles(directory=str(site))),
        ]
    )
    with serve_asgi(saturated_after_head(app)) as server, instrumenting("starlette", telemetry):
        server.request("GET", "/warm-up/app.js")  # StaticFiles' one-off checks first
        telemetry.wait_for(RESPONSE, 1)
        telemetry.clear()
        assert head_then_close(server.port, path) == f"HTTP/1.1 {status} ".encode() + (
            b"OK" if status == 200 else b"Not Modified"
        )
        [response] = telemetry.wait_for(RESPONSE, 1)
    found = attrs(response)
    assert found["http.response.status_code"] == status
    assert found["fileresp.outcome"] == outcome
    assert "error.type" not in found


def test_client_leaving_mid_body_is_still_an_incomplete_body(
    site: Path, telemetry: Telemetry
) -> None:
    """The positive control: a body that was announced and not handed over."""
    (site / "big.bin").write_bytes(b"x" * (4 * 1024 * 1024))
    static = StaticFiles(directory=str(site))
    app = Starlette(routes=[Mount("/static", static), Mount("/warm-up", static)])
    with serve_asgi(saturated_after_head(app)) as server, instrumenting("starlette", telemetry):
        server.request("GET", "/warm-up/app.js")
        telemetry.wait_for(RESPONSE, 1)
        telemetry.clear()
        assert head_then_close(server.port, "/static/big.bin") == b"HTTP/1.1 200 OK"
        [response] = telemetry.wait_for(RESPONSE, 1)
    found = attrs(response)
    # Starlette 1.8+ stops on http.disconnect, without an exception; earlier
    # releases keep sending into the closed connection, and uvicorn drops
    # those messages: not handed over either (issue 21).
    assert found["fileresp.outcome"] == "error"
    assert found["error.type"] == "incomplete_body"
    assert found["fileresp.bytes"] < 4 * 1024 * 1024


# -- 3. a lookup cancelled while queued still ends its response ------------------


def test_aiohttp_static_lookup_cancelled_while_queued_ends_the_response(
    site: Path, telemetry: Telemetry
) -> None:

    # aiohttp 3.10+: the lookup job is queued; before, the FileResponse's stat
    # job is. Either way the response has started and must end.
    release = threading.Event()
    busy = threading.Event()

    def make_app() -> Any:
        return one_worker_app(site, busy, release)

    response = leave_while_queued(site, telemetry, busy, release, make_app)
    found = attrs(response)
    assert found["fileresp.outcome"] == "error"
    assert found["error.type"] == "CancelledError"
    assert "http.response.status_code" not in found
    assert [
        p.attributes["fileresp.outcome"] for p in telemetry.metric_points("fileresp.duration")
    ] == ["error"]


def one_worker_app(site: Path, busy: threading.Event, release: threading.Event) -> Any:
    """An aiohttp app whose default executor has one worker, which ``/block``
    holds (``busy`` set) until ``release``; ``/static`` serves ``site``. Build
    it on the server's loop."""
    from concurrent.futures import ThreadPoolExecutor

    from aiohttp import web

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))

    async def block(request: Any) -> Any:
        def hold() -> None:
            busy.set()
            release.wait(10)

        await asyncio.get_running_loop().run_in_executor(None, hold)
        return web.Response(text="done")

    app = web.Application()
    app.router.add_get("/block", block)
    app.router.add_static("/static", site)
    return app


def leave_while_queued(
    site: Path,
    telemetry: Telemetry,
    busy: threading.Event,
    release: threading.Event,
    make_app: Any,
    after_instrumenting: Any = None,
) -> ReadableSpan:
    """The one worker held by ``/block``; a static request whose lookup job
    queues behind it, and whose client gives up (handler cancellation on)."""
    with (
        serve_aiohttp(make_app, handler_cancellation=True) as server,
        instrumenting("aiohttp", telemetry),
    ):
        if after_instrumenting is not None:
            after_instrumenting()
        blocker = threading.Thread(target=lambda: server.request("GET", "/block"))
        blocker.start()
        try:
            assert busy.wait(10)
            with pytest.raises(OSError):
                server.request("GET", "/static/app.js", timeout=0.3)
            [response] = telemetry.wait_for(RESPONSE, 1)
        finally:
            release.set()
            blocker.join(10)
    return response


# -- 4. the close after the last byte is not the response's ----------------------


def test_starlette_close_after_the_last_byte_is_not_waited_for(
    site: Path, telemetry: Telemetry
) -> None:
    """Pool saturated right after the last body message: the close job waits,
    but after the response's end, so neither its wait nor the job counts."""

    def saturating(app: Any) -> Any:
        async def saturate(scope: Any, receive: Any, send: Any) -> None:
            async def send_and_saturate(message: Any) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    hold_the_only_token(1.0)
                await send(message)

            await app(scope, receive, send_and_saturate)

        return saturate

    app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(site)))])
    with serve_asgi(saturating(app)) as server, instrumenting("starlette", telemetry):
        reply = server.request("GET", "/static/app.js")
        assert (reply.status, reply.body) == (200, BODY)
        [response] = telemetry.wait_for(RESPONSE, 1)
    found = attrs(response)
    duration = (response.end_time - response.start_time) / 1e9
    assert found["fileresp.threadpool.wait"] <= duration
    assert duration < 1.0  # the close's 1 s wait is not in the response
    [wait] = [p for p in telemetry.metric_points("fileresp.phase.duration")]
    assert wait.sum == pytest.approx(found["fileresp.threadpool.wait"])


# -- 5. the status is the one sent ------------------------------------------------


def test_starlette_spa_fallback_claims_no_404(site: Path, telemetry: Telemetry) -> None:
    """An exception handler answering the app's index.html for any 404: the
    lookup found nothing (not_found, no status: StaticFiles sent none), and
    the page served is its own response, 200."""

    async def spa_fallback(request: Any, exc: Exception) -> FileResponse:
        return FileResponse(site / "index.html")

    app = Starlette(
        routes=[Mount("/static", StaticFiles(directory=str(site)))],
        exception_handlers={404: spa_fallback},
    )
    with serve_asgi(app) as server, instrumenting("starlette", telemetry):
        reply = server.request("GET", "/static/some/client/route")
        responses = telemetry.wait_for(RESPONSE, 2 if STARLETTE >= (0, 17) else 1)
    if STARLETTE < (0, 17):  # StaticFiles answers its own 404: no handler runs
        assert reply.status == 404
        return
    assert (reply.status, reply.body) == (200, b"<h1>app</h1>")
    by_outcome = {attrs(s)["fileresp.outcome"]: attrs(s) for s in responses}
    assert set(by_outcome) == {"not_found", "sent"}
    assert "http.response.status_code" not in by_outcome["not_found"]
    assert by_outcome["sent"]["http.response.status_code"] == 200
    assert by_outcome["sent"]["file.name"] == "index.html"
    statuses = {
        p.attributes.get("http.response.status_code")
        for p in telemetry.metric_points("fileresp.duration")
    }
    assert 404 not in statuses


# -- 6. smaller lies -----------------------------------------------------------------


def test_starlette_directory_redirect_is_a_redirect(site: Path, telemetry: Telemetry) -> None:
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(site), html=True))])
    with serve_asgi(app) as server, instrumenting("starlette", telemetry):
        reply = server.request("GET", "/static/docs")
        [response] = telemetry.wait_for(RESPONSE, 1)
    assert reply.status in (307, 308)
    found = attrs(response)
    assert found["http.response.status_code"] == reply.status
    assert found["fileresp.outcome"] == "redirect"
    assert found["fileresp.opened"] is False
    assert "file.name" not in found
    assert "error.type" not in found


def test_starlette_post_is_method_not_allowed(site: Path, telemetry: Telemetry) -> None:
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(site)))])
    with serve_asgi(app) as server, instrumenting("starlette", telemetry):
        reply = server.request("POST", "/static/app.js")
        [response] = telemetry.wait_for(RESPONSE, 1)
    assert reply.status == 405
    found = attrs(response)
    assert found["fileresp.outcome"] == "method_not_allowed"
    assert "error.type" not in found
    if STARLETTE >= (0, 17):  # raised as HTTPException, sent above StaticFiles
        assert "http.response.status_code" not in found
    else:
        assert found["http.response.status_code"] == 405


def test_starlette_header_that_decided_is_starlettes_own_choice(
    site: Path, telemetry: Telemetry
) -> None:
    """If-None-Match that does not match and If-Modified-Since that does:
    Starlette before 0.49.2 answers 304 by If-Modified-Since; from 0.49.2 it
    ignores If-Modified-Since when If-None-Match is present and sends 200."""
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(site)))])
    with serve_asgi(app) as server, instrumenting("starlette", telemetry):
        first = server.request("GET", "/static/app.js")
        last_modified = first.header("last-modified")
        assert last_modified
        reply = server.request(
            "GET",
            "/static/app.js",
            {"If-None-Match": '"not-this-one"', "If-Modified-Since": last_modified},
        )
        responses = telemetry.wait_for(RESPONSE, 2)
    response = max(responses, key=lambda s: s.start_time)
    [precondition] = [
        s
        for s in telemetry.spans()
        if s.name == "fileresp.precondition" and s.parent.span_id == response.context.span_id
    ]
    decided = attrs(precondition)
    if reply.status == 304:
        assert decided == {
            "fileresp.precondition.result": "not_modified",
            "fileresp.precondition.header": "if-modified-since",
        }
    else:
        assert reply.status == 200
        assert decided == {
            "fileresp.precondition.result": "pass",
            "fileresp.precondition.header": "if-none-match",
        }
    assert (reply.status == 304) == (STARLETTE < (0, 50) and STARLETTE != (0, 49))


@pytest.mark.parametrize("framework", ["starlette", "aiohttp"])
def test_file_name_that_is_not_utf8_is_made_valid(
    tmp_path: Path, telemetry: Telemetry, framework: str
) -> None:
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.txt"  # Latin-1, not UTF-8
    with open(raw, "wb") as file:
        file.write(BODY)
    path = os.fsdecode(raw)  # surrogate-escaped, as Python names it

    with ExitStack() as stack:
        if framework == "starlette":

            async def latin1(request: Any) -> FileResponse:
                return FileResponse(path)

            server = stack.enter_context(serve_asgi(Starlette(routes=[Route("/f", latin1)])))
        else:
            from aiohttp import web

            def make_app() -> Any:
                async def latin1(request: Any) -> Any:
                    return web.FileResponse(path)

                app = web.Application()
                app.router.add_get("/f", latin1)
                return app

            server = stack.enter_context(serve_aiohttp(make_app))
        stack.enter_context(instrumenting(framework, telemetry, capture_path="full"))
        reply = server.request("GET", "/f")
        [response] = telemetry.wait_for(RESPONSE, 1)
    assert (reply.status, reply.body) == (200, BODY)
    found = attrs(response)
    assert found["file.name"] == "caf\ufffd.txt"
    assert found["file.path"].endswith("/caf\ufffd.txt")
    # What the OTLP exporters do with it: encode it, every attribute kept.
    encoded = encode_spans([response]).SerializeToString()
    assert "caf\ufffd.txt".encode() in encoded


# -- 7. next to contrib's threading and asyncio instrumentations -----------------


@contextmanager
def contrib_instrumentations(order: str, ours: Any) -> Iterator[None]:
    """contrib's threading and asyncio instrumentations, before or after ``ours``."""
    from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    contrib = [ThreadingInstrumentor(), AsyncioInstrumentor()]
    with ExitStack() as stack:
        if order == "after":
            stack.enter_context(ours)
        for instrumentor in contrib:
            instrumentor.instrument()
            stack.callback(instrumentor.uninstrument)
        if order == "before":
            stack.enter_context(ours)
        yield


def aiohttp_fingerprint(site: Path, order: str | None) -> list[tuple[Any, ...]]:
    """What our spans say of a static 200, a static 304 and a handler's 200."""
    from aiohttp import web

    def make_app() -> Any:
        async def handler(request: Any) -> Any:
            return web.FileResponse(site / "app.js")

        app = web.Application()
        app.router.add_static("/static", site)
        app.router.add_get("/file", handler)
        return app

    telemetry = Telemetry()
    try:
        ours = instrumenting("aiohttp", telemetry)
        with (
            serve_aiohttp(make_app) as server,
            contrib_instrumentations(order, ours) if order else ours,
        ):
            etag = etag_of(server, "/static/app.js")
            assert server.request("GET", "/static/app.js", {"If-None-Match": etag}).status == 304
            assert server.request("GET", "/file").status == 200
            responses = telemetry.wait_for(RESPONSE, 3)
        spans = telemetry.spans()
        fingerprint = []
        for response in sorted(responses, key=lambda s: s.start_time):
            found = attrs(response)
            waits = sorted(
                s.attributes["fileresp.threadpool.job"]
                for s in spans
                if s.name == "fileresp.threadpool.wait"
                and s.parent.span_id == response.context.span_id
            )
            fingerprint.append(
                (
                    found["http.response.status_code"],
                    found["fileresp.opened"],
                    found["fileresp.threadpool.jobs"],
                    tuple(waits),
                    tuple(child_names(spans, response)),
                    response.parent is None,
                )
            )
        return fingerprint
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize("order", ["before", "after"])
def test_aiohttp_spans_unchanged_by_contrib_threading_and_asyncio(site: Path, order: str) -> None:
    alone = aiohttp_fingerprint(site, None)
    assert alone and all(jobs >= 1 for _, _, jobs, _, _, _ in alone)
    assert aiohttp_fingerprint(site, order) == alone


# -- found in review: responses that must end, jobs that are not ours ------------


class Listener:
    """A response consumer: the keys of the responses started and ended."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []

    def response_started(self, key: int, framework: str) -> None:
        self.started.append(key)

    def response_ended(self, key: int, finished: Any) -> None:
        self.ended.append(key)


@contextmanager
def listening() -> Iterator[Listener]:
    from otel_fileresp._telemetry import add_consumer

    listener = Listener()
    remove = add_consumer(listener)
    try:
        yield listener
    finally:
        remove()


def test_aiohttp_static_response_replaced_by_a_middleware_is_no_response(
    site: Path, telemetry: Telemetry
) -> None:
    """A middleware answers instead of the static route's FileResponse: that
    file response never started, and nothing is left in flight."""
    from aiohttp import web

    def make_app() -> Any:
        @web.middleware
        async def replace(request: Any, handler: Any) -> Any:
            response = await handler(request)
            return web.Response(text="replaced") if "replace" in request.query else response

        app = web.Application(middlewares=[replace])
        app.router.add_static("/static", site)
        return app

    with (
        listening() as listener,
        serve_aiohttp(make_app) as server,
        instrumenting("aiohttp", telemetry),
    ):
        assert server.request("GET", "/static/app.js?replace=1").body == b"replaced"
        assert server.request("GET", "/static/app.js").body == BODY
        [response] = telemetry.wait_for(RESPONSE, 1)
    assert attrs(response)["fileresp.outcome"] == "sent"
    assert len(listener.started) == len(listener.ended) == 1


def test_aiohttp_application_job_with_a_path_is_not_a_lookup(
    site: Path, telemetry: Telemetry
) -> None:
    """A handler's own executor job taking a Path (and raising 404) is not a
    static route's lookup: no file response is recorded."""
    from aiohttp import web

    def load(path: Path) -> str:
        raise web.HTTPNotFound()

    def make_app() -> Any:
        async def handler(request: Any) -> Any:
            await asyncio.get_running_loop().run_in_executor(None, load, site / "config.toml")
            return web.Response(text="never")

        app = web.Application()
        app.router.add_get("/config", handler)
        return app

    with serve_aiohttp(make_app) as server, instrumenting("aiohttp", telemetry):
        assert server.request("GET", "/config").status == 404
    assert telemetry.spans() == []
    assert telemetry.metric_points("fileresp.duration") == []


def test_aiohttp_lookup_cancelled_while_queued_behind_contrib_threading(
    site: Path, telemetry: Telemetry
) -> None:
    """Case 3 with contrib's threading instrumentation wrapping submit after ours."""

    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    release, busy = threading.Event(), threading.Event()

    def make_app() -> Any:
        return one_worker_app(site, busy, release)

    threading_instrumentor = ThreadingInstrumentor()
    try:
        response = leave_while_queued(
            site, telemetry, busy, release, make_app, threading_instrumentor.instrument
        )
    finally:
        threading_instrumentor.uninstrument()
    assert attrs(response)["error.type"] == "CancelledError"


def compressed_file_app(big: Path) -> Any:
    """An aiohttp app serving ``big`` at /big with ``enable_compression()``."""
    from aiohttp import web

    def make_app() -> Any:
        async def handler(request: Any) -> Any:
            response = web.FileResponse(big)
            response.enable_compression()
            return response

        app = web.Application()
        app.router.add_get("/big", handler)
        return app

    return make_app


def test_aiohttp_compressed_body_counts_the_file_sent(tmp_path: Path, telemetry: Telemetry) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"compressible " * 20_000)

    with serve_aiohttp(compressed_file_app(big)) as server, instrumenting("aiohttp", telemetry):
        reply = server.request("GET", "/big", {"Accept-Encoding": "gzip"})
        [response] = telemetry.wait_for(RESPONSE, 1)
    assert reply.status == 200
    found = attrs(response)
    assert found["fileresp.bytes"] == big.stat().st_size
    assert found["fileresp.transfer"] == "read"


def test_starlette_first_request_times_the_lookup_as_the_stat(
    site: Path, telemetry: Telemetry
) -> None:
    """StaticFiles' one-off check of its directory (its own stat job) on the
    first request is a pool job of that response, not the file's stat: a
    stat of another path is no stat job (issue 21: by path, not by callable)."""
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(site)))])
    with serve_asgi(app) as server, instrumenting("starlette", telemetry):
        assert server.request("GET", "/static/app.js").status == 200
        assert server.request("GET", "/static/app.js").status == 200
        first, second = sorted(telemetry.wait_for(RESPONSE, 2), key=lambda s: s.start_time)
    spans = [s for s in telemetry.spans() if s.parent and s.parent.span_id == first.context.span_id]
    [stat] = [s for s in spans if s.name == "fileresp.stat"]
    waits = [s for s in spans if s.name == "fileresp.threadpool.wait"]
    jobs = [s.attributes.get("fileresp.threadpool.job") for s in waits]
    # The directory's stat job is no wait span of a stat: only the file's
    # lookup (or, up to Starlette 0.16, the lookup's stat jobs) is; the stat
    # phase starts once the first of those began.
    assert jobs.count("lookup") + jobs.count("stat") >= 1
    first_wait_end = min(
        s.end_time for s in waits if s.attributes["fileresp.threadpool.job"] != "open"
    )
    assert stat.start_time >= first_wait_end
    # It is one more job of the first response.
    assert (
        first.attributes["fileresp.threadpool.jobs"]
        == second.attributes["fileresp.threadpool.jobs"] + 1
    )


@pytest.mark.skipif(
    int(metadata.version("anyio").split(".")[0]) < 4,
    reason="anyio 3 (the Starlette 0.16 session) does not run on current trio",
)
@pytest.mark.parametrize("path", ["/static/big.bin", "/f"])
def test_starlette_on_trio_complete_bodies_are_complete(
    site: Path, telemetry: Telemetry, path: str
) -> None:
    """hypercorn's trio worker delivers the final body message, then cancels the
    sender on http.disconnect (Starlette 1.8+ streams from a child task)."""
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    size = 200_000
    (site / "big.bin").write_bytes(b"b" * size)
    app = Starlette(
        routes=[
            Route("/f", lambda request: FileResponse(site / "big.bin")),
            Mount("/static", StaticFiles(directory=str(site))),
        ]
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.loglevel = "ERROR"
    replies: list[Any] = []

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: serve(app, config, shutdown_trigger=stop.wait))
            with trio.fail_after(10):
                while True:
                    try:
                        await trio.open_tcp_stream("127.0.0.1", port)
                        break
                    except OSError:
                        await trio.sleep(0.05)
            server = LoopbackServer(port, None)  # type: ignore[arg-type]
            replies.append(await trio.to_thread.run_sync(lambda: server.request("GET", path)))
            await trio.sleep(0.2)
            stop.set()

    with instrumenting("starlette", telemetry):
        trio.run(main)
    [reply] = replies
    assert (reply.status, len(reply.body)) == (200, size)
    [response] = telemetry.wait_for(RESPONSE, 1)
    found = attrs(response)
    assert (found["fileresp.outcome"], found["fileresp.bytes"]) == ("sent", size)
    assert "error.type" not in found
