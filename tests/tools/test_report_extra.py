"""ijson is the ``report`` extra of the CLI, not a dependency of every app.

Only ``otel-fileresp report`` uses ijson (to stream documents too large to be
read whole, see ``otel_fileresp/report/readers.py``), so it is declared as the
extra ``report`` (``pip install 'otel-fileresp[report]'``) and imported
lazily. Here a fresh interpreter, where ijson *is* installed, imports the
package, its instrumentors, the pytest plugin and the testing module,
instruments both frameworks and serves a file with each: ijson must not be
among its modules. What the report does without ijson is in
tests/test_report_cli.py (``test_without_ijson_*``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

SERVE_BOTH_FRAMEWORKS = r"""
import asyncio, importlib.util, json, sys, tempfile
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_fileresp
import otel_fileresp.pytest_plugin
import otel_fileresp.settings
import otel_fileresp.testing
from otel_fileresp import AiohttpFileResponseInstrumentor, StarletteFileResponseInstrumentor

exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
for instrumentor in (StarletteFileResponseInstrumentor(), AiohttpFileResponseInstrumentor()):
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

static = Path(tempfile.mkdtemp())
(static / "hello.txt").write_text("hello, file\n")

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.testclient import TestClient

app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(static)))])
with TestClient(app) as client:  # its lifespan too (the package's flush at shutdown)
    statuses = [client.get("/static/hello.txt").status_code]

from aiohttp import web
from aiohttp.test_utils import TestClient as AiohttpClient, TestServer


async def aiohttp_get() -> int:
    web_app = web.Application()
    web_app.router.add_static("/static", static)
    async with AiohttpClient(TestServer(web_app, host="127.0.0.1")) as client:
        response = await client.get("/static/hello.txt")
        await response.read()
        return response.status


statuses.append(asyncio.run(aiohttp_get()))
metrics = reader.get_metrics_data()
print(json.dumps({
    "ijson_installed": importlib.util.find_spec("ijson") is not None,
    "statuses": statuses,
    "frameworks": sorted(
        str(span.attributes["fileresp.framework"])
        for span in exporter.get_finished_spans()
        if span.name == "fileresp.response"
    ),
    "metrics": sorted({
        metric.name
        for resource in metrics.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }),
    "ijson_modules": sorted(name for name in sys.modules if name.split(".")[0] == "ijson"),
}))
"""


def test_an_instrumented_app_does_not_import_ijson() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVE_BOTH_FRAMEWORKS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["ijson_installed"]  # installed, so its absence below is the package's doing
    assert found["statuses"] == [200, 200]
    assert found["frameworks"] == ["aiohttp", "starlette"]
    assert {"fileresp.duration", "fileresp.opens"} <= set(found["metrics"])
    assert found["ijson_modules"] == []


def test_ijson_is_required_by_the_report_extra_only() -> None:
    requirements = [Requirement(text) for text in metadata.requires("otel-fileresp") or []]
    ijson = [r for r in requirements if r.name == "ijson"]
    assert len(ijson) == 1, requirements
    marker = ijson[0].marker
    assert marker is not None, "ijson must not be a dependency of every install"
    assert marker.evaluate({"extra": "report"})
    assert not marker.evaluate({"extra": ""})
    # The suite installs the extra's requirement (tests/requirements.txt).
    lines = (Path(__file__).parents[1] / "requirements.txt").read_text().splitlines()
    tested = [Requirement(line) for line in lines if line.startswith("ijson")]
    assert [str(r.specifier) for r in tested] == [str(ijson[0].specifier)]
