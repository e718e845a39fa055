"""A real Prometheus on loopback for the tests, the app's scrape endpoint,
and the PromQL of docs/ and examples/ as the files themselves hold it.

- ``running_prometheus()`` starts Debian's ``prometheus`` (2.42: no OTLP
  receiver, so it scrapes) with its own config and data directory in a
  temporary directory, on ``127.0.0.1`` and a free port, and stops it at the
  end. The Debian service is never used.
- ``metrics_endpoint()`` is what an app exposes to it: a ``MeterProvider``
  with ``opentelemetry-exporter-prometheus``'s ``PrometheusMetricReader``
  (its own registry) served by ``prometheus_client`` on a free loopback port,
  next to the SDK's in-memory reader, which the tests read as the truth.
- ``promql_expressions()``, ``rule_sources()`` and ``dashboard_expressions()``
  find every PromQL expression of the docs and examples: fenced ```promql
  blocks of the Markdown files, the alerting rules of ``examples/`` rule
  files and of the docs' ```yaml blocks, and the Grafana dashboards' targets.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry, start_http_server

from support.apps import CustomTelemetry
from support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
# Scrape and rule evaluation, both: short, so a test waits seconds, not minutes.
INTERVAL_S = 1
INSTALL_HINT = (
    "Debian's prometheus package is needed (prometheus and promtool on PATH): "
    "`apt-get update && apt-get install -y prometheus`, as .ci/run does. "
    "The tests start their own server on loopback; the Debian service is not used."
)

T = TypeVar("T")


# -- the binaries ------------------------------------------------------------------


def binaries() -> tuple[str, str]:
    """(prometheus, promtool). Missing: the test fails, in CI and locally."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        where = "CI=true: .ci/run should have installed it" if os.environ.get("CI") else "locally"
        pytest.fail(f"prometheus not found ({where}). {INSTALL_HINT}", pytrace=False)
    return prometheus, promtool


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binaries()[1], *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


# -- waiting, bounded ----------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None], what: str, timeout: float = 20.0, step: float = 0.1
) -> T:
    """``probe()``'s first truthy result, polled for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(step)


# -- the server ---------------------------------------------------------------------


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


@dataclass
class Prometheus:
    """The HTTP API of a running Prometheus."""

    url: str
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        address = f"{self.url}{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(address, timeout=HTTP_TIMEOUT) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:  # a bad query is a 400 with a reason
            body = json.load(error)
            raise AssertionError(f"{path} {params}: {body.get('error')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query; a scalar result is one sample with no labels."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", **params)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]

    def samples(self, selector: str, window: str, at: float) -> list[tuple[float, float]]:
        """The raw samples (time, value) of the one series ``selector`` picks."""
        data = self.api("/api/v1/query", query=f"{selector}[{window}]", time=f"{at:.3f}")
        assert data["resultType"] == "matrix", data
        [series] = data["result"]
        return [(float(t), float(v)) for t, v in series["values"]]

    def rules(self) -> list[dict[str, Any]]:
        groups = self.api("/api/v1/rules")["groups"]
        return [dict(rule, group=group["name"]) for group in groups for rule in group["rules"]]

    def rule(self, name: str, group: str | None = None) -> dict[str, Any]:
        found = [r for r in self.rules() if r["name"] == name and group in (None, r["group"])]
        assert len(found) == 1, (name, group, [(r["group"], r["name"]) for r in self.rules()])
        return found[0]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/alerts")["alerts"])

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"/api/v1/label/{label}/values", **{"match[]": match}))

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def write_config(
    path: Path, targets: dict[str, int], rule_files: list[Path], extra: dict[str, Any] | None = None
) -> Path:
    """A Prometheus config scraping ``job -> port`` on loopback every second."""
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": f"{INTERVAL_S}s",
            "scrape_timeout": f"{INTERVAL_S}s",
            "evaluation_interval": f"{INTERVAL_S}s",
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
        **(extra or {}),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def running_prometheus(
    workdir: Path, targets: dict[str, int], rule_files: list[Path]
) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1, scraping ``targets`` and evaluating ``rule_files``."""
    prometheus, _ = binaries()
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "prometheus.yml", targets, rule_files)
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for attempt in range(3):  # a free port may be taken before Prometheus binds it
        port = free_port()
        log = workdir / f"prometheus-{attempt}.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / f'data-{attempt}'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = Prometheus(f"http://127.0.0.1:{port}", log, process)
        try:
            if _ready(server):
                break
        except BaseException:
            _stop(process)
            raise
        _stop(process)
        if "address already in use" not in server.log_tail(200):
            pytest.fail(f"prometheus did not start:\n{server.log_tail()}", pytrace=False)
    else:
        pytest.fail("prometheus found no free port in 3 tries", pytrace=False)
    try:
        yield server
    finally:
        _stop(process)


