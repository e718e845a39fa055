"""An aiohttp app for gunicorn's ``GunicornWebWorker``: it flushes telemetry on cleanup.

The app serves ``FILERESP_EXAMPLE_STATIC`` (default: ``examples/static``) at
``/static/...`` through ``web.static``. Its only OpenTelemetry code is the
``on_cleanup`` callback, which runs after the last response of a stopping
worker and flushes the tracer and meter providers. Run it from this
directory (``pip install gunicorn aiohttp``)::

    opentelemetry-instrument gunicorn -c gunicorn.conf.py --workers 2 \\
        --worker-class aiohttp.GunicornWebWorker --bind 127.0.0.1:8080 aiohttp_app:make_app

gunicorn calls ``make_app()`` (a coroutine function) in each worker.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web
from opentelemetry import metrics, trace

STATIC = Path(os.environ.get("FILERESP_EXAMPLE_STATIC", Path(__file__).parent.parent / "static"))


async def flush_telemetry(app: web.Application) -> None:
    """Export what the SDK still holds (no-op without an SDK)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush is not None:
            force_flush()


async def make_app() -> web.Application:
    app = web.Application()
    app.router.add_routes([web.static("/static", STATIC)])
    # on_cleanup, not on_shutdown: it runs once the responses in flight are done.
    app.on_cleanup.append(flush_telemetry)
    return app
