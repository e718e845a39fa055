# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Serve the probe's scenarios with the installed frameworks and record what happened.

How each framework is served (in this process, nothing but loopback):

- **Starlette** (and **FastAPI**): ``Starlette(routes=[Mount("/static",
  StaticFiles(directory=...)), Route("/handler/{name}", ...)])`` (``FastAPI()``
  with the same mount and route) is called as an ASGI application, inside
  ``anyio.run`` on asyncio, so every worker-thread job goes through anyio's
  real thread pool. The scope is the
  one uvicorn's HTTP/1.1 server passes (ASGI ``spec_version`` 2.3, no
  ``http.response.pathsend`` extension), so Starlette 1.8+ streams the body
  from a child task and no release hands the file to the server. Body bytes
  are what the application sent (a server would drop a HEAD body);
- **aiohttp**: ``web.static("/static", ...)`` and ``/handler/{name}`` served by a real
  ``web.AppRunner`` on ``127.0.0.1`` and an ephemeral port, asked with a
  minimal HTTP/1.1 client over a socket (``Connection: close``), so aiohttp's
  own HTTP machinery, executor and ``sendfile`` run. Body bytes are what
  arrived after the head.

Each framework first answers one warm-up request (not recorded: Starlette's
``check_config`` runs then, and the validators are taken from it); then the
scenarios run in turn, ``runs`` times over (round by round, so a slow moment
of the machine spreads over all scenarios).

The telemetry comes from this package's instrumentation, recorded by
:func:`otel_fileresp.testing.recording` (an SDK tracer provider with an
in-memory exporter, made for the probe and never made global); a framework
that was not instrumented before is uninstrumented afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from otel_fileresp import _names as n
from otel_fileresp.probe.scenarios import PAGE, Scenario, make_files, scenarios_for
from otel_fileresp.version import __version__

if TYPE_CHECKING:
    from otel_fileresp.testing import FileResponseRecorder

#: The frameworks the probe knows, in the order it runs them.
FRAMEWORKS: Final = ("starlette", "fastapi", "aiohttp")
#: Distributions whose versions each framework's result names.
VERSION_DISTRIBUTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "starlette": ("starlette", "anyio"),
    "fastapi": ("fastapi", "starlette", "anyio"),
    "aiohttp": ("aiohttp", "yarl"),
}
#: The phase keys of the medians: the whole response, then the phases.
TIMED_PHASES: Final = ("response", *n.PHASES)
SCHEMA: Final = "otel-fileresp-probe"
SCHEMA_VERSION: Final = 1
REQUEST_TIMEOUT: Final = 30.0
_PHASE_BY_SPAN: Final = n.PHASE_OF_SPAN
_MOUNT: Final = "/static"
_HANDLER: Final = "/handler"


class ProbeError(Exception):
    """The probe cannot run (a framework asked for is not installed, say)."""


@dataclass(frozen=True)
class Reply:
    """What the client got."""

    status: int
    headers: Mapping[str, str]
    body_bytes: int


@dataclass(frozen=True)
class Observation:
    """One request of one scenario: the reply, and the file response the package recorded."""

    reply: Reply
    #: False when the package recorded no ``fileresp.response`` for the request.
    recorded: bool
    opened: bool | None = None
    pool_jobs: int | None = None
    outcome: str | None = None
    phases: tuple[str, ...] = ()
    precondition_header: str | None = None
    precondition_result: str | None = None
    #: phase -> milliseconds (``response`` is the whole response).
    durations_ms: Mapping[str, float] = field(default_factory=dict)


def installed(framework: str) -> bool:
    """Whether ``framework`` (``starlette``, ``fastapi``, ``aiohttp``) can be imported."""
    return importlib.util.find_spec(framework) is not None


