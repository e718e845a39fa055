"""A small aiohttp app for the auto-instrumentation tests.

    FILERESP_TEST_STATIC_DIR=/some/dir opentelemetry-instrument \\
        python tests/apps/aiohttp_app.py --port PORT

It has no instrumentation code of its own: ``opentelemetry-instrument`` loads
``fileresp_aiohttp`` (and contrib's ``aiohttp-server``, which makes the SERVER
spans) through their entry points. It serves ``FILERESP_TEST_STATIC_DIR`` on
127.0.0.1 with ``web.run_app``, which stops cleanly on SIGINT or SIGTERM, so
the SDK flushes its exporters at exit.

``make_app(static_dir)`` builds the same app for in-process tests.

Routes: ``/static/...`` (``web.static``), ``/file/{name}`` (a handler
returning ``web.FileResponse``), ``/settled`` (waits, at most
:data:`SETTLE_LIMIT_S`, until no file response of this process is in flight,
and answers how many still are) and ``/info`` (pid and which frameworks this
process imported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from aiohttp import web

SETTLE_LIMIT_S = 5.0


async def info(request: web.Request) -> web.Response:
    loaded = sorted(m for m in ("aiohttp", "starlette") if m in sys.modules)
    body = json.dumps({"pid": os.getpid(), "frameworks_loaded": loaded})
    return web.Response(text=body, content_type="application/json")


async def settled(request: web.Request) -> web.Response:
    from otel_fileresp._telemetry import responses_in_flight

    deadline = time.monotonic() + SETTLE_LIMIT_S
    while responses_in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return web.Response(text=str(responses_in_flight()))


def make_app(static_dir: Path) -> web.Application:
    """The app serving ``static_dir``; ``web.Application`` is looked up at call time."""

    async def file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static_dir / request.match_info["name"])

    app = web.Application()
    app.router.add_get("/info", info)
    app.router.add_get("/settled", settled)
    app.router.add_get("/file/{name}", file)
    app.router.add_routes([web.static("/static", static_dir)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("FILERESP_TEST_PORT", "0")))
    args = parser.parse_args()
    static_dir = Path(os.environ["FILERESP_TEST_STATIC_DIR"])
    web.run_app(make_app(static_dir), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
