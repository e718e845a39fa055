"""A Starlette app serving files two ways: a ``StaticFiles`` mount and a ``FileResponse`` route.

Routes: ``/static/{path}`` (``StaticFiles``, which answers 304 to a matching
If-None-Match or If-Modified-Since) and ``/download/{name}`` (a bare
``FileResponse``, which never answers 304). Files come from
``FILERESP_EXAMPLE_STATIC`` (default: ``examples/static``).

Run it from this directory, with the package and its example dependencies
installed from the root of your clone (``python -m pip install . starlette
uvicorn opentelemetry-distro opentelemetry-exporter-otlp``; ``otel-fileresp``
is the PyPI name for a release):

Auto-instrumentation (``opentelemetry-instrument`` loads ``fileresp_starlette``
through its entry point; add ``opentelemetry-instrumentation-starlette`` for a
server span per request)::

    OTEL_SERVICE_NAME=files-starlette \\
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \\
      opentelemetry-instrument uvicorn starlette_app:app --port 8000

Manual set-up (``otel_setup.configure``: SDK, OTLP/HTTP exporters and
``instrument()``), no ``opentelemetry-instrument``::

    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 python starlette_app.py --manual

Then ``curl -i localhost:8000/static/hello.txt`` (200, the file is opened) and
``curl -i -H 'If-None-Match: <the ETag>' localhost:8000/static/hello.txt``
(304, no ``fileresp.open``). examples/README.md says where to look.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(os.environ.get("FILERESP_EXAMPLE_STATIC", Path(__file__).parent / "static"))


async def download(request: Request) -> FileResponse:
    name = Path(request.path_params["name"]).name  # a name, never a path
    return FileResponse(STATIC / name, filename=name)


app = Starlette(
    routes=[
        Route("/download/{name}", download),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
)


def main(asgi_app: Any = app, service_name: str = "files-starlette") -> None:
    """``python starlette_app.py [--manual] [--host H] [--port P]``: serve with uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual", action="store_true", help="set up OpenTelemetry in code")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.manual:
        import otel_setup

        otel_setup.configure(service_name)
    try:
        uvicorn.run(asgi_app, host=args.host, port=args.port)
    finally:
        if args.manual:
            otel_setup.shutdown()


if __name__ == "__main__":
    main()