def _ready(server: Prometheus) -> bool:
    """Wait (bounded) until ``/-/ready``; False if the process exited first."""
    assert server.process is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"prometheus not ready after {START_TIMEOUT} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


# -- what the app exposes -----------------------------------------------------------


@contextmanager
def metrics_endpoint() -> Iterator[tuple[CustomTelemetry, int]]:
    """Telemetry whose meter provider also feeds a Prometheus scrape endpoint
    on loopback (``/metrics`` on the port yielded)."""
    registry = CollectorRegistry()
    telemetry = CustomTelemetry(metric_readers=[PrometheusMetricReader(registry=registry)])
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield telemetry, int(httpd.server_port)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(STOP_TIMEOUT)
        telemetry.shutdown()


# -- the expressions of docs/ and examples/ -----------------------------------------


@dataclass(frozen=True)
class Expression:
    """One PromQL expression as a file holds it."""

    source: str  # path:line, or path#panel/refId
    text: str

    @property
    def key(self) -> str:
        return normalize(self.text)


def normalize(expr: str) -> str:
    """The expression without comments, on one line with single spaces."""
    lines = (line.split("#", 1)[0] for line in expr.splitlines())
    return " ".join(" ".join(lines).split())


def markdown_files() -> list[Path]:
    return sorted([ROOT / "README.md", *DOCS.rglob("*.md"), *EXAMPLES.rglob("*.md")])


def fenced_blocks(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line of the opening fence, language, content) of each fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = lines[i].strip()
        if opening.startswith("```"):
            language = opening[3:].strip()
            start = i
            i += 1
            body: list[str] = []
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            yield start + 1, language, "\n".join(body)
        i += 1


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def promql_expressions() -> list[Expression]:
    """Every expression of the ```promql blocks (blank lines separate several)."""
    found: list[Expression] = []
    for path in markdown_files():
        for line, language, body in fenced_blocks(path):
            if language != "promql":
                continue
            offset = 0
            for chunk in re.split(r"\n\s*\n", body):
                if chunk.strip():
                    found.append(Expression(f"{relative(path)}:{line + 1 + offset}", chunk.strip()))
                offset += chunk.count("\n") + 2
    return found


# Prometheus series names of the package: a block mentioning one is PromQL or rules.
SERIES = re.compile(
    r"\bfileresp_(?:duration_seconds|phase_duration_seconds|opens_total|threadpool_)"
)


def unfenced_promql() -> list[str]:
    """Blocks that mention the package's series but are neither ```promql nor
    rules in ```yaml: PromQL the tests would not find."""
    return [
        f"{relative(path)}:{line} ({language or 'no language'})"
        for path in markdown_files()
        for line, language, body in fenced_blocks(path)
        if language not in ("promql", "yaml") and SERIES.search(body)
    ]


@dataclass(frozen=True)
class RuleSource:
    """Alerting or recording rules: a rule file, or a docs' ```yaml block."""

    source: str
    groups: list[dict[str, Any]]
    file: Path | None = None  # a rule file as it is; None: shown in the docs

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.groups for rule in group["rules"]]


def _as_groups(document: Any, name: str) -> list[dict[str, Any]] | None:
    if isinstance(document, dict) and isinstance(document.get("groups"), list):
        return list(document["groups"])
    if (
        isinstance(document, list)
        and document
        and all(isinstance(r, dict) and ("alert" in r or "record" in r) for r in document)
    ):
        return [{"name": name, "rules": document}]  # a rule list shown on its own
    return None


def rule_sources() -> list[RuleSource]:
    """The rule files of examples/ and the rules shown in the docs."""
    found: list[RuleSource] = []
    for path in sorted(EXAMPLES.rglob("*.yaml")) + sorted(EXAMPLES.rglob("*.yml")):
        groups = _as_groups(yaml.safe_load(path.read_text(encoding="utf-8")), path.stem)
        if groups is not None:
            found.append(RuleSource(relative(path), groups, path))
    for path in markdown_files():
        for line, language, body in fenced_blocks(path):
            if language != "yaml" or not SERIES.search(body):
                continue
            source = f"{relative(path)}:{line}"
            groups = _as_groups(yaml.safe_load(body), f"{path.stem}-{line}")
            assert groups is not None, f"{source}: a YAML block with PromQL that is not rules"
            found.append(RuleSource(source, groups))
    return found


def rule_expressions() -> list[Expression]:
    return [
        Expression(f"{rules.source}#{rule.get('alert') or rule.get('record')}", rule["expr"])
        for rules in rule_sources()
        for rule in rules.rules()
    ]


