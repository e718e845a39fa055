"""How true the documented quantile queries read: for latency mixes from 1 ms
to 5 s, N samples are recorded into the SDK's histograms (``fileresp.duration``
and ``fileresp.phase.duration`` ``{threadpool.wait}``, the package's own
instruments and attributes) with a bucket layout, exported by
``opentelemetry-exporter-prometheus``, written into a Prometheus TSDB with
``promtool tsdb create-blocks-from openmetrics`` (every series at 0, then the
exporter's values 60 s later) and queried over the HTTP API of a real
Prometheus with the dashboard's p50/p95/p99 expressions exactly as
``examples/tempo/grafana/dashboards/otel-fileresp.json`` holds them
(``$framework`` = ``.*``, ``$__rate_interval`` = ``5m``). The error is
against the exact quantile of the samples (nearest rank).

The SDK's exponential histogram (``base2_exponential_bucket_histogram``,
160 buckets) cannot be fed to Prometheus 2.42 (native histograms need a
protobuf scrape or remote write; the Python Prometheus exporter drops
exponential histograms): its error is computed from the SDK's exported data
point with a port of Prometheus 2.42's ``histogram_quantile`` for native
histograms (linear within the bucket, like the classic one). The search over
candidate layouts uses a port of the classic ``histogram_quantile``, which
the run checks against the real Prometheus on every figure it reports.

Runs on its own: ``python benchmarks/quantiles.py [--samples N]``, or as the
``quantiles`` section of ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's otel_fileresp

from otel_fileresp import _names as names  # noqa: E402

DASHBOARD = ROOT / "examples" / "tempo" / "grafana" / "dashboards" / "otel-fileresp.json"
QUANTILES = (0.5, 0.95, 0.99)
GOAL = 0.15  # contract v2.1: within 15 % between 1 ms and 5 s
LOW, HIGH = 0.001, 5.0
SEED = 18

# The boundaries before issue 18 (1-2.5-5 per decade, 10 µs to 10 s).
OLD_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def _decades(mantissas: Sequence[float], first: int, last: int, top: float) -> tuple[float, ...]:
    found = {round(m * 10.0**d, 12) for d in range(first, last + 1) for m in mantissas}
    return tuple(sorted(v for v in found if v <= top))


_SUB_MS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005)
# Candidate layouts of the search: sub-millisecond part as before, then n
# boundaries per decade from 1 ms to 5 s, and 10 s.
CANDIDATES: dict[str, tuple[float, ...]] = {
    "old (1-2.5-5)": OLD_BUCKETS,
    "1-2-5": _SUB_MS + _decades((1, 2, 5), -3, 0, 5.0) + (10.0,),
    "1-1.5-2-3-5-7": _SUB_MS + _decades((1, 1.5, 2, 3, 5, 7), -3, 0, 5.0) + (10.0,),
    "8 a decade (1-1.3-1.8-2.4-3.2-4.2-5.6-7.5)": _SUB_MS
    + _decades((1, 1.3, 1.8, 2.4, 3.2, 4.2, 5.6, 7.5), -3, 0, 5.6)
    + (10.0,),
    "1-1.5-2-2.5-3-4-5-6-8": _SUB_MS
    + _decades((1, 1.5, 2, 2.5, 3, 4, 5, 6, 8), -3, 0, 5.0)
    + (10.0,),
    "R'10 (1-1.25-1.6-2-2.5-3.2-4-5-6.3-8)": _SUB_MS
    + _decades((1, 1.25, 1.6, 2, 2.5, 3.2, 4, 5, 6.3, 8), -3, 0, 5.0)
    + (10.0,),
}


# -- the mixes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Mix:
    name: str
    what: str
    draw: Callable[[random.Random], float]

    def samples(self, n: int, seed: int = SEED, scale: float = 1.0) -> list[float]:
        rng = random.Random(f"{seed}:{self.name}")
        return [self.draw(rng) * scale for _ in range(n)]


def _clip(low: float, high: float, value: float) -> float:
    return min(high, max(low, value))


MIXES: tuple[Mix, ...] = (
    Mix(
        "fast",
        "cached files, 304s: lognormal, median 1.6 ms, sigma 0.3 (1-3 ms)",
        lambda r: r.lognormvariate(math.log(0.0016), 0.3),
    ),
    Mix(
        "10 ms",
        "lognormal, median 10 ms, sigma 0.6",
        lambda r: r.lognormvariate(math.log(0.010), 0.6),
    ),
    Mix(
        "bimodal",
        "92 % fast (lognormal 2 ms, sigma 0.4), 8 % behind a saturated pool "
        "(lognormal 300 ms, sigma 0.5, clipped to 100-700 ms)",
        lambda r: (
            r.lognormvariate(math.log(0.002), 0.4)
            if r.random() < 0.92
            else _clip(0.1, 0.7, r.lognormvariate(math.log(0.3), 0.5))
        ),
    ),
    Mix(
        "slow",
        "lognormal, median 1.2 s, sigma 0.55, clipped to 0.5-5 s",
        lambda r: _clip(0.5, 5.0, r.lognormvariate(math.log(1.2), 0.55)),
    ),
    Mix(
        "saturated pool",
        "issue 18's pool-saturation run: normal, mean 110 ms, sd 23.6 ms (p50 110, p99 165 ms)",
        lambda r: max(0.001, r.gauss(0.110, 0.0236)),
    ),
)
MIX = {mix.name: mix for mix in MIXES}


def exact_quantile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank quantile of the samples."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# -- Prometheus 2.42's histogram_quantile, ported --------------------------------------


def cumulative_counts(bounds: Sequence[float], samples: Sequence[float]) -> list[float]:
    """Cumulative counts per ``le`` (bounds, then +Inf): (lower, upper] as the SDK."""
    counts = [0] * (len(bounds) + 1)
    for value in samples:
        counts[bisect.bisect_left(bounds, value)] += 1
    total, found = 0, []
    for count in counts:
        total += count
        found.append(float(total))
    return found


def bucket_quantile(q: float, bounds: Sequence[float], cumulative: Sequence[float]) -> float:
    """``bucketQuantile`` of promql/quantile.go (classic buckets, +Inf last)."""
    upper = [*bounds, math.inf]
    observations = cumulative[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    # sort.Search over all but +Inf: the first bucket whose count reaches the rank.
    b = next((i for i, c in enumerate(cumulative[:-1]) if c >= rank), len(upper) - 1)
    if b == len(upper) - 1:
        return upper[-2]
    start, count = 0.0, cumulative[b]
    if b > 0:
        start = upper[b - 1]
        count -= cumulative[b - 1]
        rank -= cumulative[b - 1]
    return start + (upper[b] - start) * (rank / count)


def native_quantile(q: float, scale: int, offset: int, counts: Sequence[int], zero: int) -> float:
    """``histogramQuantile`` of Prometheus 2.42 for a native histogram with the
    SDK's exponential buckets: bucket ``offset + i`` is (base^(offset+i),
    base^(offset+i+1)], base = 2^(2^-scale); linear within the bucket."""
    total = zero + sum(counts)
    if total == 0:
        return math.nan
    rank = q * total
    if zero >= rank:
        return 0.0
    seen = float(zero)
    base = 2.0 ** (2.0**-scale)
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            lower, upper = base ** (offset + i), base ** (offset + i + 1)
            return lower + (upper - lower) * ((rank - seen) / count)
        seen += count
    return base ** (offset + len(counts))


# -- recording with the SDK ---------------------------------------------------------------

DURATION_ATTRIBUTES = {
    names.ATTR_FRAMEWORK: names.FRAMEWORK_STARLETTE,
    names.ATTR_STATUS_CODE: 200,
    names.ATTR_OUTCOME: names.OUTCOME_SENT,
    names.ATTR_OPENED: True,
}
PHASE_ATTRIBUTES = {
    names.ATTR_FRAMEWORK: names.FRAMEWORK_STARLETTE,
    names.ATTR_PHASE: names.PHASE_THREADPOOL_WAIT,
}
SERIES_PREFIXES = ("fileresp_duration_seconds", "fileresp_phase_duration_seconds")


def exposition(bounds: Sequence[float], samples: Sequence[float]) -> list[str]:
    """The exporter's sample lines of both histograms, with ``bounds`` advised
    (as ``otel_fileresp._instruments.Instruments`` does) and ``samples`` recorded
    into each through the SDK."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    try:
        meter = provider.get_meter(names.INSTRUMENTATION_NAME)
        advice = list(bounds)
        duration = meter.create_histogram(
            names.METRIC_DURATION, unit="s", explicit_bucket_boundaries_advisory=advice
        )
        phase = meter.create_histogram(
            names.METRIC_PHASE_DURATION, unit="s", explicit_bucket_boundaries_advisory=advice
        )
        for value in samples:
            duration.record(value, DURATION_ATTRIBUTES)
            phase.record(value, PHASE_ATTRIBUTES)
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    return [
        line
        for line in text.splitlines()
        if line.startswith(SERIES_PREFIXES) and not line.startswith(("#",))
    ]


