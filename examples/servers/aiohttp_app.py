"""An aiohttp app for gunicorn's ``GunicornWebWorker``: no OpenTelemetry code at all.

The app serves ``FILERESP_EXAMPLE_STATIC`` (default: ``examples/static``) at
``/static/...`` through ``web.static``. When a worker stops (SIGTERM),
aiohttp cleans the application up after its last response and otel_fileresp
flushes the tracer and meter providers then
(``OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN``, on by default; see
docs/servers.md). Run it from this directory (``pip install gunicorn aiohttp``)::

    opentelemetry-instrument gunicorn -c gunicorn.conf.py --workers 2 \\
        --worker-class aiohttp.GunicornWebWorker --bind 127.0.0.1:8080 aiohttp_app:make_app

gunicorn calls ``make_app()`` (a coroutine function) in each worker.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

STATIC = Path(os.environ.get("FILERESP_EXAMPLE_STATIC", Path(__file__).parent.parent / "static"))


async def make_app() -> web.Application:
    app = web.Application()
    app.router.add_routes([web.static("/static", STATIC)])
    return app
