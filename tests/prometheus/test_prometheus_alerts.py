"""The alert rules of the docs and examples against a real regression, and
promtool over the rule files and the example config.

A 304 that opens its file, on aiohttp (``EarlyOpenFileResponse``, a test
double of aiohttp PR #10101) and on Starlette (a ``StaticFiles`` that opens
the served file on a 304), scraped by Prometheus 2.42 from the app's
``opentelemetry-exporter-prometheus`` endpoint: both 304 alerts
(``FileResponse304OpenedFile`` of examples/tempo/alerts.yaml, loaded from the
file, and ``FileOpenedFor304`` of docs/proving-304.md) fire from the FIRST
regressed open, for that framework only. It relies on the contract's 304
series of ``fileresp.opens`` reported at 0 from ``instrument()`` on.

A module of its own: the instrumentors are process-wide, so this test must
not run while test_prometheus.py's module fixture has them instrumented.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from starlette.applications import Starlette
from starlette.routing import Mount
from support.apps import EagerStaticFiles, instrumenting, serve
from support.harness import serve_asgi
from support.prometheus import (
    ALERTS,
    EXAMPLES,
    OPENS_304,
    PATH,
    RuleSource,
    alert_states,
    by_labels,
    get,
    make_site,
    metrics_endpoint,
    promtool,
    rfc3339,
    rule_files,
    rule_sources,
    running_prometheus,
    snapshot,
    wait_for,
    write_rule_file,
)

OPENED_304_ALERTS = ("FileResponse304OpenedFile", "FileOpenedFor304")


def test_the_304_alerts_fire_on_the_first_regressed_open(tmp_path: Path) -> None:
    """aiohttp's ``EarlyOpenFileResponse`` (PR #10101's open before the checks)
    and a Starlette ``StaticFiles`` that opens on 304: one regressed 304 each,
    and both alerts of the docs fire for that framework, from that first one."""
    root = make_site(tmp_path / "static")
    rules = rule_files(tmp_path)
    eager = Starlette(routes=[Mount("/static", EagerStaticFiles(directory=str(root)))])
    with (
        metrics_endpoint() as (telemetry, port),
        serve("aiohttp", root, telemetry) as aiohttp,
        serve_asgi(eager) as starlette,
        instrumenting("starlette", telemetry),
        running_prometheus(tmp_path / "server", {"app": port}, rules) as prometheus,
    ):
        # A 200 opens the file too: not an alarm.
        etag = starlette.request("GET", PATH).header("etag")
        assert get(aiohttp, path="/early/small.txt").status == 200
        zero = {("aiohttp",): 0.0, ("starlette",): 0.0}

        def armed() -> bool:
            got = by_labels(prometheus.query(OPENS_304), ("fileresp_framework",))
            return got == zero

        wait_for(
            armed,
            "fileresp_opens_total{304} at 0 for both frameworks before the first 304: "
            "the contract (v2.1) reports that series from the app's startup or its "
            "first file response on (this server runs without lifespan)",
            20,
        )
        scraped = time.time()
        wait_for(
            lambda: all(
                rfc3339(prometheus.rule(n)["lastEvaluation"]) > scraped + 1.5
                for n in OPENED_304_ALERTS
            ),
            "rule evaluations after the 200s",
            20,
        )
        for name in OPENED_304_ALERTS:
            assert alert_states(prometheus, name) == []

        fired: list[str] = []
        for framework in ("aiohttp", "starlette"):
            if framework == "aiohttp":
                headers = {"If-None-Match": etag_aiohttp(root)}
                assert aiohttp.request("GET", "/early/small.txt", headers).status == 304
                assert aiohttp.settled()
            else:
                assert starlette.request("GET", PATH, {"If-None-Match": etag}).status == 304
            fired.append(framework)
            expected = [("firing", {"fileresp_framework": f}) for f in sorted(fired)]
            for name in OPENED_304_ALERTS:
                wait_for(
                    lambda name=name, expected=expected: alert_states(prometheus, name) == expected,
                    f"{name} firing for {fired} (one regressed 304 each)",
                    20,
                )
            for alert in prometheus.alerts():
                if alert["labels"]["alertname"] in OPENED_304_ALERTS:
                    # increase() of one open, from the 0 sample: 1 (x extrapolation)
                    assert 1.0 <= float(alert["value"]) < 2.0, alert
        truth = snapshot(telemetry)["fileresp_opens_total"]
        assert {
            dict(k)["fileresp_framework"]: v
            for k, v in truth.items()
            if dict(k)["http_response_status_code"] == "304"
        } == {"aiohttp": 1.0, "starlette": 1.0}
        # The docs' other views of the regression agree.
        [total] = prometheus.query(f"sum(increase({OPENS_304}[1h]))")
        assert 2.0 <= total.value < 3.0
        histogram = by_labels(
            prometheus.query(
                "sum by (job, fileresp_framework) (fileresp_duration_seconds_count"
                '{http_response_status_code="304", fileresp_opened="true"})'
            ),
            ("job", "fileresp_framework"),
        )
        assert histogram == {("app", "aiohttp"): 1.0, ("app", "starlette"): 1.0}


def etag_aiohttp(root: Path) -> str:
    st = (root / "small.txt").stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


# -- promtool ---------------------------------------------------------------------------


@pytest.mark.parametrize("rules", rule_sources(), ids=lambda r: r.source)
def test_promtool_checks_the_rules(rules: RuleSource, tmp_path: Path) -> None:
    path = rules.file or write_rule_file(tmp_path / "rules.yaml", [rules])
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules.rules())} rules found" in checked.stdout


def test_promtool_checks_the_example_config(tmp_path: Path) -> None:
    """examples/tempo/prometheus.yaml, less what Prometheus 2.42 predates
    (the ``otlp`` receiver settings, Prometheus 3), with the real rule file."""
    config = yaml.safe_load((EXAMPLES / "tempo" / "prometheus.yaml").read_text())
    assert "otlp" in config
    del config["otlp"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yaml"]  # mounted from alerts.yaml
    config["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yaml"
    path.write_text(yaml.safe_dump(config))
    checked = promtool("check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr
