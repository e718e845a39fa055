"""Simulated framework regressions for tests/tools/test_probe.py.

``apply(kind)`` patches the installed Starlette and aiohttp in the process it
runs in (a subprocess of the test, before the probe instruments anything):

- ``opens-on-304``: a 304 opens the served file. Starlette: ``StaticFiles``
  opens and closes the file after deciding 304 (as ``EagerStaticFiles`` in
  tests/support/apps.py). aiohttp: the file is opened inside the executor job that
  precedes the precondition checks, as aiohttp's never-released PR #10101 did
  (``EarlyOpenFileResponse`` in tests/support/aiohttp_site.py), so no job is added;
- ``extra-job``: every static response submits one more worker-pool job (an
  ``os.stat`` of the file) before serving, and nothing else changes.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


def apply(kind: str) -> None:
    if kind == "opens-on-304":
        _starlette_opens_on_304()
        _aiohttp_opens_early()
    elif kind == "extra-job":
        _starlette_extra_job()
        _aiohttp_extra_job()
    else:
        raise ValueError(kind)


def _starlette_opens_on_304() -> None:
    import anyio
    from starlette.staticfiles import StaticFiles

    original = StaticFiles.get_response

    async def get_response(self: Any, path: str, scope: Any) -> Any:
        response = await original(self, path, scope)
        if response.status_code == 304:
            file = await anyio.open_file(os.path.join(str(self.directory), path), "rb")
            await file.aclose()
        return response

    StaticFiles.get_response = get_response


def _starlette_extra_job() -> None:
    import anyio.to_thread
    from starlette.staticfiles import StaticFiles

    original = StaticFiles.get_response

    async def get_response(self: Any, path: str, scope: Any) -> Any:
        await anyio.to_thread.run_sync(os.stat, str(self.directory))
        return await original(self, path, scope)

    StaticFiles.get_response = get_response


def _aiohttp_opens_early() -> None:
    from aiohttp.web_fileresponse import FileResponse

    for name in ("_make_response", "_get_file_path_stat_encoding", "_get_file_path_stat_and_gzip"):
        original = getattr(FileResponse, name, None)
        if original is not None:
            break
    else:
        raise RuntimeError("no known stat job in this aiohttp")

    def opens_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._path.open("rb"):
            return original(self, *args, **kwargs)

    setattr(FileResponse, name, opens_first)


def _aiohttp_extra_job() -> None:
    from aiohttp.web_fileresponse import FileResponse

    original = FileResponse.prepare

    async def prepare(self: Any, request: Any) -> Any:
        await asyncio.get_running_loop().run_in_executor(None, os.stat, self._path.parent)
        return await original(self, request)

    FileResponse.prepare = prepare
