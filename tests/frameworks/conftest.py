"""Fixtures of the aiohttp modules (test_aiohttp, test_aiohttp_telemetry): one
aiohttp site per module, built before any test instruments, and telemetry
instrumented for one test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.aiohttp_site import Site, module_site, traced_telemetry
from support.harness import Telemetry


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with module_site(tmp_path_factory) as running:
        yield running


@pytest.fixture
def traced(site: Site) -> Iterator[Telemetry]:
    """Instrumented for the test, after the module's app was built."""
    with traced_telemetry() as telemetry:
        yield telemetry
