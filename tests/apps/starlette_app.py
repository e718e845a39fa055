"""A small Starlette app for the auto-instrumentation tests, run by uvicorn.

    FILERESP_TEST_STATIC_DIR=/some/dir opentelemetry-instrument \\
        uvicorn starlette_app:app --app-dir tests/apps --host 127.0.0.1 --port PORT

It has no instrumentation code of its own: ``opentelemetry-instrument`` loads
``fileresp_starlette`` through its entry point. Environment:

- ``FILERESP_TEST_STATIC_DIR`` (required): the directory served;
- ``FILERESP_TEST_ASGI_MIDDLEWARE=1``: wrap the app in contrib's
  ``opentelemetry.instrumentation.asgi.OpenTelemetryMiddleware`` (contrib's
  Starlette instrumentation would do the same), so each request has a SERVER
  span;
- ``FILERESP_TEST_CONTROL_DIR``: where ``/hold/{token}`` meets the test.

``build_app(static_dir)`` builds the same app for in-process tests.

Routes: ``/static/...`` (``StaticFiles``), ``/file/{name}`` (a bare
``FileResponse``), ``/finishing/{name}`` (a ``FileResponse`` whose background
task runs :data:`FINISHING_S` after the last byte), ``/settled`` (waits, at
most :data:`SETTLE_LIMIT_S`, until no file response of this process is in
flight, and answers how many still are), ``/info`` (pid and which frameworks
this process imported) and ``/hold/{token}``, which writes ``held-TOKEN``
(containing the pid) and then **blocks this worker's event loop** until
``release-TOKEN`` exists (at most 20 s). While one uvicorn worker is held,
new connections can only be accepted by the other one: that is how the
``--workers 2`` test reaches both workers deterministically.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

HOLD_LIMIT_S = 20.0
FINISHING_S = 0.5
SETTLE_LIMIT_S = 5.0


async def info(request: Request) -> Response:
    loaded = sorted(m for m in ("aiohttp", "starlette") if m in sys.modules)
    body = json.dumps({"pid": os.getpid(), "frameworks_loaded": loaded})
    return Response(body, media_type="application/json")


async def settled(request: Request) -> Response:
    from otel_fileresp._telemetry import responses_in_flight

    deadline = time.monotonic() + SETTLE_LIMIT_S
    while responses_in_flight() and time.monotonic() < deadline:
        await anyio.sleep(0.005)
    return PlainTextResponse(str(responses_in_flight()))


def build_app(static_dir: Path, control_dir: Path | None = None) -> Starlette:
    """The app serving ``static_dir`` (``/hold`` meets the test in ``control_dir``)."""

    async def file(request: Request) -> Response:
        return FileResponse(static_dir / request.path_params["name"])

    async def finishing(request: Request) -> Response:
        return FileResponse(
            static_dir / request.path_params["name"],
            background=BackgroundTask(anyio.sleep, FINISHING_S),
        )

    async def hold(request: Request) -> Response:
        token = request.path_params["token"]
        meeting_point = control_dir or static_dir
        (meeting_point / f"held-{token}").write_text(str(os.getpid()))
        release = meeting_point / f"release-{token}"
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # on purpose: keeps this worker from accepting connections
        return PlainTextResponse(str(os.getpid()))

    return Starlette(
        routes=[
            Route("/info", info),
            Route("/file/{name}", file),
            Route("/finishing/{name}", finishing),
            Route("/settled", settled),
            Route("/hold/{token}", hold),
            Mount("/static", app=StaticFiles(directory=str(static_dir)), name="static"),
        ]
    )


def app_from_environment() -> Any:
    """The app uvicorn serves, configured by the environment variables above."""
    control_dir = os.environ.get("FILERESP_TEST_CONTROL_DIR")
    app: Any = build_app(
        Path(os.environ["FILERESP_TEST_STATIC_DIR"]), Path(control_dir) if control_dir else None
    )
    if os.environ.get("FILERESP_TEST_ASGI_MIDDLEWARE") == "1":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        app = OpenTelemetryMiddleware(app)
    return app


# Built at import only when run as a server; the in-process tests call build_app().
app = app_from_environment() if "FILERESP_TEST_STATIC_DIR" in os.environ else None
