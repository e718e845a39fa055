# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""OpenTelemetry spans and metrics for the phases of file responses.

otel_fileresp instruments the file-serving code of **Starlette**
(``FileResponse``, ``StaticFiles``; FastAPI re-exports both) and **aiohttp**
(``web.FileResponse``, ``web.static``) and shows where a file response spends
its time: the stat, the precondition check, the open, the wait for a worker
thread, and the body send. A 304 that opened the file, or a pool that queues
jobs under load, is visible in traces, in metrics and in tests.

Usage
-----
Automatic, with ``opentelemetry-instrument`` (both entry points,
``fileresp_starlette`` and ``fileresp_aiohttp``, load by themselves)::

    opentelemetry-instrument uvicorn app:app

Manual::

    from otel_fileresp import StarletteFileResponseInstrumentor
    from otel_fileresp import AiohttpFileResponseInstrumentor

    StarletteFileResponseInstrumentor().instrument()
    AiohttpFileResponseInstrumentor().instrument(phase_spans=False)

``instrument()`` takes ``tracer_provider``, ``meter_provider``,
``capture_path`` (``"name"``, ``"full"``, ``"none"``), ``phase_spans``,
``phase_metrics`` and ``metrics``; see :mod:`otel_fileresp.settings`. Apps,
routes and subclasses created before ``instrument()`` are covered;
``uninstrument()`` restores the originals.

Telemetry
---------
One ``fileresp.response`` span per file response (a child of the request's
server span, or a root span), with children ``fileresp.stat``,
``fileresp.precondition``, ``fileresp.open``, ``fileresp.threadpool.wait`` and
``fileresp.send``; at most 8 spans whatever the file size, and no span work
at all for a response whose parent is not sampled under a ``parentbased_*``
sampler. Metrics, for every response, sampled or not: one
``fileresp.duration`` point, one ``fileresp.phase.duration`` point for the
response's total worker-pool wait (other phases on request), and the
observable counter ``fileresp.opens``. docs/telemetry.md lists every name
and attribute.

Testing
-------
:mod:`otel_fileresp.testing` records an app's file responses in tests and
asserts on them (``recording()``, the ``fileresp_recorder`` pytest fixture).

Public API
----------
The two instrumentors and ``__version__`` here, and the names of
:mod:`otel_fileresp.testing` (and its pytest plugin). Everything in a module
whose name starts with an underscore is internal.
"""

from otel_fileresp.aiohttp import AiohttpFileResponseInstrumentor
from otel_fileresp.starlette import StarletteFileResponseInstrumentor
from otel_fileresp.version import __version__

__all__ = [
    "AiohttpFileResponseInstrumentor",
    "StarletteFileResponseInstrumentor",
    "__version__",
]
