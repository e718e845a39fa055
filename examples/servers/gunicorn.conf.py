"""gunicorn settings for an app run under ``opentelemetry-instrument``.

    opentelemetry-instrument gunicorn -c gunicorn.conf.py --workers 2 \\
        --worker-class uvicorn_worker.UvicornWorker starlette_app:app

With OTLP (``OTEL_METRICS_EXPORTER=otlp``, the default) nothing here is
needed: ``opentelemetry-instrument`` sets up the SDK in the master, and each
forked worker exports its own spans and metrics (the SDK restarts its
export threads after a fork). Flushing on shutdown is the app's job (its
lifespan or ``on_cleanup``, see starlette_app.py and aiohttp_app.py):
gunicorn's ``worker_exit`` hook does not run for ``UvicornWorker``, whose
workers die of the SIGTERM that uvicorn re-raises.

With the Prometheus pull exporter (``OTEL_METRICS_EXPORTER=prometheus``) the
master binds ``OTEL_EXPORTER_PROMETHEUS_PORT`` (default 9464) before forking
and answers every scrape itself, from its own meter provider, which never
served a request: no ``fileresp_*`` series. ``post_fork`` below gives each
worker its own metrics endpoint, on the first free port after it:
PORT+1 ... PORT+workers. Point Prometheus at those ports (each worker is one
target, its own ``instance``), not at PORT.
"""

from __future__ import annotations

import os
from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    exporters = os.environ.get("OTEL_METRICS_EXPORTER", "otlp").replace(" ", "").split(",")
    if "prometheus" not in exporters:
        return
    from prometheus_client import start_http_server

    host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
    base = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
    # The worker inherited the master's registry, which collects from this
    # process's copy of the meter provider: serving it here serves this worker.
    for port in range(base + 1, base + 1 + server.cfg.workers):
        try:
            start_http_server(port, addr=host)
        except OSError:  # taken by another worker
            continue
        server.log.info("worker %s: Prometheus metrics on %s:%s", worker.pid, host, port)
        return
    server.log.warning("worker %s: no free Prometheus port after %s", worker.pid, base)