def versions_of(framework: str) -> dict[str, str]:
    """The installed versions of ``framework`` and the libraries that shape its file responses."""
    found: dict[str, str] = {}
    for distribution in VERSION_DISTRIBUTIONS[framework]:
        try:
            found[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return found


def environment() -> dict[str, object]:
    """Who measured: the package, Python and platform."""
    return {
        "package": "otel-fileresp",
        "package_version": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": sys.platform,
    }


def run_probe(frameworks: Iterable[str], runs: int) -> dict[str, Any]:
    """Run every scenario ``runs`` times on each of ``frameworks``; the result as a JSON-ready dict.

    The dict is what ``--save`` writes (see :mod:`otel_fileresp.probe`).
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    from otel_fileresp.testing import recording

    chosen = list(frameworks)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="otel-fileresp-probe-") as tmp:
        root = Path(tmp) / "files"
        root.mkdir()
        make_files(root)
        with recording(capture_path="name", phase_spans=True) as recorder:
            for framework in chosen:
                observations = _serve(framework, root, recorder, runs)
                results.append(
                    {
                        "framework": framework,
                        "versions": versions_of(framework),
                        "served_by": _SERVED_BY[framework],
                        "scenarios": [
                            _summary(scenario, observed)
                            for scenario, observed in observations.items()
                        ],
                    }
                )
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **environment(),
        "runs": runs,
        "frameworks": results,
    }


_SERVED_BY: Final = {
    "starlette": "Starlette StaticFiles, ASGI call (spec_version 2.3) in anyio.run",
    "fastapi": "FastAPI app.mount(StaticFiles), ASGI call (spec_version 2.3) in anyio.run",
    "aiohttp": "aiohttp web.static, AppRunner on 127.0.0.1 (ephemeral port)",
}


def _serve(
    framework: str, root: Path, recorder: FileResponseRecorder, runs: int
) -> dict[Scenario, list[Observation]]:
    scenarios = scenarios_for(framework)
    if framework == "aiohttp":
        return asyncio.run(_serve_aiohttp(root, recorder, scenarios, runs))
    import anyio

    async def serve_asgi() -> dict[Scenario, list[Observation]]:
        return await _serve_asgi(framework, root, recorder, scenarios, runs)

    result: dict[Scenario, list[Observation]] = anyio.run(serve_asgi, backend="asyncio")
    return result


Requester = Callable[[str, str, list[tuple[str, str]]], Awaitable[Reply]]


async def _rounds(
    request: Requester,
    recorder: FileResponseRecorder,
    scenarios: tuple[Scenario, ...],
    runs: int,
    *,
    on_loop: bool,
) -> dict[Scenario, list[Observation]]:
    """The warm-up request, then ``runs`` rounds of every scenario."""
    warm_up = await request("GET", f"{_MOUNT}/{PAGE}", [])
    etag, last_modified = warm_up.headers.get("etag"), warm_up.headers.get("last-modified")
    if on_loop:
        await recorder.asettle()
    observations: dict[Scenario, list[Observation]] = {s: [] for s in scenarios}
    for _ in range(runs):
        for scenario in scenarios:
            recorder.clear()
            headers = scenario.request_headers(etag, last_modified)
            reply = await request(scenario.method, scenario.path, headers)
            responses = await recorder.asettle() if on_loop else recorder.responses
            observations[scenario].append(_observation(reply, recorder, responses))
    return observations


def _observation(reply: Reply, recorder: FileResponseRecorder, responses: list[Any]) -> Observation:
    if not responses:
        return Observation(reply, recorded=False)
    response = responses[0]
    span_id = response.span.context.span_id
    children = [
        span
        for span in recorder.spans()
        if span.parent is not None and span.parent.span_id == span_id
    ]
    names = {_PHASE_BY_SPAN[s.name] for s in children if s.name in _PHASE_BY_SPAN}
    phases = tuple(phase for phase in n.PHASES if phase in names)
    header = result = None
    for span in children:
        if span.name == n.SPAN_PRECONDITION:
            attributes = span.attributes or {}
            found_header = attributes.get(n.ATTR_PRECONDITION_HEADER)
            found_result = attributes.get(n.ATTR_PRECONDITION_RESULT)
            header = found_header if isinstance(found_header, str) else None
            result = found_result if isinstance(found_result, str) else None
    durations = {"response": response.duration * 1000.0}
    for phase in phases:
        if phase in response.phases:
            durations[phase] = response.phases[phase] * 1000.0
    return Observation(
        reply,
        recorded=True,
        opened=response.opened,
        pool_jobs=response.threadpool_jobs,
        outcome=response.outcome,
        phases=phases,
        precondition_header=header,
        precondition_result=result,
        durations_ms=durations,
    )


def _summary(scenario: Scenario, observed: list[Observation]) -> dict[str, Any]:
    """The facts of a scenario over its runs (the worst of each, when runs differ)."""
    first = observed[0]
    recorded = [o for o in observed if o.recorded]
    facts = [
        (
            o.reply.status,
            o.reply.body_bytes,
            o.recorded,
            o.opened,
            o.pool_jobs,
            o.phases,
            o.precondition_header,
        )
        for o in observed
    ]
    phases = {phase for o in recorded for phase in o.phases}
    medians = {
        phase: round(statistics.median(values), 6)
        for phase in TIMED_PHASES
        if (values := [o.durations_ms[phase] for o in recorded if phase in o.durations_ms])
    }
    return {
        "name": scenario.name,
        "description": scenario.description,
        "method": scenario.method,
        "file": scenario.file,
        "expected_status": list(scenario.expected),
        "status": first.reply.status,
        "body_bytes": max(o.reply.body_bytes for o in observed),
        "content_encoding": first.reply.headers.get("content-encoding", "identity"),
        "recorded": bool(recorded),
        "opened": any(o.opened for o in recorded) if recorded else None,
        "pool_jobs": max(o.pool_jobs or 0 for o in recorded) if recorded else None,
        "outcome": recorded[0].outcome if recorded else None,
        "phases": [phase for phase in n.PHASES if phase in phases],
        "precondition_header": first.precondition_header,
        "precondition_result": first.precondition_result,
        "stable": len(set(facts)) == 1,
        "median_ms": medians,
    }


# -- Starlette and FastAPI ----------------------------------------------------


def _asgi_app(framework: str, root: Path) -> Any:
    from starlette.responses import FileResponse
    from starlette.staticfiles import StaticFiles

    async def handler(request: Any) -> Any:
        return FileResponse(str(root / request.path_params["name"]))

    if framework == "fastapi":
        # Imported by name: FastAPI is optional, and absent where mypy runs.
        fastapi: Any = importlib.import_module("fastapi")

        async def fastapi_handler(name: str) -> Any:
            return FileResponse(str(root / name))

        app = fastapi.FastAPI()
        app.mount(_MOUNT, StaticFiles(directory=str(root)))
        app.add_api_route(f"{_HANDLER}/{{name}}", fastapi_handler, methods=["GET", "HEAD"])
        return app
    from starlette.applications import Starlette
    from starlette.routing import Mount, Route

    return Starlette(
        routes=[
            Mount(_MOUNT, app=StaticFiles(directory=str(root))),
            Route(f"{_HANDLER}/{{name}}", handler),
        ]
    )


async def _serve_asgi(
    framework: str,
    root: Path,
    recorder: FileResponseRecorder,
    scenarios: tuple[Scenario, ...],
    runs: int,
) -> dict[Scenario, list[Observation]]:
    import anyio

    app = _asgi_app(framework, root)

    async def request(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
        with anyio.fail_after(REQUEST_TIMEOUT):
            return await _asgi_request(app, method, path, headers)

    return await _rounds(request, recorder, scenarios, runs, on_loop=False)


async def _asgi_request(app: Any, method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    """Call the ASGI ``app`` once, as uvicorn's HTTP/1.1 server would; what it sent."""
    import anyio

    finished = anyio.Event()
    request_sent = False
    status = 0
    response_headers: dict[str, str] = {}
    body_bytes = 0

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()  # the client stays until the response is complete
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        nonlocal status, body_bytes
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers", ()):
                response_headers[bytes(name).decode("latin-1").lower()] = bytes(value).decode(
                    "latin-1"
                )
        elif message["type"] == "http.response.body":
            body_bytes += len(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    try:
        await app(scope, receive, send)
    finally:
        finished.set()
    return Reply(status, response_headers, body_bytes)


# -- aiohttp ------------------------------------------------------------------


async def _serve_aiohttp(
    root: Path,
    recorder: FileResponseRecorder,
    scenarios: tuple[Scenario, ...],
    runs: int,
) -> dict[Scenario, list[Observation]]:
    from aiohttp import web

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(root / request.match_info["name"])

    app = web.Application()
    app.router.add_static(_MOUNT, str(root))
    app.router.add_get(f"{_HANDLER}/{{name}}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    try:
        site = web.SockSite(runner, sock)
        await site.start()

        async def request(method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
            return await asyncio.wait_for(
                _http_request(port, method, path, headers), REQUEST_TIMEOUT
            )

        return await _rounds(request, recorder, scenarios, runs, on_loop=True)
    finally:
        await runner.cleanup()
        sock.close()


async def _http_request(port: int, method: str, path: str, headers: list[tuple[str, str]]) -> Reply:
    """One HTTP/1.1 request on a new connection; the status, headers and body length."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        data = await reader.read()  # to the end: the server closes
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return Reply(status, parsed, len(body))
