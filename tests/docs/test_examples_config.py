"""The Jaeger and Tempo kits of examples/ agree with themselves and with the package.

No Docker, Jaeger, Tempo or Grafana runs here, so every file is parsed and
cross-checked instead: published ports against the receivers that listen
behind them, mounted files against the paths the services read, datasource
uids in the dashboard against the provisioning, and every metric and label the
dashboard and alert rules query against what the package really emits,
translated as Prometheus's OTLP receiver does (``UnderscoreEscapingWithSuffixes``:
dots to underscores, the unit appended, ``{...}`` annotations dropped, ``s`` as
``seconds``, ``_total`` for counters, ``_bucket``/``_sum``/``_count`` for
histograms). The emitted set comes from a real request on each framework, not
from a copy of the names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.metrics.export import Histogram, Sum
from support.harness import Telemetry, instrumenting, serve_aiohttp, serve_asgi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JAEGER = EXAMPLES / "jaeger"
TEMPO = EXAMPLES / "tempo"
OTLP_PORTS = {"grpc": 4317, "http": 4318}
PROMQL_METRIC = re.compile(r"\bfileresp_[a-z_]+")
PROMQL_LABEL = re.compile(r"\b([a-z_]+)\s*(?:=~|!=|=)\s*\"|by \(([^)]*)\)")


def load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port of a compose service."""
    ports: dict[int, int] = {}
    for entry in service.get("ports", []):
        host, container = str(entry).split(":")
        ports[int(container)] = int(host)
    return ports


def mounts(service: dict[str, Any], base: Path) -> dict[str, Path]:
    """container path -> host path of a compose service's bind mounts."""
    found: dict[str, Path] = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        if source.startswith("."):
            found[target] = (base / source).resolve()
    return found


# -- what the package emits ------------------------------------------------------


def prometheus_names(name: str, unit: str, data: Any) -> set[str]:
    base = re.sub(r"[^a-zA-Z0-9_:]", "_", name)
    unit = re.sub(r"\{[^}]*\}", "", unit)
    unit = {"s": "seconds", "By": "bytes"}.get(unit, unit)
    if unit and not base.endswith("_" + unit):
        base += "_" + unit
    if isinstance(data, Histogram):
        return {base, base + "_bucket", base + "_sum", base + "_count"}
    if isinstance(data, Sum) and data.is_monotonic:
        return {base + "_total"}
    return {base}


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str], set[str]]:
    """(Prometheus metric names, Prometheus label names, span names) the
    package produced for a 200 and a 304 on each framework."""
    from aiohttp import web
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    root = tmp_path_factory.mktemp("static")
    (root / "hello.txt").write_bytes(b"hello\n")
    telemetry = Telemetry()

    def aiohttp_app() -> web.Application:
        app = web.Application()
        app.router.add_routes([web.static("/static", root)])
        return app

    starlette_app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(root)))])
    metrics: set[str] = set()
    labels: set[str] = set()
    spans: set[str] = set()
    with instrumenting("starlette", telemetry), instrumenting("aiohttp", telemetry):
        for serve, app in ((serve_asgi, starlette_app), (serve_aiohttp, aiohttp_app)):
            with serve(app) as server:
                etag = server.request("GET", "/static/hello.txt").header("etag")
                assert server.request("GET", "/static/hello.txt", {"If-None-Match": etag})
                telemetry.wait_for("fileresp.response", 2)
                spans |= {span.name for span in telemetry.spans()}
                telemetry.clear()
                # Collected while the server runs: the pool gauges read its pool.
                data = telemetry.metric_reader.get_metrics_data()
                assert data is not None
                for resource_metrics in data.resource_metrics:
                    for scope_metrics in resource_metrics.scope_metrics:
                        for metric in scope_metrics.metrics:
                            metrics |= prometheus_names(metric.name, metric.unit, metric.data)
                            for point in metric.data.data_points:
                                labels |= {re.sub(r"\W", "_", k) for k in point.attributes or {}}
    telemetry.shutdown()
    return metrics, labels | {"le", "service_name"}, spans