def write_rule_file(path: Path, sources: list[RuleSource]) -> Path:
    """The rules of ``sources`` in one file, one group per source group."""
    groups = [group for rules in sources for group in rules.groups]
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names)), f"two rule groups share a name: {names}"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def dashboards() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.json"))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows


def dashboard_expressions() -> list[Expression]:
    """The ``expr`` of every Prometheus target of the Grafana dashboards."""
    found: list[Expression] = []
    for path in dashboards():
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(dashboard.get("panels", [])):
            for target in panel.get("targets", []):
                source = target.get("datasource") or panel.get("datasource") or {}
                if source.get("type") == "prometheus":
                    found.append(
                        Expression(
                            f"{relative(path)}#panel{panel['id']}/{target['refId']}",
                            target["expr"],
                        )
                    )
    return found


def dashboard_variables() -> list[Expression]:
    """Grafana's ``label_values(...)`` queries of the dashboards' variables."""
    return [
        Expression(f"{relative(path)}#${variable['name']}", variable["definition"])
        for path in dashboards()
        for variable in json.loads(path.read_text(encoding="utf-8"))["templating"]["list"]
        if variable.get("datasource", {}).get("type") == "prometheus"
    ]


# -- what the tests share ---------------------------------------------------------

FRAMEWORKS = ("starlette", "aiohttp")
PATH = "/static/small.txt"
ALERTS = EXAMPLES / "tempo" / "alerts.yaml"
OPENS_304 = 'fileresp_opens_total{http_response_status_code="304"}'


def rule_files(tmp: Path) -> list[Path]:
    """The rule files Prometheus loads: the real examples' files as they are,
    and the docs' rules gathered in one temporary file."""
    sources = rule_sources()
    files = [s.file for s in sources if s.file is not None]
    assert ALERTS in files
    shown = [s for s in sources if s.file is None]
    assert shown, "no rules found in the docs"
    return [*files, write_rule_file(tmp / "docs-rules.yaml", shown)]


def make_site(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "small.txt").write_bytes(bytes(range(256)) * 4)
    return root


def get(server: Any, headers: dict[str, str] | None = None, path: str = PATH) -> Any:
    return server.request("GET", path, headers or {}, timeout=60.0)


def rfc3339(stamp: str) -> float:
    """Prometheus's RFC 3339 times (nanoseconds, Z) as a Unix time."""
    found = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert found, stamp
    base, fraction, zone = found.groups()
    whole = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return whole + (float(f"0.{fraction}") if fraction else 0.0)


def by_labels(samples: list[Sample], by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for sample in samples:
        group = tuple(sample.labels.get(name, "") for name in by)
        assert group not in found, (by, samples)
        found[group] = sample.value
    return found


def alert_states(prometheus: Prometheus, name: str) -> list[tuple[str, dict[str, str]]]:
    """(state, fileresp_* labels) of the active alerts of rule ``name``."""
    return sorted(
        (
            (a["state"], {k: v for k, v in a["labels"].items() if k.startswith("fileresp_")})
            for a in prometheus.alerts()
            if a["labels"]["alertname"] == name
        ),
        key=lambda found: (found[0], sorted(found[1].items())),
    )


# -- the truth: the SDK's in-memory reader, named as Prometheus names it -------------

Labels = frozenset[tuple[str, str]]


def label_name(attribute: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", attribute)


def label_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class Hist:
    bounds: tuple[float, ...]  # upper bounds, +Inf last
    cumulative: tuple[float, ...]
    sum: float

    @property
    def count(self) -> float:
        return self.cumulative[-1]


def snapshot(telemetry: CustomTelemetry) -> dict[str, dict[Labels, Any]]:
    """Prometheus metric name -> labels -> value or Hist, from one collection."""
    names = {
        "fileresp.duration": "fileresp_duration_seconds",
        "fileresp.phase.duration": "fileresp_phase_duration_seconds",
        "fileresp.opens": "fileresp_opens_total",
    }
    found: dict[str, dict[Labels, Any]] = {}
    data = telemetry.metric_reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = names.get(metric.name, label_name(metric.name))
                for point in metric.data.data_points:
                    labels = frozenset(
                        (label_name(k), label_value(v)) for k, v in point.attributes.items()
                    )
                    if hasattr(point, "bucket_counts"):
                        cumulative = []
                        total = 0
                        for count in point.bucket_counts:
                            total += count
                            cumulative.append(float(total))
                        bounds = (*map(float, point.explicit_bounds), math.inf)
                        value: Any = Hist(bounds, tuple(cumulative), point.sum)
                    else:
                        value = float(point.value)
                    found.setdefault(name, {})[labels] = value
    return found