@dataclass(frozen=True)
class Exponential:
    scale: int
    offset: int
    counts: tuple[int, ...]
    zero: int

    def quantile(self, q: float) -> float:
        return native_quantile(q, self.scale, self.offset, self.counts, self.zero)


def exponential_point(samples: Sequence[float]) -> Exponential:
    """The SDK's exponential histogram of ``samples`` (a View, default 160 buckets),
    as an exporter gets it."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader],
        views=[
            View(
                instrument_name=names.METRIC_DURATION,
                aggregation=ExponentialBucketHistogramAggregation(),
            )
        ],
    )
    try:
        histogram = provider.get_meter(names.INSTRUMENTATION_NAME).create_histogram(
            names.METRIC_DURATION,
            unit="s",
            explicit_bucket_boundaries_advisory=list(names.DURATION_BUCKETS),
        )
        for value in samples:
            histogram.record(value, DURATION_ATTRIBUTES)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    [point] = [
        p
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for p in m.data.data_points
    ]
    return Exponential(
        point.scale, point.positive.offset, tuple(point.positive.bucket_counts), point.zero_count
    )


# -- the real Prometheus ----------------------------------------------------------------


def dashboard_queries() -> dict[str, dict[float, str]]:
    """The dashboard's quantile expressions of the two histograms, by series and q,
    with Grafana's variables as the run sets them."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found: dict[str, dict[float, str]] = {}
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            quantile = re.match(r"histogram_quantile\((0\.\d+),", expr)
            if not quantile:
                continue
            if "fileresp_duration_seconds_bucket" in expr:
                key = "fileresp.duration"
            elif 'fileresp_phase="threadpool.wait"' in expr:
                key = "fileresp.phase.duration"
            else:
                continue
            found.setdefault(key, {})[float(quantile.group(1))] = expr.replace(
                "$framework", ".*"
            ).replace("$__rate_interval", "5m")
    for key in ("fileresp.duration", "fileresp.phase.duration"):
        assert set(found.get(key, {})) == set(QUANTILES), (key, found)
    return found


