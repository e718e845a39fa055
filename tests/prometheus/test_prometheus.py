"""Every PromQL expression of docs/ and examples/, run by a real Prometheus
against known traffic, and the alerting rules evaluated by it.

Prometheus here is Debian's 2.42 (``support.prometheus``): no OTLP receiver, so
it scrapes the app's ``opentelemetry-exporter-prometheus`` endpoint every
second and evaluates the rule files every second. The expressions are read
from the files (``promql`` fences of the Markdown, the rule files and the
docs' rules, the Grafana dashboard), and each one must have a check below that
asserts its values; an expression without one, or a check whose expression is
gone, fails ``test_every_expression_found_has_a_check``.

The known traffic (module fixture ``run``), on a Starlette and an aiohttp
server in this process sharing one meter provider (Starlette with the
default phase metrics, ``threadpool.wait`` only; aiohttp with every phase,
``phase_metrics="all"``, so the per-phase expressions see several):

1. one 200 and one 304 per framework (so every series exists before
   Prometheus's first scrape; a series' first sample is not an increase);
2. aiohttp's pool (4 workers) held by 4 blocking jobs and one file request
   queued behind them; then Prometheus starts: its first samples see the pool
   saturated (``FileResponsePoolSaturated`` fires);
3. the pool released (that request waited seconds), then N 200s and M 304s
   per framework.

The truth is the SDK's in-memory reader on the same meter provider, and the
traffic itself: the increase between the state at the first scrape and the
final state. Expressions are evaluated at the timestamp of a scrape taken
after the traffic, so ``rate``/``increase`` extrapolate only at the start of
the samples: a window's increase is the true one times a factor between 1 and
``run.fmax`` (computed from the samples), which bounds every check. Grafana's
``$__range`` is 1h and ``$__rate_interval`` 5m here (windows that hold all the
traffic); ``$framework`` takes each value: All (``.*``) and each framework.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from support.apps import serve
from support.prometheus import (
    FRAMEWORKS,
    OPENS_304,
    Expression,
    Hist,
    Labels,
    Prometheus,
    Sample,
    alert_states,
    by_labels,
    dashboard_expressions,
    dashboard_variables,
    get,
    make_site,
    metrics_endpoint,
    promql_expressions,
    rfc3339,
    rule_expressions,
    rule_files,
    running_prometheus,
    snapshot,
    unfenced_promql,
    wait_for,
)

# Requests after the pool is released: (200s, 304s), different on purpose.
TRAFFIC = {"starlette": (5, 7), "aiohttp": (4, 6)}
AIOHTTP_WORKERS = 4  # support.aiohttp_site.CountingExecutor
STARLETTE_TOKENS = 40  # anyio's default thread limiter
RANGE = "1h"  # Grafana's $__range
RATE_INTERVAL = "5m"  # Grafana's $__rate_interval
FRAMEWORK_CHOICES = (".*", "starlette", "aiohttp")  # Grafana's $framework: All, each


# -- the truth: the in-memory reader --------------------------------------------------


def difference(after: Any, before: Any | None) -> Any:
    if isinstance(after, Hist):
        if before is None:
            return after
        return Hist(
            after.bounds,
            tuple(a - b for a, b in zip(after.cumulative, before.cumulative, strict=True)),
            after.sum - before.sum,
        )
    return after - (before or 0.0)


def matches(labels: Labels, selector: dict[str, str]) -> bool:
    """``selector``: label -> regex (fully anchored, as PromQL's ``=~``)."""
    values = dict(labels)
    return all(re.fullmatch(regex, values.get(name, "")) for name, regex in selector.items())


def grouped(series: dict[Labels, Any], by: tuple[str, ...], selector: dict[str, str]) -> dict:
    """``sum by (by)`` of the series that match ``selector``."""
    groups: dict[tuple[str, ...], Any] = {}
    for labels, value in series.items():
        if not matches(labels, selector):
            continue
        group = tuple(dict(labels).get(name, "") for name in by)
        old = groups.get(group)
        if isinstance(value, Hist):
            groups[group] = (
                value
                if old is None
                else Hist(
                    value.bounds,
                    tuple(a + b for a, b in zip(old.cumulative, value.cumulative, strict=True)),
                    old.sum + value.sum,
                )
            )
        else:
            groups[group] = value + (old or 0.0)
    return groups


def quantile_bounds(hist: Hist, q: float, fmax: float) -> tuple[float, float]:
    """Where ``histogram_quantile(q, ...)`` of these increases can land when
    each bucket's increase is scaled by its own factor in [1, fmax]."""
    rank = q * hist.count
    low = next(i for i, c in enumerate(hist.cumulative) if c * fmax >= rank)
    high = next(
        (i for i, c in enumerate(hist.cumulative) if c >= rank * fmax), len(hist.bounds) - 1
    )

    def edges(i: int) -> tuple[float, float]:
        if math.isinf(hist.bounds[i]):  # +Inf bucket: the highest finite bound
            return hist.bounds[-2], hist.bounds[-2]
        return (hist.bounds[i - 1] if i else 0.0), hist.bounds[i]

    return edges(low)[0], edges(high)[1]


# -- the run ---------------------------------------------------------------------------


@dataclass
class Run:
    prometheus: Prometheus
    at: float  # evaluation time: the timestamp of a scrape after the traffic
    fmax: float  # rate/increase = true increase x a factor in [1, fmax]
    before: dict[str, dict[Labels, Any]]  # in-memory state at the first scrape
    after: dict[str, dict[Labels, Any]]  # ... and after the traffic
    sent: dict[str, int]  # 200s per framework after the first scrape
    not_modified: dict[str, int]  # 304s per framework after the first scrape
    saturated_at: float  # a time Prometheus evaluated rules with the pool saturated
    saturated_alerts: list[dict[str, Any]] = field(default_factory=list)

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        return self.prometheus.query(expr, self.at if at is None else at)

    def delta(self, metric: str) -> dict[Labels, Any]:
        after, before = self.after.get(metric, {}), self.before.get(metric, {})
        return {labels: difference(v, before.get(labels)) for labels, v in after.items()}

    def final(self, metric: str) -> dict[Labels, Any]:
        return self.after.get(metric, {})

    def increase_bounds(self, true: float) -> tuple[float, float]:
        return true, true * self.fmax


def _rfc3339(text: str) -> float:
    """Prometheus's timestamps (nanosecond fractions, ``Z``) as Unix seconds."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return stamp + (float(f"0.{fraction}") if fraction else 0.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("prometheus")
    root = make_site(tmp / "static")
    rules = rule_files(tmp)
    with (
        metrics_endpoint() as (telemetry, port),
        serve("starlette", root, telemetry) as starlette,
        serve("aiohttp", root, telemetry, phase_metrics="all") as aiohttp,
    ):
        servers = {"starlette": starlette, "aiohttp": aiohttp}
        etags = {}
        for framework, server in servers.items():  # every series exists before the first scrape
            etags[framework] = get(server).header("etag")
            assert get(server, {"If-None-Match": etags[framework]}).status == 304
            assert server.settled()

        gate = threading.Event()
        held: list[Any] = []
        try:
            # Hold aiohttp's pool and queue one file response behind it.
            aiohttp.server.call(
                lambda: [
                    asyncio.get_running_loop().run_in_executor(None, gate.wait, 60)
                    for _ in range(AIOHTTP_WORKERS)
                ]
            )
            waiting = threading.Thread(target=lambda: held.append(get(aiohttp)), daemon=True)

            def pool(gauge: str) -> float:
                values = snapshot(telemetry).get(gauge, {})
                return values.get(frozenset({("fileresp_framework", "aiohttp")}), 0.0)

            wait_for(lambda: pool("fileresp_threadpool_busy") == AIOHTTP_WORKERS, "busy pool")
            waiting.start()
            wait_for(lambda: pool("fileresp_threadpool_queued") >= 1, "a queued file job")
            before = snapshot(telemetry)

            with running_prometheus(tmp / "server", {"app": port}, rules) as prometheus:

                def saturated() -> list[dict[str, Any]]:
                    return [
                        a
                        for a in prometheus.alerts()
                        if a["labels"]["alertname"] == "FileResponsePoolSaturated"
                        and a["state"] == "firing"
                    ]

                saturated_alerts = wait_for(saturated, "FileResponsePoolSaturated firing", 30)
                # A time the rule's expression was true: when it became active
                # (a query at "now" can race the next scrape under load).
                saturated_at = _rfc3339(saturated_alerts[0]["activeAt"])
                gate.set()
                waiting.join(60)
                assert [reply.status for reply in held] == [200]

                for framework, server in servers.items():
                    sent, not_modified = TRAFFIC[framework]
                    for _ in range(sent):
                        assert get(server).status == 200
                    for _ in range(not_modified):
                        assert get(server, {"If-None-Match": etags[framework]}).status == 304
                    assert server.settled()

                # aiohttp's deferred close jobs may still run: wait (bounded)
                # until both pools are idle, so the gauges read after it are.
                def idle() -> bool | None:
                    gauges = snapshot(telemetry)
                    working = [
                        value
                        for name in ("fileresp_threadpool_busy", "fileresp_threadpool_borrowed")
                        for value in gauges.get(name, {}).values()
                    ]
                    return True if all(value == 0 for value in working) else None

                wait_for(idle, "idle worker pools after the traffic", 20)
                settled_at = time.time()
                after = snapshot(telemetry)

                # A scrape that started after the traffic settled: evaluate there.
                def later_scrape() -> float | None:
                    [sample] = prometheus.query('timestamp(up{job="app"})')
                    return sample.value if sample.value > settled_at + 0.05 else None

                at = wait_for(later_scrape, "a scrape after the traffic", 20)
                ups = prometheus.samples('up{job="app"}', "5m", at)
                assert all(v == 1.0 for _, v in ups), ups
                sampled = ups[-1][0] - ups[0][0]
                average = sampled / (len(ups) - 1)
                # Left of the first sample at most 1.1 intervals are extrapolated.
                fmax = 1 + 1.1 * average / sampled

                # Rules evaluated on that scrape, for the alert checks.
                def evaluated() -> bool:
                    return all(
                        rfc3339(r["lastEvaluation"]) > at + 0.001 for r in prometheus.rules()
                    )

                wait_for(evaluated, "a rule evaluation after the traffic", 20)
                result = Run(
                    prometheus,
                    at,
                    fmax,
                    before,
                    after,
                    sent={f: TRAFFIC[f][0] + (f == "aiohttp") for f in FRAMEWORKS},
                    not_modified={f: TRAFFIC[f][1] for f in FRAMEWORKS},
                    saturated_at=saturated_at,
                    saturated_alerts=saturated_alerts,
                )
                check_the_truth_is_the_traffic(result)
                yield result
        finally:
            gate.set()


def check_the_truth_is_the_traffic(run: Run) -> None:
    """The in-memory delta is what was sent: N 200s and M 304s per framework."""
    durations = run.delta("fileresp_duration_seconds")
    for framework in FRAMEWORKS:
        by_status = grouped(
            durations, ("http_response_status_code",), {"fileresp_framework": framework}
        )
        counts = {status: hist.count for (status,), hist in by_status.items() if hist.count}
        assert counts == {
            "200": run.sent[framework],
            "304": run.not_modified[framework],
        }, framework
        opens = grouped(
            run.delta("fileresp_opens_total"),
            ("http_response_status_code",),
            {"fileresp_framework": framework},
        )
        assert {s: v for (s,), v in opens.items() if v} == {"200": run.sent[framework]}
    phases = {
        framework: {
            phase
            for (phase,), hist in grouped(
                run.delta("fileresp_phase_duration_seconds"),
                ("fileresp_phase",),
                {"fileresp_framework": framework},
            ).items()
            if hist.count
        }
        for framework in FRAMEWORKS
    }
    assert phases["starlette"] == {"threadpool.wait"}  # the default
    assert phases["aiohttp"] == {"stat", "precondition", "open", "send", "threadpool.wait"}


# -- checking one expression ----------------------------------------------------------


def frameworks_of(selected: str) -> list[str]:
    return [f for f in FRAMEWORKS if re.fullmatch(selected, f)]


def check_quantile(
    run: Run,
    expr: str,
    *,
    q: float,
    metric: str,
    by: tuple[str, ...],
    selector: dict[str, str],
    above: float | None = None,
) -> None:
    """``histogram_quantile(q, sum by (le, by...) (rate(metric_bucket{selector}[w])))``,
    (``> above`` when given) against the same quantile of the true increases."""
    got = by_labels(run.query(expr), by)
    truth = grouped(run.delta(metric), by, selector)
    assert truth, (expr, "no traffic matched")
    for group, hist in truth.items():
        if not hist.count:  # no increase: NaN, or nothing with a threshold
            assert group not in got or math.isnan(got[group]), (group, got)
            continue
        low, high = quantile_bounds(hist, q, run.fmax)
        if above is not None:
            if low > above:
                assert group in got, (group, low, got)
            elif high <= above:
                assert group not in got, (group, high, got)
            if group not in got:
                continue
        assert low <= got[group] <= high, (group, got[group], (low, high), hist)
    assert set(got) <= set(truth), (set(got), set(truth))


def check_rate(
    run: Run, expr: str, *, true: dict[tuple[str, ...], float], by: tuple[str, ...], window: float
) -> None:
    """``sum by (by) (rate(counter[window]))`` (window in s): true increase / window."""
    got = by_labels(run.query(expr), by)
    assert set(got) == set(true), (got, true)
    for group, increase in true.items():
        low, high = run.increase_bounds(increase)
        assert low / window - 1e-9 <= got[group] <= high / window + 1e-9, (
            group,
            got[group] * window,
            (low, high),
        )


def check_ratio(run: Run, expr: str, *, true: float) -> None:
    """A ratio of two rates: each is scaled by its own factor in [1, fmax]."""
    [sample] = run.query(expr)
    assert sample.labels == {}
    assert true / run.fmax - 1e-9 <= sample.value <= true * run.fmax + 1e-9, (sample, true)


def wait_points(run: Run, selected: str) -> Hist:
    [hist] = grouped(
        run.delta("fileresp_phase_duration_seconds"),
        (),
        {"fileresp_phase": "threadpool.wait", "fileresp_framework": selected},
    ).values()
    return hist


def responses(run: Run, selected: str) -> Hist:
    [hist] = grouped(
        run.delta("fileresp_duration_seconds"), (), {"fileresp_framework": selected}
    ).values()
    return hist


def check_wait_is_one_point_per_response(run: Run) -> None:
    """Contract v2: ``fileresp.phase.duration{threadpool.wait}`` has one point
    per response that used the pool (its total wait), so its count counts
    responses (every response here used the pool)."""
    for framework in FRAMEWORKS:
        assert wait_points(run, framework).count == responses(run, framework).count, framework


def check_mean_wait(run: Run, expr: str) -> None:
    check_wait_is_one_point_per_response(run)
    wait = wait_points(run, ".*")
    check_ratio(run, expr, true=wait.sum / wait.count)


def check_share_waiting_over_10ms(run: Run, expr: str) -> None:
    check_wait_is_one_point_per_response(run)
    wait = wait_points(run, ".*")
    within = wait.cumulative[wait.bounds.index(0.01)]
    [sample] = run.query(expr)
    assert wait.count - within >= 1  # the response queued behind the held pool
    low = 1 - (within / wait.count) * run.fmax
    high = 1 - (within / wait.count) / run.fmax
    assert low - 1e-9 <= sample.value <= high + 1e-9, (sample, 1 - within / wait.count)


def check_share_of_time_waiting(run: Run, expr: str) -> None:
    check_wait_is_one_point_per_response(run)
    wait, total = wait_points(run, ".*"), responses(run, ".*")
    assert wait.sum <= total.sum
    check_ratio(run, expr, true=wait.sum / total.sum)


def check_no_304_opened(run: Run, expr: str) -> None:
    """The alarm's sum: 0, not empty (contract v2: the 304 series exists at 0)."""
    assert run.query(expr) == [Sample({}, 0.0)], (
        "expected one 0: the 304 series of fileresp.opens is reported at 0 from "
        "instrument() on (contract v2)"
    )


def check_304_series_at_zero(run: Run, expr: str) -> None:
    got = by_labels(run.query(expr), ("fileresp_framework",))
    assert got == {(f,): 0.0 for f in FRAMEWORKS}


def check_304_rate(run: Run, expr: str) -> None:
    true = {("app", f): float(run.not_modified[f]) for f in FRAMEWORKS}
    check_rate(run, expr, true=true, by=("job", "fileresp_framework"), window=300)


def check_no_304_opened_in_histogram(run: Run, expr: str) -> None:
    assert run.query(expr) == []
    # The series it would find: 304s that did not open, counted since start.
    control = expr.replace('fileresp_opened="true"', 'fileresp_opened="false"')
    got = by_labels(run.query(control), ("job", "fileresp_framework"))
    final = grouped(
        run.final("fileresp_duration_seconds"),
        ("fileresp_framework",),
        {"http_response_status_code": "304", "fileresp_opened": "false"},
    )
    assert got == {("app", f): hist.count for (f,), hist in final.items()}


def check_304_alert_expr(run: Run, expr: str, by: tuple[str, ...]) -> None:
    """``... > 0`` is empty, and without ``> 0`` each framework's 0 is there."""
    assert run.query(expr) == []
    armed = by_labels(run.query(re.sub(r"\s*>\s*0\s*$", "", expr)), by)
    job = {"job": "app", "service_name": "", "fileresp_framework": None}
    expected = {tuple(job[n] if job[n] is not None else f for n in by): 0.0 for f in FRAMEWORKS}
    assert armed == expected


def check_occupancy(run: Run, expr: str, framework: str, gauge: str) -> None:
    [sample] = run.query(expr)
    assert sample.labels["fileresp_framework"] == framework
    assert sample.labels["job"] == "app"
    if framework == "aiohttp":
        # The pool was full (busy = limit) within the last minute.
        assert run.at - run.saturated_at < 55
        assert sample.value == 1.0
    else:
        limit = run.final("fileresp_threadpool_limit")[
            frozenset({("fileresp_framework", framework)})
        ]
        assert limit == STARLETTE_TOKENS
        assert 0.0 <= sample.value <= 1.0
        assert abs(sample.value * limit - round(sample.value * limit)) < 1e-9  # whole tokens
    [(_, name_value)] = [
        (k, v) for k, v in run.final(gauge).items() if dict(k)["fileresp_framework"] == framework
    ]
    assert name_value == 0.0  # idle when collected after the traffic


def check_pool_saturated_rule(run: Run, expr: str) -> None:
    assert run.query(expr) == []  # queued 0 since the release
    during = run.query(expr, at=run.saturated_at)
    assert [(s.labels["fileresp_framework"], s.value >= 1) for s in during] == [("aiohttp", True)]


def check_gauge_sum(run: Run, expr: str, selected: str, gauge: str) -> None:
    """``sum by (fileresp_framework) (gauge{...})`` at the end: the idle pool's
    state, as the in-memory reader collected it then (borrowed is Starlette's,
    busy aiohttp's; limit and queued both)."""
    got = by_labels(run.query(expr), ("fileresp_framework",))
    final = grouped(run.final(gauge), ("fileresp_framework",), {"fileresp_framework": selected})
    assert got == final, expr
    owners = {
        "fileresp_threadpool_borrowed": {"starlette"},
        "fileresp_threadpool_busy": {"aiohttp"},
    }.get(gauge, set(FRAMEWORKS))
    expected = [f for f in frameworks_of(selected) if f in owners]
    if gauge == "fileresp_threadpool_limit":
        limits = {"starlette": STARLETTE_TOKENS, "aiohttp": AIOHTTP_WORKERS}
        assert got == {(f,): float(limits[f]) for f in expected}
    else:  # idle after the traffic
        assert got == {(f,): 0.0 for f in expected}


def check_opens_by_status(run: Run, expr: str, selected: str) -> None:
    opens = grouped(
        run.delta("fileresp_opens_total"),
        ("http_response_status_code",),
        {"fileresp_framework": selected},
    )
    expected = {("200",): float(sum(run.sent[f] for f in frameworks_of(selected)))}
    assert {k: v for k, v in opens.items() if v} == expected
    expected[("304",)] = 0.0  # the 0 series, there from the first file response on
    check_rate(run, expr, true=expected, by=("http_response_status_code",), window=300)


# -- every expression and its check ----------------------------------------------------

Check = Callable[[Run, str], None]
RANGE_QUANTILE = re.compile(r"histogram_quantile\((0\.\d+),")


def quantile_of(expr: str) -> float:
    found = RANGE_QUANTILE.search(expr)
    assert found, expr
    return float(found.group(1))


def _quantile(metric: str, by: tuple[str, ...], selector: dict[str, str], **kw: Any) -> Check:
    def check(run: Run, expr: str) -> None:
        check_quantile(
            run, expr, q=quantile_of(expr), metric=metric, by=by, selector=selector, **kw
        )

    return check


def _per_framework(make: Callable[[str], Callable[[Run, str], None]]) -> Check:
    """A dashboard expression: checked with each value of ``$framework``."""

    def check(run: Run, expr: str) -> None:
        for selected in FRAMEWORK_CHOICES:
            make(selected)(run, grafana(expr, selected))

    return check


def grafana(expr: str, framework: str) -> str:
    return (
        expr.replace("$framework", framework)
        .replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", RANGE)
    )


WAIT = {"fileresp_phase": "threadpool.wait"}
ANY: dict[str, str] = {}
DURATION = "fileresp_duration_seconds"
PHASE = "fileresp_phase_duration_seconds"


def _dash_quantile(metric: str, by: tuple[str, ...], extra: dict[str, str]) -> Check:
    return _per_framework(
        lambda selected: _quantile(metric, by, {**extra, "fileresp_framework": selected})
    )


CHECKS: dict[str, Check] = {
    # docs/metrics.md
    "histogram_quantile(0.99, sum by (le, fileresp_outcome) "
    "(rate(fileresp_duration_seconds_bucket[5m])))": _quantile(
        DURATION, ("fileresp_outcome",), ANY
    ),
    "histogram_quantile(0.99, sum by (le, fileresp_phase) "
    "(rate(fileresp_phase_duration_seconds_bucket[5m])))": _quantile(
        PHASE, ("fileresp_phase",), ANY
    ),
    'sum(rate(fileresp_phase_duration_seconds_sum{fileresp_phase="threadpool.wait"}[5m])) / '
    'sum(rate(fileresp_phase_duration_seconds_count{fileresp_phase="threadpool.wait"}[5m]))': (
        check_mean_wait
    ),
    '1 - ( sum(rate(fileresp_phase_duration_seconds_bucket{fileresp_phase="threadpool.wait", '
    'le="0.01"}[5m])) / '
    'sum(rate(fileresp_phase_duration_seconds_count{fileresp_phase="threadpool.wait"}[5m])) )': (
        check_share_waiting_over_10ms
    ),
    'sum(rate(fileresp_phase_duration_seconds_sum{fileresp_phase="threadpool.wait"}[5m])) / '
    "sum(rate(fileresp_duration_seconds_sum[5m]))": check_share_of_time_waiting,
    f"sum(increase({OPENS_304}[1h]))": check_no_304_opened,
    "max_over_time(fileresp_threadpool_borrowed[1m]) / fileresp_threadpool_limit": (
        lambda run, expr: check_occupancy(run, expr, "starlette", "fileresp_threadpool_borrowed")
    ),
    "max_over_time(fileresp_threadpool_busy[1m]) / fileresp_threadpool_limit": (
        lambda run, expr: check_occupancy(run, expr, "aiohttp", "fileresp_threadpool_busy")
    ),
    "min_over_time(fileresp_threadpool_queued[5m]) > 0": check_pool_saturated_rule,
    # docs/proving-304.md (and its sum(increase(...[1h])), the same as above)
    OPENS_304: check_304_series_at_zero,
    "sum by (job, fileresp_framework) "
    '(rate(fileresp_duration_seconds_count{http_response_status_code="304"}[5m]))': check_304_rate,
    "sum by (job, fileresp_framework) (fileresp_duration_seconds_count"
    '{http_response_status_code="304", fileresp_opened="true"})': check_no_304_opened_in_histogram,
    f"sum by (job, fileresp_framework) (increase({OPENS_304}[15m])) > 0": (
        lambda run, expr: check_304_alert_expr(run, expr, ("job", "fileresp_framework"))
    ),
    # examples/tempo/alerts.yaml
    f"sum by (service_name, fileresp_framework) (increase({OPENS_304}[5m])) > 0": (
        lambda run, expr: check_304_alert_expr(run, expr, ("service_name", "fileresp_framework"))
    ),
    "histogram_quantile(0.99, sum by (le, fileresp_framework) (rate(fileresp_phase_duration_"
    'seconds_bucket{fileresp_phase="threadpool.wait"}[5m]))) > 0.05': _quantile(
        PHASE, ("fileresp_framework",), WAIT, above=0.05
    ),
    # examples/tempo/grafana/dashboards/otel-fileresp.json
    'sum(increase(fileresp_opens_total{http_response_status_code="304",'
    'fileresp_framework=~"$framework"}[$__range]))': _per_framework(
        lambda selected: check_no_304_opened
    ),
    "sum by (http_response_status_code) "
    '(rate(fileresp_opens_total{fileresp_framework=~"$framework"}[$__rate_interval]))': (
        _per_framework(lambda selected: lambda run, e: check_opens_by_status(run, e, selected))
    ),
    **{
        f"histogram_quantile({q}, sum by (le, fileresp_phase) (rate(fileresp_phase_duration_"
        'seconds_bucket{fileresp_framework=~"$framework"}[$__rate_interval])))': _dash_quantile(
            PHASE, ("fileresp_phase",), ANY
        )
        for q in ("0.5", "0.95", "0.99")
    },
    **{
        f"histogram_quantile({q}, sum by (le, fileresp_framework) (rate(fileresp_phase_duration_"
        'seconds_bucket{fileresp_phase="threadpool.wait",fileresp_framework=~"$framework"}'
        "[$__rate_interval])))": _dash_quantile(PHASE, ("fileresp_framework",), WAIT)
        for q in ("0.5", "0.95", "0.99")
    },
    **{
        f"histogram_quantile({q}, sum by (le, fileresp_outcome) (rate(fileresp_duration_"
        'seconds_bucket{fileresp_framework=~"$framework"}[$__rate_interval])))': _dash_quantile(
            DURATION, ("fileresp_outcome",), ANY
        )
        for q in ("0.5", "0.95", "0.99")
    },
    **{
        f"sum by (fileresp_framework) (fileresp_threadpool_{gauge}"
        '{fileresp_framework=~"$framework"})': _per_framework(
            lambda selected, gauge=gauge: (
                lambda run, e: check_gauge_sum(run, e, selected, f"fileresp_threadpool_{gauge}")
            )
        )
        for gauge in ("borrowed", "busy", "queued", "limit")
    },
}


def found_expressions() -> list[Expression]:
    return [*promql_expressions(), *rule_expressions(), *dashboard_expressions()]


# docs/upgrading.md compares two versions of a service (a service_version
# label): its PromQL is run on a real Prometheus scraping two app versions by
# tests/docs/test_docs_upgrading.py::test_the_promql_compares_two_versions, which
# this module's single-version traffic cannot stand in for.
TWO_VERSION_PAGES = ("docs/upgrading.md",)
EXPRESSIONS = [
    e for e in found_expressions() if e.source.split(":")[0].split("#")[0] not in TWO_VERSION_PAGES
]


def test_every_expression_found_has_a_check() -> None:
    found = {e.key for e in EXPRESSIONS}
    unchecked = [f"{e.source}: {e.key}" for e in EXPRESSIONS if e.key not in CHECKS]
    assert not unchecked, "PromQL without a check in test_prometheus.CHECKS:\n" + "\n".join(
        unchecked
    )
    stale = [key for key in CHECKS if key not in found]
    assert not stale, "checks of PromQL no longer in docs/ or examples/:\n" + "\n".join(stale)
    # Every kind of place was searched and had expressions.
    sources = {e.source.split(":")[0].split("#")[0] for e in EXPRESSIONS}
    assert {
        "docs/metrics.md",
        "docs/proving-304.md",
        "examples/tempo/alerts.yaml",
        "examples/tempo/grafana/dashboards/otel-fileresp.json",
    } <= sources


def test_no_promql_outside_promql_fences() -> None:
    assert unfenced_promql() == []


@pytest.mark.parametrize("expression", EXPRESSIONS, ids=[e.source for e in EXPRESSIONS])
def test_expression(run: Run, expression: Expression) -> None:
    CHECKS[expression.key](run, expression.text)


def test_dashboard_variable_lists_both_frameworks(run: Run) -> None:
    [variable] = dashboard_variables()
    metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable.text).groups()
    assert sorted(run.prometheus.label_values(label, metric)) == sorted(FRAMEWORKS)


