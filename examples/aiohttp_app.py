"""An aiohttp app serving files two ways: ``web.static`` and a ``web.FileResponse`` handler.

Routes: ``/static/{path}`` (``web.static``) and ``/download/{name}`` (a handler
returning ``web.FileResponse``); both answer 304 to a matching If-None-Match
or If-Modified-Since. Files come from ``FILERESP_EXAMPLE_STATIC`` (default:
``examples/static``).

Run it from this directory, with the package installed from the root of
your clone (``python -m pip install . aiohttp opentelemetry-distro
opentelemetry-exporter-otlp``; ``otel-fileresp`` is the PyPI name for a
release):

Auto-instrumentation (``opentelemetry-instrument`` loads ``fileresp_aiohttp``;
add ``opentelemetry-instrumentation-aiohttp-server`` for a server span per
request; note that span reports 200 for a 304, ``fileresp.response`` does not)::

    OTEL_SERVICE_NAME=files-aiohttp \\
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \\
      opentelemetry-instrument python aiohttp_app.py --port 8080

Manual set-up (``otel_setup.configure``), no ``opentelemetry-instrument``::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 python aiohttp_app.py --manual

``web.run_app`` stops cleanly on Ctrl-C or SIGTERM, and the SDK flushes at exit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from aiohttp import web

STATIC = Path(os.environ.get("FILERESP_EXAMPLE_STATIC", Path(__file__).parent / "static"))


async def download(request: web.Request) -> web.FileResponse:
    name = Path(request.match_info["name"]).name  # a name, never a path
    return web.FileResponse(STATIC / name)


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/download/{name}", download)
    app.router.add_routes([web.static("/static", STATIC)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual", action="store_true", help="set up OpenTelemetry in code")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if args.manual:
        import otel_setup

        otel_setup.configure("files-aiohttp")
    try:
        web.run_app(make_app(), host=args.host, port=args.port)
    finally:
        if args.manual:
            otel_setup.shutdown()


if __name__ == "__main__":
    main()