def prometheus_binaries() -> tuple[str, str] | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


SLOT_S = 900  # slots 15 min apart: a 5m window sees one slot only
STEP_S = 60  # every series at 0, then its values 60 s later


def openmetrics(slots: Sequence[list[str]], start: int) -> str:
    """OpenMetrics text of the slots' exposition lines, slot i at
    ``start + i * SLOT_S`` (0) and ``+ STEP_S`` (the values), labelled ``slot``."""
    families: dict[str, list[str]] = {prefix: [] for prefix in SERIES_PREFIXES}
    line_re = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
    for i, lines in enumerate(slots):
        t0 = start + i * SLOT_S
        for line in lines:
            found = line_re.match(line)
            assert found, line
            name, labels, value = found.groups()
            labels = f'slot="{i}"' + (f",{labels}" if labels else "")
            family = next(
                p for p in sorted(SERIES_PREFIXES, key=len, reverse=True) if name.startswith(p)
            )
            families[family].append(f"{name}{{{labels}}} 0 {t0}")
            families[family].append(f"{name}{{{labels}}} {value} {t0 + STEP_S}")
    out: list[str] = []
    for family, lines in families.items():
        out.append(f"# TYPE {family} histogram")
        out.extend(lines)
    out.append("# EOF")
    return "\n".join(out) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        params = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


