"""The Starlette example with FastAPI: its re-exported ``StaticFiles`` and ``FileResponse``.

FastAPI's ``fastapi.staticfiles.StaticFiles`` and ``fastapi.responses.FileResponse``
are Starlette's classes, so the Starlette instrumentation covers them; nothing
FastAPI-specific is needed. Routes and settings as in ``starlette_app.py``::

    OTEL_SERVICE_NAME=files-fastapi \\
    OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \\
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318 \\
      opentelemetry-instrument uvicorn fastapi_app:app --port 8000

or, set up in code: ``python fastapi_app.py --manual``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette_app import STATIC, main

app = FastAPI()
app.mount("/static", StaticFiles(directory=STATIC), name="static")


@app.get("/download/{name}")
async def download(name: str) -> FileResponse:
    name = Path(name).name  # a name, never a path
    return FileResponse(STATIC / name, filename=name)


if __name__ == "__main__":
    main(app, "files-fastapi")
