"""What the benchmark sections share: telemetry pipelines, the files served,
interleaved A/B rounds, statistics, and the environment report."""

from __future__ import annotations

import datetime
import gc
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

SCOPE = "otel_fileresp"
# W3C traceparent values: a remote parent that is sampled, and one that is not.
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT_SAMPLED = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACEPARENT_UNSAMPLED = f"00-{TRACE_ID}-{PARENT_ID}-00"

SMALL_FILE = "small.txt"
SMALL_SIZE = 4096
# issue 18's file: 100 kB (two reads in Starlette, one sendfile in aiohttp)
FILE_100K = "100k.bin"
FILE_100K_SIZE = 100_000
# aiohttp/Starlette ETag-independent: a fixed mtime makes runs comparable.
MTIME = 1_600_000_000


def make_site(root: Path) -> Path:
    """The files served: a 4 KiB file (one read in Starlette), a 100 kB file
    (the ``instructions`` section's, as in issue 18) and a 1 MiB file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / SMALL_FILE).write_bytes(bytes(range(256)) * (SMALL_SIZE // 256))
    (root / FILE_100K).write_bytes(
        (bytes(range(256)) * (FILE_100K_SIZE // 256 + 1))[:FILE_100K_SIZE]
    )
    (root / "big.bin").write_bytes(bytes(range(256)) * 4096)
    for path in root.iterdir():
        os.utime(path, (MTIME, MTIME))
    return root


# -- telemetry pipelines --------------------------------------------------------


class NullSpanExporter(SpanExporter):
    """Drops spans; counts them by instrumentation scope (in the BSP's thread)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            scope = span.instrumentation_scope
            self.counts[scope.name if scope else ""] += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class NullMetricExporter(MetricExporter):
    """Drops metrics."""

    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


@dataclass
class Pipeline:
    """An SDK TracerProvider with a BatchSpanProcessor into a null exporter,
    and an SDK MeterProvider with a periodic reader into a null exporter:
    a real SDK pipeline whose export costs nothing."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: NullSpanExporter

    def flush(self) -> None:
        self.tracer_provider.force_flush(10_000)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def sdk_pipeline(metric_interval_ms: int = 60_000, sampler: Any = None) -> Pipeline:
    spans = NullSpanExporter()
    tracer_provider = TracerProvider() if sampler is None else TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = PeriodicExportingMetricReader(
        NullMetricExporter(), export_interval_millis=metric_interval_ms
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    return Pipeline(tracer_provider, meter_provider, spans)


# -- statistics ---------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Spread:
    median: float
    p25: float
    p75: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            statistics.median(values) if values else float("nan"),
            percentile(values, 25),
            percentile(values, 75),
            min(values) if values else float("nan"),
            max(values) if values else float("nan"),
            len(values),
        )

    def ratio_text(self) -> str:
        return (
            f"{self.median:.3f} (IQR {self.p25:.3f}-{self.p75:.3f}, "
            f"range {self.low:.3f}-{self.high:.3f}, n={self.n})"
        )


# -- interleaved rounds ---------------------------------------------------------

# A batch returns (wall seconds, process CPU seconds) per response.
Batch = Callable[[], Awaitable[tuple[float, float]]]


@dataclass
class Rounds:
    """Per-round results of each batch kind: wall and CPU seconds per response."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    orders: list[list[str]] = field(default_factory=list)

    def values(self, clock: str = "wall") -> dict[str, list[float]]:
        return self.wall if clock == "wall" else self.cpu

    def ratios(self, numerator: str, denominator: str, clock: str = "wall") -> list[float]:
        values = self.values(clock)
        return [a / b for a, b in zip(values[numerator], values[denominator], strict=True)]

    def median(self, name: str, clock: str = "wall") -> float:
        return statistics.median(self.values(clock)[name])


async def interleave(
    batches: dict[str, Batch],
    rounds: int,
    seed: int,
    deadline: float,
    min_rounds: int = 5,
) -> Rounds:
    """Run every batch once per round, in a shuffled order each round, so each
    instrumented batch has its uninstrumented partner in the same round. Stops
    after ``rounds`` rounds, or at ``deadline`` (monotonic) once ``min_rounds``
    are done."""
    rng = random.Random(seed)
    result = Rounds({name: [] for name in batches}, {name: [] for name in batches})
    names = list(batches)
    for index in range(rounds):
        if index >= min_rounds and time.monotonic() > deadline:
            break
        order = names[:]
        rng.shuffle(order)
        result.orders.append(order)
        for name in order:
            gc.collect()
            wall, cpu = await batches[name]()
            result.wall[name].append(wall)
            result.cpu[name].append(cpu)
    return result


# -- process figures ----------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def loadavg() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


DISTRIBUTIONS = (
    "otel-fileresp",
    "starlette",
    "anyio",
    "aiohttp",
    "uvicorn",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-asgi",
    "opentelemetry-instrumentation-aiohttp-server",
    "wrapt",
)


def _checkout() -> str:
    """The commit of the checkout whose package is measured (and whether
    its tree has changes)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "otel_fileresp"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" (otel_fileresp has uncommitted changes)" if dirty else "")


def environment() -> dict[str, str]:
    versions = []
    for name in DISTRIBUTIONS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    memory = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            memory = meminfo.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "checkout": _checkout(),
        "machine": f"{_cpu_model()}, {os.cpu_count()} CPUs, {memory} RAM, "
        f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "versions": ", ".join(versions),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load average at start (1/5/15 min)": loadavg(),
    }


# -- output -------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(str(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f}"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"