def promql_references(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses."""
    labels: set[str] = set()
    for matcher, by in PROMQL_LABEL.findall(expr):
        labels |= {matcher} if matcher else {label.strip() for label in by.split(",")}
    # What is left without selectors and groupings are metric names.
    bare = re.sub(r"\{[^}]*\}|by \([^)]*\)", " ", expr)
    return set(PROMQL_METRIC.findall(bare)), labels - {""}


# -- Jaeger ----------------------------------------------------------------------


def test_jaeger_receivers_listen_where_compose_publishes() -> None:
    [jaeger] = load(JAEGER / "docker-compose.yaml")["services"].values()
    ports = published(jaeger)
    assert ports[16686] == 16686
    for protocol, port in OTLP_PORTS.items():
        flag = f"--set=receivers.otlp.protocols.{protocol}.endpoint=0.0.0.0:{port}"
        assert flag in jaeger["command"], f"Jaeger v2 binds {protocol} to localhost without it"
        assert ports[port] == port


# -- Tempo, Prometheus, Grafana --------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return load(TEMPO / "docker-compose.yaml")["services"]


def test_every_config_file_parses_and_is_mounted(stack: dict[str, Any]) -> None:
    files = sorted(p for p in TEMPO.rglob("*") if p.suffix in {".yaml", ".json"})
    assert len(files) == 7
    for path in files:
        assert load(path), path
    mounted = {host for service in stack.values() for host in mounts(service, TEMPO).values()}
    for path in files:
        if path.name != "docker-compose.yaml":
            assert any(path == m or m in path.parents for m in mounted), f"{path} not mounted"
    for service in stack.values():
        for host in mounts(service, TEMPO).values():
            assert host.exists(), host


def test_services_read_the_files_mounted_for_them(stack: dict[str, Any]) -> None:
    tempo_flag = next(a for a in stack["tempo"]["command"] if a.startswith("-config.file="))
    assert mounts(stack["tempo"], TEMPO)[tempo_flag.split("=", 1)[1]] == TEMPO / "tempo.yaml"
    prometheus = stack["prometheus"]["command"]
    config_flag = next(a for a in prometheus if a.startswith("--config.file="))
    prometheus_mounts = mounts(stack["prometheus"], TEMPO)
    assert prometheus_mounts[config_flag.split("=", 1)[1]] == TEMPO / "prometheus.yaml"
    for rule_file in load(TEMPO / "prometheus.yaml")["rule_files"]:
        assert prometheus_mounts[rule_file] == TEMPO / "alerts.yaml"
    [provider] = load(TEMPO / "grafana/provisioning/dashboards/dashboards.yaml")["providers"]
    grafana_mounts = mounts(stack["grafana"], TEMPO)
    assert grafana_mounts[provider["options"]["path"]] == TEMPO / "grafana/dashboards"
    assert grafana_mounts["/etc/grafana/provisioning"] == TEMPO / "grafana/provisioning"


def test_tempo_receives_otlp_and_keeps_internal_spans(stack: dict[str, Any]) -> None:
    tempo = load(TEMPO / "tempo.yaml")
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    ports = published(stack["tempo"])
    for protocol, port in OTLP_PORTS.items():
        assert protocols[protocol]["endpoint"] == f"0.0.0.0:{port}"
        assert ports[port] == port
    assert ports[tempo["server"]["http_listen_port"]] == 3200
    generator = tempo["metrics_generator"]
    assert generator["processor"]["local_blocks"]["filter_server_spans"] is False
    processors = tempo["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert "local-blocks" in processors
    [remote_write] = generator["storage"]["remote_write"]
    assert remote_write["url"] == "http://prometheus:9090/api/v1/write"
    assert "--web.enable-remote-write-receiver" in stack["prometheus"]["command"]


def test_prometheus_receives_the_apps_metrics_over_otlp(stack: dict[str, Any]) -> None:
    assert "--web.enable-otlp-receiver" in stack["prometheus"]["command"]
    assert published(stack["prometheus"])[9090] == 9090
    otlp = load(TEMPO / "prometheus.yaml")["otlp"]
    assert otlp["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    assert "service.name" in otlp["promote_resource_attributes"]
    # The endpoints the README tells the apps to export to are these.
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=http://localhost:9090/api/v1/otlp/v1/metrics" in (
        readme
    )
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://localhost:4318/v1/traces" in readme
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318" in readme


def test_datasources_point_at_the_services(stack: dict[str, Any]) -> None:
    sources = load(TEMPO / "grafana/provisioning/datasources/datasources.yaml")["datasources"]
    by_type = {source["type"]: source for source in sources}
    assert by_type["tempo"]["url"] == "http://tempo:3200"
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert {"tempo", "prometheus"} <= set(stack)
    uids = {source["uid"] for source in sources}
    for source in sources:
        for link in source.get("jsonData", {}).values():
            if isinstance(link, dict) and "datasourceUid" in link:
                assert link["datasourceUid"] in uids


def dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    dashboard = load(TEMPO / "grafana/dashboards/otel-fileresp.json")
    return [(panel, target) for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_uses_provisioned_datasources() -> None:
    sources = load(TEMPO / "grafana/provisioning/datasources/datasources.yaml")["datasources"]
    types = {source["uid"]: source["type"] for source in sources}
    dashboard = load(TEMPO / "grafana/dashboards/otel-fileresp.json")
    referenced = [panel["datasource"] for panel in dashboard["panels"]]
    referenced += [target["datasource"] for _, target in dashboard_targets()]
    referenced += [v["datasource"] for v in dashboard["templating"]["list"]]
    for datasource in referenced:
        assert types[datasource["uid"]] == datasource["type"], datasource


def test_dashboard_and_alerts_query_what_the_package_emits(
    emitted: tuple[set[str], set[str], set[str]],
) -> None:
    metrics, labels, spans = emitted
    expressions = [t["expr"] for _, t in dashboard_targets() if "expr" in t]
    dashboard = load(TEMPO / "grafana/dashboards/otel-fileresp.json")
    for variable in dashboard["templating"]["list"]:  # Grafana's label_values(metric, label)
        metric, label = re.fullmatch(
            r"label_values\((\w+), (\w+)\)", variable["definition"]
        ).groups()
        assert metric in metrics and label in labels, variable["definition"]
    for group in load(TEMPO / "alerts.yaml")["groups"]:
        expressions += [rule["expr"] for rule in group["rules"]]
    used_metrics: set[str] = set()
    for expr in expressions:
        names, used_labels = promql_references(expr)
        assert names, expr
        assert names <= metrics, (expr, names - metrics)
        assert used_labels <= labels, (expr, used_labels - labels)
        used_metrics |= names
    # The alarm, per-phase latency, pool wait and pool gauges are all there.
    assert "fileresp_opens_total" in used_metrics
    assert "fileresp_phase_duration_seconds_bucket" in used_metrics
    assert {m for m in metrics if m.startswith("fileresp_threadpool_")} <= used_metrics
    traceql = [t["query"] for _, t in dashboard_targets() if "query" in t]
    assert traceql
    for query in traceql:
        for name in re.findall(r'name = "([^"]+)"', query):
            assert name in spans


def test_304_alarm_turns_red_above_zero() -> None:
    [(panel, target)] = [
        (p, t)
        for p, t in dashboard_targets()
        if 'http_response_status_code="304"' in t.get("expr", "")
    ]
    assert "fileresp_opens_total" in target["expr"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [("green", None), ("red", 1)]
