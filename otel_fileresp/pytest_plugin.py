# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""pytest plugin: the ``fileresp_recorder`` fixture.

Installed with the package (entry point ``otel_fileresp`` in the ``pytest11``
group), so the fixture is available in every test. It needs
``opentelemetry-sdk`` (the package itself only needs the API).

Example::

    from starlette.testclient import TestClient

    def test_304_never_opens_the_file(fileresp_recorder):
        with TestClient(app) as client:
            etag = client.get("/static/app.js").headers["etag"]
            reply = client.get("/static/app.js", headers={"If-None-Match": etag})
            assert reply.status_code == 304
        fileresp_recorder.assert_not_opened(status=304)

In an async test (pytest-aiohttp, anyio), await the helpers instead::

    async def test_304_never_opens_the_file(aiohttp_client, fileresp_recorder):
        client = await aiohttp_client(app)
        ...
        await fileresp_recorder.assert_not_opened_async(status=304)

The fixture is :func:`otel_fileresp.testing.recording` for one test; see
:mod:`otel_fileresp.testing` for what it records and how it waits.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_fileresp.testing import FileResponseRecorder, RecordedResponse, recording

__all__ = ["FileResponseRecorder", "RecordedResponse", "fileresp_recorder", "recording"]


@pytest.fixture
def fileresp_recorder() -> Iterator[FileResponseRecorder]:
    """Record this test's file responses (Starlette and aiohttp, whichever is installed)."""
    with recording() as recorder:
        yield recorder
