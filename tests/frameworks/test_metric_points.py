"""What each response costs in metric points, and what they carry:

- one ``fileresp.duration`` point and one ``fileresp.phase.duration`` wait
  point per response by default; other phases on request (``phase_metrics``);
  none with ``metrics=False``, the spans kept;
- the ``{framework, 304}`` series of ``fileresp.opens`` at 0 from the app's
  startup, before any traffic;
- histogram points carry exemplars that link to the recorded response span.

Both frameworks, over real servers on loopback (``support.apps.serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.apps import FRAMEWORKS, SAMPLED, TRACE_ID, counts_by_phase, points, serve_requests
from support.harness import Telemetry, instrumenting

from otel_fileresp import _names as n

# -- metrics per response --------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_one_duration_and_one_wait_point_per_response(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    serve_requests(framework, files, telemetry, {})
    assert sum(p.count for p in points(telemetry, "fileresp.duration")) == 3
    assert counts_by_phase(telemetry) == {"threadpool.wait": 3}
    responses = [s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]
    waits = sorted(s.attributes[n.ATTR_WAIT] for s in responses)
    [point] = points(telemetry, "fileresp.phase.duration")
    assert point.sum == pytest.approx(sum(waits))


@pytest.mark.parametrize(
    ("phase_metrics", "expected"),
    [
        ("all", {"stat", "precondition", "open", "send", "threadpool.wait"}),
        ("stat,open", {"stat", "open"}),
        (["send"], {"send"}),
        ("none", set()),
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_phase_metrics_setting(
    framework: str, files: Path, telemetry: Telemetry, phase_metrics: Any, expected: set[str]
) -> None:
    serve_requests(framework, files, telemetry, {}, phase_metrics=phase_metrics)
    found = counts_by_phase(telemetry)
    assert set(found) == expected
    # One point per response and phase (open and send: the two 200s only).
    for phase, count in found.items():
        assert count == (2 if phase in ("open", "send") else 3), phase


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_metrics_false_records_no_metric_and_keeps_the_spans(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    serve_requests(framework, files, telemetry, {}, metrics=False)
    data = telemetry.metric_reader.get_metrics_data()
    names = {
        metric.name
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }
    assert not {name for name in names if name.startswith("fileresp.")}
    assert len([s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE]) == 3


def _points_once_started(framework: str, root: Path, telemetry: Telemetry) -> list[Any]:
    """``fileresp.opens`` read after the app's startup, before any request."""
    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.routing import Mount
        from starlette.staticfiles import StaticFiles
        from starlette.testclient import TestClient

        app = Starlette(routes=[Mount("/static", StaticFiles(directory=str(root)))])
        with TestClient(app):  # runs the lifespan startup
            return points(telemetry, "fileresp.opens")
    import asyncio

    from aiohttp import web

    async def started() -> list[Any]:
        app = web.Application()
        app.router.add_routes([web.static("/static", root)])
        runner = web.AppRunner(app)
        await runner.setup()  # Application.startup()
        try:
            return points(telemetry, "fileresp.opens")
        finally:
            await runner.cleanup()

    return asyncio.run(started())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_304_series_is_reported_at_zero_from_the_apps_startup(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    """v2.1: from the moment the app starts serving, before any traffic; not
    from ``instrument()`` alone (a gunicorn master instruments and serves nothing)."""
    with instrumenting(framework, telemetry, flush_on_shutdown=False):
        assert points(telemetry, "fileresp.opens") == []
        opens = _points_once_started(framework, files, telemetry)
    assert [(dict(p.attributes), p.value) for p in opens] == [
        ({n.ATTR_FRAMEWORK: framework, n.ATTR_STATUS_CODE: 304}, 0)
    ]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_histogram_points_link_to_the_response_span(
    framework: str, files: Path, telemetry: Telemetry
) -> None:
    serve_requests(framework, files, telemetry, {"traceparent": SAMPLED})
    responses = {s.context.span_id: s for s in telemetry.spans() if s.name == n.SPAN_RESPONSE}
    assert len(responses) == 3
    # One collection: the SDK hands out each exemplar with the first collection after it.
    data = telemetry.metric_reader.get_metrics_data()
    by_name: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                by_name.setdefault(metric.name, []).extend(metric.data.data_points)
    for name in ("fileresp.duration", "fileresp.phase.duration"):
        exemplars = [e for p in by_name[name] for e in p.exemplars]
        assert exemplars, name
        for exemplar in exemplars:
            assert exemplar.span_id in responses
            assert format(exemplar.trace_id, "032x") == TRACE_ID