@contextmanager
def prometheus_with(slots: Sequence[list[str]], workdir: Path) -> Iterator[tuple[Server, int]]:
    """A Prometheus on loopback whose TSDB holds the slots; yields it and the
    start time (slot i's values are at ``start + i * SLOT_S + STEP_S``)."""
    found = prometheus_binaries()
    if found is None:
        raise RuntimeError(
            "prometheus and promtool are needed (Debian: apt-get install prometheus)"
        )
    prometheus, promtool = found
    # Inside the default retention, before the head block, aligned to a second.
    start = int(time.time()) - 3600 - len(slots) * SLOT_S
    data = workdir / "data"
    source = workdir / "slots.om"
    source.write_text(openmetrics(slots, start), encoding="utf-8")
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode:
        raise RuntimeError(f"promtool: {done.stdout}{done.stderr}")
    config = workdir / "prometheus.yml"
    config.write_text("global: {}\n", encoding="utf-8")
    for _ in range(3):
        port = _free_port()
        with open(workdir / "prometheus.log", "wb") as log:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        ready = True
                        break
            except OSError:
                time.sleep(0.05)
        if ready:
            break
        process.terminate()
        process.wait(10)
    else:
        log_text = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"prometheus did not start:\n{log_text}")
    try:
        yield server, start
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- the measurement --------------------------------------------------------------------


@dataclass
class Row:
    layout: str  # a CANDIDATES key, or "exponential"
    mix: str
    exact: dict[float, float]
    got: dict[float, float]  # the real Prometheus (or the native port for exponential)
    port: dict[float, float]  # the Python port of histogram_quantile
    phase: dict[float, float] | None = None  # fileresp.phase.duration's panel
    note: str = ""  # the exponential histogram's scale

    def error(self, q: float) -> float:
        return (self.got[q] - self.exact[q]) / self.exact[q]

    @property
    def worst(self) -> float:
        return max(abs(self.error(q)) for q in QUANTILES)