# -- the alerting rules, as Prometheus evaluates them ----------------------------------


OPENED_304_ALERTS = ("FileResponse304OpenedFile", "FileOpenedFor304")


def test_the_304_alerts_stay_quiet_on_healthy_304s(run: Run) -> None:
    """Positive control of the alarm: 304s were served, the rules were
    evaluated on them, their series are there at 0, and nothing fires."""
    assert sum(run.not_modified.values()) > 0
    for name in OPENED_304_ALERTS:
        rule = run.prometheus.rule(name)
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule
        assert rfc3339(rule["lastEvaluation"]) > run.at
        armed = run.query(re.sub(r"\s*>\s*0\s*$", "", rule["query"]))
        assert sorted(s.labels["fileresp_framework"] for s in armed) == sorted(FRAMEWORKS)
        assert {s.value for s in armed} == {0.0}


def test_pool_saturated_alert_fired_while_jobs_queued(run: Run) -> None:
    assert [(a["labels"]["fileresp_framework"], a["state"]) for a in run.saturated_alerts] == [
        ("aiohttp", "firing")
    ]
    rule = run.prometheus.rule("FileResponsePoolSaturated")
    assert rule["health"] == "ok"
    assert rule["state"] == "inactive"  # nothing queued since the release


def test_pool_wait_alert_is_pending_for_the_queued_response(run: Run) -> None:
    """p99 of aiohttp's waits is the response that queued for seconds: above
    50 ms, pending for its ``for: 10m``; Starlette's pool never filled."""
    rule = run.prometheus.rule("FileResponseWorkerPoolWaitHigh")
    assert rule["health"] == "ok"
    assert alert_states(run.prometheus, "FileResponseWorkerPoolWaitHigh") == [
        ("pending", {"fileresp_framework": "aiohttp"})
    ]
