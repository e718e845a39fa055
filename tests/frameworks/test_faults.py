"""Faults around the instrumentation never reach the requests.

Each test serves the same requests (200, HEAD, 304 by ETag and by date, 206,
404, a bare ``FileResponse``, an empty file) with a fault in place, on both
frameworks, and compares with the same requests served uninstrumented:
status, headers (but Date and Server) and body are identical, and so is the
number of worker-pool jobs. Our own failures are logged once each (never
raised); the SDK's own failures are the SDK's to log.

The faults: a span processor that raises; a span exporter that raises or
blocks, behind ``SimpleSpanProcessor`` (on the server's event loop) and
``BatchSpanProcessor`` (on its worker thread); a periodic metric exporter that
raises or blocks; an exemplar filter that raises (the one SDK hook on the
metrics' synchronous path); the tracer and meter providers shut down while
requests are being served; a patch target missing from the framework release.
Every block is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from starlette.staticfiles import StaticFiles
from support.aiohttp_site import STATIC_LOOKUP_JOB
from support.apps import FRAMEWORKS, INSTRUMENTORS, CustomTelemetry, serve, without_boundary
from support.harness import Reply, Telemetry, attrs, child_names, responses

from otel_fileresp._log import forget_logged

MTIME = 1_600_000_000
MEDIUM = bytes(range(256)) * 1200  # 300 KiB: several chunks for every framework
# Bounds of the blocking faults: a block ends when the test releases it or
# after this long, whichever comes first.
SIMPLE_BLOCK = 1.0
LONG_BLOCK = 30.0
# A patch target to remove from each framework before instrumenting, and the
# phase span that then goes missing.
MISSING: dict[str, tuple[Any, str, str]] = {
    "starlette": (StaticFiles, "is_not_modified", "fileresp.precondition"),
    # The send hook: `_prepare_open_file` from 3.11.10, `_sendfile` before.
    "aiohttp": (
        web.FileResponse,
        "_prepare_open_file" if hasattr(web.FileResponse, "_make_response") else "_sendfile",
        "fileresp.send",
    ),
}

Exchange = tuple[Any, ...]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    (root / "small.txt").write_bytes(b"small file\n" * 100)
    (root / "medium.bin").write_bytes(MEDIUM)
    (root / "empty.txt").write_bytes(b"")
    for path in root.iterdir():
        os.utime(path, (MTIME, MTIME))
    return root


def requests(head: Reply) -> list[tuple[str, str, dict[str, str]]]:
    """The requests of one pass after the HEAD whose validators they use."""
    etag, modified = head.header("etag") or "", head.header("last-modified") or ""
    return [
        ("GET", "/static/small.txt", {}),
        ("GET", "/static/small.txt", {"If-None-Match": etag}),
        ("GET", "/static/small.txt", {"If-Modified-Since": modified}),
        ("GET", "/static/medium.bin", {"Range": "bytes=0-99"}),
        ("GET", "/static/medium.bin", {}),
        ("GET", "/static/missing.txt", {}),
        ("GET", "/file/small.txt", {}),
        ("GET", "/file/empty.txt", {}),
    ]


REQUESTS_PER_PASS = 9


def file_responses_per_pass(framework: str) -> int:
    """The requests above that make a file response (aiohttp up to 3.9 answers
    a static route's 404 before any FileResponse exists)."""
    return 8 if framework == "aiohttp" and not STATIC_LOOKUP_JOB else 9


def run(
    framework: str,
    root: Path,
    telemetry: Telemetry | None,
    *,
    passes: int = 1,
    after_reply: Callable[[int], None] | None = None,
    instrument: Callable[[], Any] | None = None,
) -> tuple[list[Exchange], int]:
    """Serve ``passes`` passes of the requests; the replies and the jobs."""
    with serve(framework, root, telemetry, instrument=instrument) as served:
        replies: list[Exchange] = []
        for _ in range(passes):
            head = served.request("HEAD", "/static/small.txt")
            exchanges = [("HEAD", "/static/small.txt", {}, head)]
            for method, path, headers in requests(head):
                exchanges.append((method, path, headers, served.request(method, path, headers)))
                if after_reply is not None:
                    after_reply(len(replies) + len(exchanges))
            replies.extend((*e[:3], *without_boundary(e[3])) for e in exchanges)
        assert len(replies) == passes * REQUESTS_PER_PASS
        assert served.settled()
        jobs = served.jobs()
    return replies, jobs


_REFERENCE: dict[tuple[str, int], tuple[list[Exchange], int]] = {}


def reference(framework: str, root: Path, passes: int = 1) -> tuple[list[Exchange], int]:
    """The same passes served uninstrumented (once per module)."""
    key = (framework, passes)
    if key not in _REFERENCE:
        _REFERENCE[key] = run(framework, root, None, passes=passes)
    return _REFERENCE[key]


@pytest.fixture
def our_logs(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """This package's log messages from now on (the once-only memory reset)."""
    forget_logged()
    caplog.set_level(logging.WARNING, logger="otel_fileresp")

    def messages() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("otel_fileresp")]

    return messages


def assert_logged_once_each(messages: list[str], *expected: str) -> None:
    """Each expected failure logged, each exactly once, nothing else."""
    assert len(messages) == len(set(messages)), messages
    for part in expected:
        assert [m for m in messages if part in m], (part, messages)
    assert all(any(part in m for part in expected) for m in messages), messages


def assert_same_as_reference(
    framework: str,
    root: Path,
    telemetry: Telemetry | None,
    passes: int = 1,
    **options: Any,
) -> None:
    plain, plain_jobs = reference(framework, root, passes)
    traced, traced_jobs = run(framework, root, telemetry, passes=passes, **options)
    assert traced == plain
    assert traced_jobs == plain_jobs


def duration_count(telemetry: Telemetry) -> int:
    return sum(p.count for p in telemetry.metric_points("fileresp.duration"))


# -- span pipeline ------------------------------------------------------------


class ExplodingProcessor(SpanProcessor):
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("processor on_start fails")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor on_end fails")


class FaultyExporter(SpanExporter):
    """Raises, or blocks (first call only, or every call) until released or
    ``block_for`` seconds have passed."""

    def __init__(self, mode: str, block_for: float = 0.0, every_call: bool = False) -> None:
        self.mode = mode
        self.block_for = block_for
        self.every_call = every_call
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.timed_out = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("exporter fails")
        if self.calls == 1 or self.every_call:
            self.entered.set()
            if not self.release.wait(self.block_for):
                self.timed_out += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_raising_span_processor(
    framework: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    telemetry = CustomTelemetry(span_processors=(ExplodingProcessor(),))
    assert_same_as_reference(framework, root, telemetry)
    assert_logged_once_each(our_logs(), "in emit.spans")
    # The metrics do not depend on the spans.
    assert duration_count(telemetry) == file_responses_per_pass(framework)
    telemetry.shutdown()


@pytest.mark.parametrize("processor", ["simple", "batch"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_raising_span_exporter(
    framework: str, processor: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    exporter = FaultyExporter("raise")
    wrapper = SimpleSpanProcessor if processor == "simple" else BatchSpanProcessor
    telemetry = CustomTelemetry(span_processors=(wrapper(exporter),))
    assert_same_as_reference(framework, root, telemetry)
    telemetry.tracer_provider.force_flush()
    assert exporter.calls > 0
    assert our_logs() == []
    assert len(responses(telemetry)) == file_responses_per_pass(framework)
    telemetry.shutdown()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_span_exporter_blocking_the_event_loop(
    framework: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    """Behind SimpleSpanProcessor the export runs on the server's loop: its
    first call blocks the loop for SIMPLE_BLOCK seconds; replies only wait."""
    exporter = FaultyExporter("block", block_for=SIMPLE_BLOCK)
    telemetry = CustomTelemetry(span_processors=(SimpleSpanProcessor(exporter),))
    assert_same_as_reference(framework, root, telemetry)
    assert exporter.timed_out == 1  # it really blocked, until its bound
    assert our_logs() == []
    assert len(responses(telemetry)) == file_responses_per_pass(framework)
    telemetry.shutdown()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_span_exporter_blocking_the_batch_worker(
    framework: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    """Behind BatchSpanProcessor a blocked export fills the (small) queue and
    spans are dropped; requests served meanwhile are untouched."""
    exporter = FaultyExporter("block", block_for=LONG_BLOCK, every_call=True)
    batch = BatchSpanProcessor(
        exporter, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=1
    )
    telemetry = CustomTelemetry(span_processors=(batch,))

    def after_reply(count: int) -> None:
        if count == 2:  # from here on, requests are served while it is blocked
            assert exporter.entered.wait(LONG_BLOCK)

    assert_same_as_reference(framework, root, telemetry, after_reply=after_reply)
    assert not exporter.release.is_set() and exporter.timed_out == 0  # still blocked
    exporter.release.set()
    assert our_logs() == []
    assert len(responses(telemetry)) == file_responses_per_pass(framework)
    telemetry.shutdown()


# -- metric pipeline ------------------------------------------------------------


class FaultyMetricExporter(MetricExporter):
    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.entered.set()
        if self.mode == "raise":
            raise RuntimeError("metric exporter fails")
        self.release.wait(LONG_BLOCK)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.release.set()


@pytest.mark.parametrize("mode", ["raise", "block"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_faulty_metric_exporter(
    framework: str, mode: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    exporter = FaultyMetricExporter(mode)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=10)
    telemetry = CustomTelemetry(metric_readers=(reader,))

    def after_reply(count: int) -> None:
        if count == 2:  # the periodic export has run (and, blocking, still runs)
            assert exporter.entered.wait(LONG_BLOCK)

    assert_same_as_reference(framework, root, telemetry, after_reply=after_reply)
    if mode == "block":
        assert not exporter.release.is_set()
    assert our_logs() == []
    assert duration_count(telemetry) == file_responses_per_pass(framework)
    assert len(responses(telemetry)) == file_responses_per_pass(framework)
    exporter.release.set()
    telemetry.shutdown()


class RaisingExemplarFilter:
    """Called synchronously by every ``record``/``add`` of the SDK."""

    def should_sample(self, value: Any, time_unix_nano: int, attributes: Any, context: Any) -> bool:
        raise RuntimeError("exemplar filter fails")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_raising_metric_pipeline_keeps_the_spans(
    framework: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    telemetry = CustomTelemetry(exemplar_filter=RaisingExemplarFilter())
    assert_same_as_reference(framework, root, telemetry)
    # aiohttp 3.11.10+ may also record a deferred close job's wait late.
    expected = ["in emit.metrics"]
    if [m for m in our_logs() if "in record.job" in m]:
        expected.append("in record.job")
    assert_logged_once_each(our_logs(), *expected)
    assert len(responses(telemetry)) == file_responses_per_pass(framework)
    telemetry.shutdown()


# -- providers shut down mid-traffic ---------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_providers_shut_down_mid_traffic(
    framework: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    """Three passes; after the first, both providers are shut down from
    another thread while the client carries on."""
    telemetry = Telemetry()
    shutters: list[threading.Thread] = []

    def after_reply(count: int) -> None:
        if count == REQUESTS_PER_PASS:
            shutter = threading.Thread(target=telemetry.shutdown)
            shutter.start()
            shutters.append(shutter)

    assert_same_as_reference(framework, root, telemetry, passes=3, after_reply=after_reply)
    for shutter in shutters:
        shutter.join(10)
        assert not shutter.is_alive()
    assert our_logs() == []
    exported = responses(telemetry)
    assert 1 <= len(exported) <= 3 * file_responses_per_pass(framework)


# -- a patch target missing from the framework release ---------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_missing_patch_target_warns_once_and_the_rest_works(
    framework: str, root: Path, our_logs: Callable[[], list[str]]
) -> None:
    owner, attribute, lost_phase = MISSING[framework]
    telemetry = Telemetry()

    @contextmanager
    def instrument_without_it() -> Iterator[None]:
        instrumentor = INSTRUMENTORS[framework]()
        # As if this release had no such attribute when instrument() ran; it
        # is back right after, so the app still works, that part unpatched.
        with pytest.MonkeyPatch.context() as patch:
            patch.delattr(owner, attribute)
            instrumentor.instrument(
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
            )
        try:
            yield
        finally:
            instrumentor.uninstrument()

    assert_same_as_reference(framework, root, telemetry, instrument=instrument_without_it)
    assert owner.__dict__[attribute] is not None
    [warning] = our_logs()
    version = metadata.version(framework)  # the distribution is named so
    assert attribute in warning
    assert f"{framework} {version}" in warning
    assert "not instrumented" in warning

    exported = responses(telemetry)
    assert len(exported) == file_responses_per_pass(framework)
    spans = telemetry.spans()
    phases = {name for response in exported for name in child_names(spans, response)}
    assert lost_phase not in phases
    assert {"fileresp.stat", "fileresp.threadpool.wait"} <= phases
    outcomes = sorted(attrs(r)["fileresp.outcome"] for r in exported)
    assert outcomes.count("not_modified") == 2
    telemetry.shutdown()


class _NameRaises:
    """An executor job whose ``__name__`` raises: the hooks read job names."""

    @property
    def __name__(self) -> str:
        raise RuntimeError("a name that cannot be read")

    def __call__(self) -> str:
        return "ran"


def test_executor_job_whose_name_raises_runs_as_submitted(
    our_logs: Callable[[], list[str]],
) -> None:
    # aiohttp's hook sees every executor job of the process, not only file
    # responses': an odd callable there is the application's business.
    telemetry = Telemetry()
    instrumentor = INSTRUMENTORS["aiohttp"]()
    instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )

    async def run_job() -> str:
        return await asyncio.get_running_loop().run_in_executor(None, _NameRaises())

    try:
        assert asyncio.run(run_job()) == "ran"
        assert asyncio.run(run_job()) == "ran"
    finally:
        instrumentor.uninstrument()
        telemetry.shutdown()
    # The hook does not even look at a job outside a file response.
    assert our_logs() == []