def measure(
    layouts: dict[str, tuple[float, ...]],
    mixes: Sequence[Mix],
    n: int,
    workdir: Path,
    log: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """Every (layout, mix) through the exporter and the real Prometheus."""
    queries = dashboard_queries()
    jobs = [(layout, mix) for layout in layouts for mix in mixes]
    samples = {mix.name: mix.samples(n) for mix in mixes}
    slots = []
    for layout, mix in jobs:
        log(f"quantiles: recording {n} samples of {mix.name!r} with {layout!r}")
        slots.append(exposition(layouts[layout], samples[mix.name]))
    rows = []
    with prometheus_with(slots, workdir) as (server, start):
        for i, (layout, mix) in enumerate(jobs):
            at = start + i * SLOT_S + STEP_S
            values = samples[mix.name]
            cumulative = cumulative_counts(layouts[layout], values)
            got, phase = {}, {}
            for q in QUANTILES:
                [(_, got[q])] = server.query(queries["fileresp.duration"][q], at)
                [(_, phase[q])] = server.query(queries["fileresp.phase.duration"][q], at)
            rows.append(
                Row(
                    layout,
                    mix.name,
                    {q: exact_quantile(values, q) for q in QUANTILES},
                    got,
                    {q: bucket_quantile(q, layouts[layout], cumulative) for q in QUANTILES},
                    phase,
                )
            )
    for mix in mixes:
        values = samples[mix.name]
        point = exponential_point(values)
        quantiles = {q: point.quantile(q) for q in QUANTILES}
        rows.append(
            Row(
                "exponential",
                mix.name,
                {q: exact_quantile(values, q) for q in QUANTILES},
                quantiles,
                quantiles,
                note=f", scale {point.scale}",
            )
        )
    return rows


def search(n: int, shifts: int = 12) -> list[tuple[str, int, float, str]]:
    """Each candidate's worst error (Python port) over every mix, each scaled by
    1.5^(k/shifts) for k < shifts (so a quantile lands anywhere in a bucket),
    quantiles between 1 ms and 5 s only: (layout, boundaries, worst, where)."""
    base = {mix.name: mix.samples(n) for mix in MIXES}
    found = []
    for layout, bounds in CANDIDATES.items():
        worst, where = 0.0, ""
        for k in range(shifts):
            factor = 1.5 ** (k / shifts)
            for name, values in base.items():
                scaled = [v * factor for v in values]
                cumulative = cumulative_counts(bounds, scaled)
                for q in QUANTILES:
                    exact = exact_quantile(scaled, q)
                    if not LOW <= exact <= HIGH:
                        continue
                    error = abs(bucket_quantile(q, bounds, cumulative) - exact) / exact
                    if error > worst:
                        worst, where = error, f"{name} x{factor:.3f} p{round(q * 100)}"
        found.append((layout, len(bounds), worst, where))
    return found


def exponential_wide(n: int) -> list[tuple[str, int, float]]:
    """The exponential histogram when one series also holds a 10 µs and a
    60 s point (its scale drops to fit 160 buckets): (mix, scale, worst)."""
    found = []
    for mix in MIXES:
        values = mix.samples(n)
        point = exponential_point([*values, 0.00001, 60.0])
        worst = max(
            abs(point.quantile(q) - exact_quantile(values, q)) / exact_quantile(values, q)
            for q in QUANTILES
        )
        found.append((mix.name, point.scale, worst))
    return found


# Attribute combinations a deployment typically has, per framework.
DURATION_COMBINATIONS = {
    "typical (200 sent, 304, 404, 206)": 4,
    "every outcome (sent, partial, not_modified, precondition_failed, "
    "range_not_satisfiable, head, redirect, not_found, forbidden, "
    "method_not_allowed, error)": 11,
}
PHASE_COMBINATIONS = {"default (threadpool.wait)": 1, "all phases": 5}


def series_per_combination(bounds: Sequence[float]) -> int:
    """Classic histogram: one ``_bucket`` series per boundary and +Inf, ``_sum``, ``_count``."""
    return len(bounds) + 3


# -- the report --------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value * 1000:.3g}" if value < 1 else f"{value * 1000:,.0f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(
    rows: list[Row],
    searched: list[tuple[str, int, float, str]],
    wide: list[tuple[str, int, float]],
    n: int,
) -> tuple[str, list[tuple[str, str, bool]]]:
    parts, checks = [], []
    mixes = {row.mix for row in rows}
    parts.append(
        f"{n} samples per mix (seed {SEED}). Exact quantile / what the query returns (ms), "
        "and the error; classic layouts through the real Prometheus, the exponential "
        "histogram from the SDK's data point (Prometheus 2.42's native rule). Mixes:\n\n"
        + "\n".join(f"- {mix.name}: {mix.what}" for mix in MIXES if mix.name in mixes)
        + "\n"
    )
    layouts = list(dict.fromkeys(row.layout for row in rows))
    by_key = {(row.layout, row.mix): row for row in rows}
    body = []
    for mix in dict.fromkeys(row.mix for row in rows):
        for q in QUANTILES:
            first = by_key[(layouts[0], mix)]
            cells = [mix, f"p{round(q * 100)}", _ms(first.exact[q])]
            for layout in layouts:
                row = by_key[(layout, mix)]
                cells.append(f"{_ms(row.got[q])} ({row.error(q) * 100:+.1f} %{row.note})")
            body.append(cells)
    parts.append(table(["mix", "q", "exact (ms)", *(f"{x} (ms)" for x in layouts)], body))
    mismatch = [
        (r.layout, r.mix, q)
        for r in rows
        if not r.layout.startswith("exponential")
        for q in QUANTILES
        if not math.isclose(r.got[q], r.port[q], rel_tol=1e-9)
        or (r.phase is not None and not math.isclose(r.phase[q], r.got[q], rel_tol=1e-9))
    ]
    parts.append(
        "\nThe Python port of `histogram_quantile` and the real Prometheus agree on "
        + ("every figure above (both panels)." if not mismatch else f"all but {mismatch}.")
    )
    checks.append(
        ("port of histogram_quantile = Prometheus", f"{len(mismatch)} differ", not mismatch)
    )
    parts.append(
        "\nSearch (Python port): worst error over p50/p95/p99 between 1 ms and 5 s, every mix "
        "scaled by 1.5^(k/12), k = 0..11:\n"
    )
    parts.append(
        table(
            ["layout", "boundaries", "series per combination", "worst error", "where"],
            [
                [name, str(b), str(b + 3), f"{w * 100:.1f} %", where]
                for name, b, w, where in searched
            ],
        )
    )
    parts.append(
        "\nExponential histogram (160 buckets) when a series also holds a 10 µs and a "
        "60 s point: "
        + ", ".join(f"{m}: scale {s}, worst {w * 100:.1f} %" for m, s, w in wide)
        + "."
    )
    default = tuple(names.DURATION_BUCKETS)
    default_rows = [r for r in rows if CANDIDATES.get(r.layout) == default]
    for row in default_rows:
        checks.append(
            (
                f"default buckets, {row.mix}: worst error <= 15 %",
                f"{row.worst * 100:.1f} %",
                row.worst <= GOAL,
            )
        )
    for row in rows:
        if row.layout.startswith("exponential"):
            checks.append(
                (
                    f"exponential, {row.mix}: worst error <= 15 %",
                    f"{row.worst * 100:.1f} %",
                    row.worst <= GOAL,
                )
            )
    per = series_per_combination(default)
    old = series_per_combination(OLD_BUCKETS)
    cost = []
    for what, combos in DURATION_COMBINATIONS.items():
        cost.append(
            [
                f"`fileresp.duration`, {what}",
                str(combos),
                str(combos * old),
                str(combos * per),
                str(combos),
            ]
        )
    for what, combos in PHASE_COMBINATIONS.items():
        cost.append(
            [
                f"`fileresp.phase.duration`, {what}",
                str(combos),
                str(combos * old),
                str(combos * per),
                str(combos),
            ]
        )
    parts.append("\nSeries per framework and process (classic: boundaries + 3):\n")
    parts.append(
        table(
            [
                "histogram",
                "combinations",
                f"old ({old} each)",
                f"default ({per} each)",
                "exponential (native: 1 each)",
            ],
            cost,
        )
    )
    return "\n".join(parts), checks


def default_layouts() -> dict[str, tuple[float, ...]]:
    default = tuple(names.DURATION_BUCKETS)
    chosen = next((k for k, v in CANDIDATES.items() if v == default), None)
    if chosen is None:
        CANDIDATES["default"] = default
        chosen = "default"
    return {"old (1-2.5-5)": OLD_BUCKETS, chosen: default}


def run(n: int, log: Callable[[str], None] = lambda _: None) -> tuple[str, list]:
    layouts = default_layouts()
    with tempfile.TemporaryDirectory(prefix="fileresp-quantiles-") as tmp:
        rows = measure(layouts, MIXES, n, Path(tmp), log)
    log("quantiles: search")
    searched = search(min(n, 20_000))
    wide = exponential_wide(n)
    return report(rows, searched, wide, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20_000, help="samples per mix")
    args = parser.parse_args(argv)
    text, checks = run(args.samples, lambda s: print(s, file=sys.stderr, flush=True))
    print(text)
    print()
    print(table(["target", "figure", "met"], [[a, b, "yes" if c else "NO"] for a, b, c in checks]))
    return 0 if all(c for _, _, c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
