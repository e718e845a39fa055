"""A Starlette app for ASGI servers that stop with SIGTERM: no OpenTelemetry code at all.

The app serves ``FILERESP_EXAMPLE_STATIC`` (default: ``examples/static``) at
``/static/...`` through ``StaticFiles``. When the server shuts down (SIGTERM
or SIGINT) it runs the app's lifespan shutdown after the last response, and
otel_fileresp flushes the tracer and meter providers that
``opentelemetry-instrument`` (or your own set-up) installed there
(``OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN``, on by default; see
docs/servers.md). Run it from this directory:

gunicorn with uvicorn's worker (``pip install gunicorn uvicorn-worker``)::

    opentelemetry-instrument gunicorn -c gunicorn.conf.py --workers 2 \\
        --worker-class uvicorn_worker.UvicornWorker --bind 127.0.0.1:8000 starlette_app:app

hypercorn::

    opentelemetry-instrument hypercorn --workers 2 --bind 127.0.0.1:8000 starlette_app:app

granian (answers with ``http.response.pathsend``: the server opens the file)::

    opentelemetry-instrument granian --interface asgi --workers 2 \\
        --host 127.0.0.1 --port 8000 starlette_app:app

uvicorn::

    opentelemetry-instrument uvicorn --host 127.0.0.1 --port 8000 starlette_app:app
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC = Path(os.environ.get("FILERESP_EXAMPLE_STATIC", Path(__file__).parent.parent / "static"))

app = Starlette(routes=[Mount("/static", StaticFiles(directory=STATIC))])
