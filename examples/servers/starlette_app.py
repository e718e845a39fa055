"""A Starlette app for ASGI servers that stop with SIGTERM: it flushes telemetry on shutdown.

The app serves ``FILERESP_EXAMPLE_STATIC`` (default: ``examples/static``) at
``/static/...`` through ``StaticFiles``. Its only OpenTelemetry code is the
lifespan below: when the server shuts down (SIGTERM or SIGINT), it flushes
the tracer and meter providers that ``opentelemetry-instrument`` (or your own
set-up) installed. Without it, gunicorn's ``UvicornWorker``, uvicorn and
granian lose every span and metric point still buffered in the worker (see
docs/servers.md for the figures). Run it from this directory:

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from opentelemetry import metrics, trace
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

STATIC = Path(os.environ.get("FILERESP_EXAMPLE_STATIC", Path(__file__).parent.parent / "static"))


def flush_telemetry() -> None:
    """Export what the SDK still holds (no-op without an SDK)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush()


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    yield
    # The server has stopped accepting and finished the responses in flight.
    flush_telemetry()


app = Starlette(routes=[Mount("/static", StaticFiles(directory=STATIC))], lifespan=lifespan)
