# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The telemetry contract's names, in one place.

Span, attribute, metric and setting names are the package's public surface
(dashboards, TraceQL queries and alerts are built on them). Both framework
modules import them from here; nothing else spells them.
"""

from typing import Final

INSTRUMENTATION_NAME: Final = "otel_fileresp"

# Spans (kind INTERNAL).
SPAN_RESPONSE: Final = "fileresp.response"
SPAN_STAT: Final = "fileresp.stat"
SPAN_PRECONDITION: Final = "fileresp.precondition"
SPAN_OPEN: Final = "fileresp.open"
SPAN_THREADPOOL_WAIT: Final = "fileresp.threadpool.wait"
SPAN_SEND: Final = "fileresp.send"
MAX_SPANS_PER_RESPONSE: Final = 8

# Attributes on fileresp.response.
ATTR_FRAMEWORK: Final = "fileresp.framework"
ATTR_STATUS_CODE: Final = "http.response.status_code"
ATTR_OUTCOME: Final = "fileresp.outcome"
ATTR_OPENED: Final = "fileresp.opened"
ATTR_TRANSFER: Final = "fileresp.transfer"
ATTR_BYTES: Final = "fileresp.bytes"
ATTR_JOBS: Final = "fileresp.threadpool.jobs"
ATTR_WAIT: Final = "fileresp.threadpool.wait"
ATTR_WAIT_MAX: Final = "fileresp.threadpool.wait.max"
ATTR_FILE_SIZE: Final = "file.size"
ATTR_FILE_NAME: Final = "file.name"
ATTR_FILE_PATH: Final = "file.path"
ATTR_ERROR_TYPE: Final = "error.type"
# Which representation was served: "br", "gzip" or "identity" (aiohttp's
# pre-compressed variants; Starlette always serves "identity").
ATTR_CONTENT_ENCODING: Final = "fileresp.content_encoding"

# Attributes on phase spans.
ATTR_PRECONDITION_RESULT: Final = "fileresp.precondition.result"
ATTR_PRECONDITION_HEADER: Final = "fileresp.precondition.header"
ATTR_JOB: Final = "fileresp.threadpool.job"
ATTR_READ_COUNT: Final = "fileresp.read.count"
ATTR_PHASE: Final = "fileresp.phase"

FRAMEWORK_STARLETTE: Final = "starlette"
FRAMEWORK_AIOHTTP: Final = "aiohttp"

# fileresp.outcome values.
OUTCOME_SENT: Final = "sent"
OUTCOME_PARTIAL: Final = "partial"
OUTCOME_NOT_MODIFIED: Final = "not_modified"
OUTCOME_PRECONDITION_FAILED: Final = "precondition_failed"
OUTCOME_RANGE_NOT_SATISFIABLE: Final = "range_not_satisfiable"
OUTCOME_HEAD: Final = "head"
OUTCOME_REDIRECT: Final = "redirect"  # 3xx other than 304
OUTCOME_NOT_FOUND: Final = "not_found"
OUTCOME_FORBIDDEN: Final = "forbidden"
OUTCOME_METHOD_NOT_ALLOWED: Final = "method_not_allowed"
OUTCOME_ERROR: Final = "error"
# error.type when the framework returned without handing over the whole body
# and without an exception (Starlette 1.8+ on http.disconnect mid-body).
ERROR_INCOMPLETE_BODY: Final = "incomplete_body"

# fileresp.transfer values.
TRANSFER_SENDFILE: Final = "sendfile"
TRANSFER_READ: Final = "read"
TRANSFER_PATHSEND: Final = "pathsend"
TRANSFER_NONE: Final = "none"

# fileresp.precondition.result values.
PRECONDITION_NOT_MODIFIED: Final = "not_modified"
PRECONDITION_FAILED: Final = "precondition_failed"
PRECONDITION_RANGE_IGNORED: Final = "range_ignored"
PRECONDITION_PASS: Final = "pass"
PRECONDITION_NONE: Final = "none"

# fileresp.threadpool.job values (jobs that get their own wait span), and the
# kinds that are only counted (reads and seeks aggregate on fileresp.send).
JOB_STAT: Final = "stat"
JOB_LOOKUP: Final = "lookup"
JOB_OPEN: Final = "open"
JOB_MAKE_RESPONSE: Final = "make_response"
JOB_READ: Final = "read"
JOB_CLOSE: Final = "close"
JOB_OTHER: Final = "other"

# fileresp.phase values (metric attribute) and the matching span names.
PHASE_STAT: Final = "stat"
PHASE_PRECONDITION: Final = "precondition"
PHASE_OPEN: Final = "open"
PHASE_THREADPOOL_WAIT: Final = "threadpool.wait"
PHASE_SEND: Final = "send"
PHASES: Final = (PHASE_STAT, PHASE_PRECONDITION, PHASE_OPEN, PHASE_THREADPOOL_WAIT, PHASE_SEND)
#: The span of each phase, in the order of PHASES (``threadpool.wait``: one
#: span per stat, lookup, open or make_response job).
SPAN_OF_PHASE: Final = {
    PHASE_STAT: SPAN_STAT,
    PHASE_PRECONDITION: SPAN_PRECONDITION,
    PHASE_OPEN: SPAN_OPEN,
    PHASE_THREADPOOL_WAIT: SPAN_THREADPOOL_WAIT,
    PHASE_SEND: SPAN_SEND,
}
#: The phase of each phase span: the one inverted map of the package.
PHASE_OF_SPAN: Final = {span: phase for phase, span in SPAN_OF_PHASE.items()}


def phase_duration_attribute(phase: str) -> str:
    """``fileresp.<phase>.duration``: a phase's seconds on ``fileresp.response``
    when phase spans are off (``OTEL_PYTHON_FILERESP_PHASE_SPANS=false``)."""
    return f"fileresp.{phase}.duration"


# fileresp.precondition.header values the package names itself (the others
# are the request's conditional header names, lower-cased).
HEADER_IF_RANGE: Final = "if-range"
# fileresp.content_encoding of a file served as it is (no .br/.gz variant).
ENCODING_IDENTITY: Final = "identity"

# The semantic-conventions schema the tracer and meter are made with.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.37.0"

# Metrics.
METRIC_DURATION: Final = "fileresp.duration"
METRIC_PHASE_DURATION: Final = "fileresp.phase.duration"
METRIC_OPENS: Final = "fileresp.opens"
# Histogram bucket advice for file work, 10 µs to 10 s (issue 18): the
# sub-millisecond part 1-2.5-5 per decade; from 1 ms to 5 s ten a decade
# (rounded Renard R'10, each about 1.26 x the last), so that the documented
# histogram_quantile queries read p50/p95/p99 within 15 % (measured in
# benchmarks/quantiles.py, pinned by tests/prometheus/test_quantiles.py). A superset of
# the earlier 1-2.5-5 boundaries: every le of those still exists.
DURATION_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.00125, 0.0016, 0.002, 0.0025, 0.0032, 0.004, 0.005, 0.0063, 0.008,
    0.01, 0.0125, 0.016, 0.02, 0.025, 0.032, 0.04, 0.05, 0.063, 0.08,
    0.1, 0.125, 0.16, 0.2, 0.25, 0.32, 0.4, 0.5, 0.63, 0.8,
    1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0,
    10.0,
)  # fmt: skip

# Settings.
ENV_CAPTURE_PATH: Final = "OTEL_PYTHON_FILERESP_CAPTURE_PATH"
ENV_PHASE_SPANS: Final = "OTEL_PYTHON_FILERESP_PHASE_SPANS"
ENV_PHASE_METRICS: Final = "OTEL_PYTHON_FILERESP_PHASE_METRICS"
ENV_METRICS: Final = "OTEL_PYTHON_FILERESP_METRICS"

# Worker-pool occupancy (observable gauges, read when metrics are collected;
# attribute fileresp.framework). See otel_fileresp/_pools.py.
METRIC_POOL_BORROWED: Final = "fileresp.threadpool.borrowed"  # {token}, starlette
METRIC_POOL_BUSY: Final = "fileresp.threadpool.busy"  # {thread}, aiohttp
METRIC_POOL_LIMIT: Final = "fileresp.threadpool.limit"  # {thread}, both
METRIC_POOL_QUEUED: Final = "fileresp.threadpool.queued"  # {job}, both
