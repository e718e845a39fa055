# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""``otel-fileresp probe``: what the installed Starlette, FastAPI, aiohttp do with file responses.

Command line::

    otel-fileresp probe [--framework starlette|fastapi|aiohttp|all] [--runs N]
                        [--save FILE] [--against FILE [--max-slowdown FACTOR] [--strict-opens]]

The probe serves a fixed set of scenarios (:mod:`otel_fileresp.probe.scenarios`)
with each installed framework, in process, with this package's
instrumentation and an in-memory SDK (it needs ``opentelemetry-sdk``, the
``test`` extra), and prints per framework and scenario: the status and body
bytes the client got, whether the served file was opened, the worker-pool
jobs, the phase spans present, the precondition header that decided, and the
median duration of each phase over ``--runs`` runs. How each framework is
served is in :mod:`otel_fileresp.probe.runner`.

``--save FILE`` writes the result as JSON::

    {
      "schema": "otel-fileresp-probe", "schema_version": 1,
      "created": "2026-12-04T22:39:44Z",
      "package": "otel-fileresp", "package_version": "0.1.0",
      "python": "3.11.7", "python_implementation": "CPython", "platform": "linux",
      "runs": 5,
      "frameworks": [
        {"framework": "aiohttp", "versions": {"aiohttp": "3.11.9", "yarl": "1.25.1"},
         "served_by": "...",
         "scenarios": [
           {"name": "not_modified_etag", "description": "...", "method": "GET",
            "file": "page.txt", "expected_status": [304],
            "status": 304, "body_bytes": 0, "content_encoding": "identity",
            "recorded": true, "opened": false, "pool_jobs": 2,
            "outcome": "not_modified", "phases": ["stat", "precondition", "threadpool.wait"],
            "precondition_header": "if-none-match", "precondition_result": "not_modified",
            "stable": true, "median_ms": {"response": 0.32, "stat": 0.006, ...}},
           ...]},
        ...]
    }

``recorded`` is false when the package recorded no file response (the
framework answered before serving a file: aiohttp 3.9's 404); ``opened`` and
``pool_jobs`` are then null. When runs disagree (``stable`` false) the worst
run's facts are kept: any open, the most jobs, every phase seen.

``--against FILE`` compares with a saved result and exits 1 when a fact got
worse; the rules are in :mod:`otel_fileresp.probe.compare`. Exit status 2:
bad arguments, an unreadable baseline, a framework asked for that is not
installed.

Python::

    from otel_fileresp.probe import compare, load_baseline, run_probe

    now = run_probe(["aiohttp"], runs=3)
    comparison = compare(load_baseline("probe-baseline.json"), now)
    assert not comparison.failed, comparison.of("worse")
"""

from __future__ import annotations

from otel_fileresp.probe.compare import BaselineError, Comparison, Finding, compare, load_baseline
from otel_fileresp.probe.runner import FRAMEWORKS, run_probe

__all__ = [
    "FRAMEWORKS",
    "BaselineError",
    "Comparison",
    "Finding",
    "compare",
    "load_baseline",
    "run_probe",
]
