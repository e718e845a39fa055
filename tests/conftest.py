"""Fixtures shared by the suite: telemetry, a directory of files to serve; and
which tests run once (``ONCE``, below) rather than in every nox session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from support.harness import Telemetry

# -- tests that run once ---------------------------------------------------------
#
# A test is *release-independent* when what it checks depends neither on the
# framework releases of a nox session (Starlette, aiohttp, anyio, httpx, ...)
# nor on its Python version: it gets the ``once`` marker here, and noxfile.py
# runs it in one session only (the latest set on Python 3.11) instead of six.
# Everything else is release-dependent and runs in every session; so does a
# test module that is not listed (a new one included), which is the safe side.
# A test that drives a framework's file-response code, a server, or anything
# whose behaviour differs across the matrix is release-dependent; when in doubt
# a test stays out of this table. ``@pytest.mark.once`` (or a module's
# ``pytestmark``) marks a test the same way; listing it here keeps the
# classification in one place.
#
# A key is a test module's file name, or a folder of tests/ followed by ``/``
# (every module in it); a module's own entry wins over its folder's. The
# folders listed hold release-independent tests only: a test that needs every
# session goes elsewhere, or in the module's ``but``.


@dataclass(frozen=True)
class Once:
    """The tests of a module that run once: all (``but`` those), or ``only``."""

    why: str
    only: tuple[str, ...] = ()
    but: tuple[str, ...] = ()

    def covers(self, test: str) -> bool:
        return test in self.only if self.only else test not in self.but


ONCE: dict[str, Once] = {
    "unit/": Once(
        "no framework, no server: the record's rules through its verbs, settings"
        " parsing, the report CLI on span files the SDK writes or that are generated"
    ),
    "test_report_cli.py": Once(
        "the report CLI on span files the SDK writes: no framework; but the"
        " tests of ijson's compiled backend, a wheel built for each Python",
        but=(
            "test_the_compiled_ijson_backend_is_used",
            "test_streamed_documents_give_the_same_report",
        ),
    ),
    "prometheus/": Once(
        "the docs' PromQL, alert rules and quantile queries, evaluated by Prometheus"
        " 2.42 (and promtool) against known traffic, a regression double, or samples"
        " recorded straight into the package's instruments: the releases' metrics"
        " are checked in every session by frameworks/ (test_metrics,"
        " test_metric_points, test_pool_gauges), the doubles' opens by test_aiohttp"
        " and test_report_real"
    ),
    "test_noop_providers.py": Once(
        "the OpenTelemetry API's proxy providers, in a subprocess that imports no framework",
        only=("test_api_proxies_become_live_when_a_provider_is_set",),
    ),
    "test_examples_config.py": Once(
        "the examples' Docker Compose, Grafana and alert files parsed and"
        " cross-checked; but the one that compares them with what a real request"
        " on each framework emits",
        but=("test_dashboard_and_alerts_query_what_the_package_emits",),
    ),
    "test_readme_quickstart.py": Once(
        "the Quickstart installs the latest releases into a virtualenv of its own"
        " (whatever the session has); its section parser is plain text"
    ),
    "test_docs_upgrading.py": Once(
        "the page's text (its steps, links and anchors), and its PromQL evaluated by"
        " Prometheus 2.42 on two versions of an aiohttp app, one with a simulated"
        " regression (as prometheus/ does: the regressions and the opens they"
        " cause are checked in every session by tools/test_probe); but its"
        " commands, which run the probe over the installed frameworks",
        but=("test_the_commands_run",),
    ),
}


def _stale_once_entries(tests: Path) -> list[str]:
    """Entries of ``ONCE`` naming a folder, module or test that does not exist."""
    stale = []
    for key, once in ONCE.items():
        if key.endswith("/"):
            if not (tests / key).is_dir():
                stale.append(key)
            continue
        paths = sorted(tests.rglob(key))  # a module in any folder
        if not paths:
            stale.append(key)
            continue
        source = "\n".join(path.read_text() for path in paths)
        stale += [
            f"{key}::{test}" for test in (*once.only, *once.but) if f"def {test}(" not in source
        ]
    return stale


def _once_entry(path: Path) -> Once | None:
    """The entry of ``ONCE`` for a test module: its own, else its folder's."""
    return ONCE.get(path.name) or ONCE.get(f"{path.parent.name}/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    stale = _stale_once_entries(Path(__file__).parent)
    if stale:
        raise pytest.UsageError(
            f"tests/conftest.py ONCE names tests that do not exist (update the table): {stale}"
        )
    for item in items:
        once = _once_entry(item.path)
        name = getattr(item, "originalname", item.name)
        if (once is not None and once.covers(name)) or item.get_closest_marker("quickstart"):
            item.add_marker(pytest.mark.once)


SMALL_SIZE = 1024
LARGE_SIZE = 10 * 1024 * 1024


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    t = Telemetry()
    yield t
    t.shutdown()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory to serve: a 1 KB file, a 10 MB file, an empty file and a subdirectory."""
    root = tmp_path / "static"
    root.mkdir()
    (root / "small.txt").write_bytes(bytes(range(256)) * (SMALL_SIZE // 256))
    with open(root / "large.bin", "wb") as large:
        block = os.urandom(64 * 1024)
        for _ in range(LARGE_SIZE // len(block)):
            large.write(block)
    (root / "empty.txt").write_bytes(b"")
    (root / "sub").mkdir()
    (root / "sub" / "page.html").write_text("<h1>page</h1>")
    return root


@pytest.fixture
def examples_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """examples/ importable, as when running from that directory; the example
    modules are imported afresh for each test."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    yield
    for name in ("starlette_app", "fastapi_app", "aiohttp_app", "otel_setup"):
        sys.modules.pop(name, None)
