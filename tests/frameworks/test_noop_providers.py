"""Without an SDK, or with no-op providers, the hooks only call through.

A record of a file response would produce nothing when both the tracer and
the meter are no-ops (the API's proxies before any provider is set, or
``NoOpTracerProvider`` and ``NoOpMeterProvider``), so none is made. These
tests serve real requests with each combination and count the records made,
and check that the replies and worker-pool jobs equal uninstrumented ones.
The API's proxies are checked in a subprocess, because a global provider can
be set only once per process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider
from support.apps import FRAMEWORKS, INSTRUMENTORS, serve, without_boundary
from support.harness import Telemetry, responses

from otel_fileresp import _telemetry

PATHS = ("/static/a.txt", "/file/a.txt", "/static/missing.txt")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("noop")
    (directory / "a.txt").write_bytes(b"a" * 5000)
    return directory


@pytest.fixture
def records_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The framework of every ``ResponseRecord`` made from now on."""
    made: list[str] = []

    class CountedRecord(_telemetry.ResponseRecord):
        __slots__ = ()

        def __init__(self, sink: Any, framework: str, *args: Any, **kwargs: Any) -> None:
            made.append(framework)
            super().__init__(sink, framework, *args, **kwargs)

    monkeypatch.setattr(_telemetry, "ResponseRecord", CountedRecord)
    return made


class Providers:
    """What ``support.serve`` reads of a ``Telemetry``: the two providers."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider


def exchange(framework: str, root: Path, providers: Any) -> tuple[list[Any], int]:
    """The replies to ``PATHS`` (plain and If-None-Match) and the pool jobs."""
    with serve(framework, root, providers) as served:
        replies = []
        for path in PATHS:
            first = served.request("GET", path)
            replies.append(without_boundary(first))
            etag = first.header("etag")
            if etag:
                replies.append(
                    without_boundary(served.request("GET", path, {"If-None-Match": etag}))
                )
        assert served.settled()
        return replies, served.jobs()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_noop_providers_make_no_record(framework: str, root: Path, records_made: list[str]) -> None:
    plain = exchange(framework, root, None)
    assert records_made == []
    noop = exchange(framework, root, Providers(NoOpTracerProvider(), NoOpMeterProvider()))
    assert records_made == []
    assert noop == plain
    assert len(plain[0]) == 5  # 200 + 304 for two files, one 404


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_live_meter_alone_still_records(
    framework: str, root: Path, records_made: list[str]
) -> None:
    """No-op tracer, SDK meter: metrics for every response, no spans."""
    telemetry = Telemetry()
    exchange(framework, root, Providers(NoOpTracerProvider(), telemetry.meter_provider))
    assert records_made and set(records_made) == {framework}
    points = telemetry.metric_points("fileresp.duration")
    assert sum(p.count for p in points) == len(records_made)
    assert telemetry.spans() == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_live_tracer_alone_still_records(
    framework: str, root: Path, records_made: list[str]
) -> None:
    """SDK tracer, no-op meter: spans for every response."""
    telemetry = Telemetry()
    exchange(framework, root, Providers(telemetry.tracer_provider, NoOpMeterProvider()))
    assert records_made and set(records_made) == {framework}
    assert len(responses(telemetry)) == len(records_made)


PROXY_CHECK = textwrap.dedent(
    """
    import sys
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from otel_fileresp._telemetry import Telemetry
    from otel_fileresp.settings import Settings

    telemetry = Telemetry(Settings.resolve(), "starlette")
    before = telemetry.inert()
    if sys.argv[1] == "tracer":
        trace.set_tracer_provider(TracerProvider())
    else:
        metrics.set_meter_provider(MeterProvider())
    print(before, telemetry.inert())
    """
)


@pytest.mark.parametrize("provider", ["tracer", "meter"])
def test_api_proxies_become_live_when_a_provider_is_set(provider: str) -> None:
    """Instrumented before any provider is set (as ``opentelemetry-instrument``
    may do): inert until the SDK's tracer or meter provider is installed."""
    done = subprocess.run(
        [sys.executable, "-c", PROXY_CHECK, provider],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]


def _entry_points(framework: str, root: Path) -> list[tuple[Any, Any]]:
    """(patched coroutine method, bound to an object), for each async entry point."""
    if framework == "starlette":
        from starlette.responses import FileResponse
        from starlette.staticfiles import StaticFiles

        return [
            (StaticFiles.__call__, StaticFiles(directory=root)),
            (FileResponse.__call__, FileResponse(root / "a.txt")),
        ]
    from aiohttp import web

    return [(web.FileResponse.prepare, web.FileResponse(root / "a.txt"))]


def _arguments(framework: str) -> tuple[Any, ...]:
    if framework == "starlette":
        scope = {"type": "http", "method": "GET", "path": "/a.txt", "headers": []}
        return (scope, None, None)
    return (object(),)  # never read: nothing records


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_nothing_recording_leaves_the_framework_coroutine(framework: str, root: Path) -> None:
    """With no-op providers, calling a patched entry point gives the framework's
    own coroutine: no coroutine of ours is interposed, so no frame is added to
    every resumption of the request."""
    instrumentor = INSTRUMENTORS[framework]()
    instrumentor.instrument(
        tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider()
    )
    try:
        for method, owner in _entry_points(framework, root):
            assert hasattr(method, "__wrapped__"), "not instrumented"
            coroutine = method(owner, *_arguments(framework))
            try:
                assert coroutine.cr_code is method.__wrapped__.__code__
            finally:
                coroutine.close()
    finally:
        instrumentor.uninstrument()
