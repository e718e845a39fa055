"""gunicorn settings for an app run under ``opentelemetry-instrument``.

    opentelemetry-instrument gunicorn -c gunicorn.conf.py --workers 2 \\
        --worker-class uvicorn_worker.UvicornWorker starlette_app:app

With OTLP (``OTEL_METRICS_EXPORTER=otlp``, the default, and the way we
recommend for several workers: push to a Collector, see
examples/collector/) nothing here is needed: ``opentelemetry-instrument``
sets up the SDK in the master, each forked worker exports its own spans and
metrics (the SDK restarts its export threads after a fork), and
otel_fileresp flushes each worker when its app shuts down.

With the Prometheus pull exporter (``OTEL_METRICS_EXPORTER=prometheus``) the
master binds ``OTEL_EXPORTER_PROMETHEUS_PORT`` (default 9464) before forking
and answers every scrape itself, from its own meter provider, which never
served a request: no ``fileresp_*`` series. ``post_fork`` below gives each
worker its own metrics endpoint, on the first free port after it:
PORT+1 ... PORT+workers. Point Prometheus at those ports (each worker is one
target, its own ``instance``), not at PORT. A worker that finds no free port
logs at ERROR (``no free Prometheus port``) in gunicorn's error log, and its
target is down in Prometheus (``up == 0``): alert on both.
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
    # ERROR, not WARNING: this worker's metrics are scraped by no one.
    server.log.error(
        "worker %s: no free Prometheus port in %s-%s: its metrics are NOT served",
        worker.pid,
        base + 1,
        base + server.cfg.workers,
    )
