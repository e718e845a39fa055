"""FastAPI re-exports Starlette's StaticFiles and FileResponse: they are the
same classes, so the Starlette instrumentor covers them. Runs in the nox
session that installs FastAPI (``latest``); the others leave this file out."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.trace import SpanKind
from support.harness import Telemetry, child_names, serve_asgi

from otel_fileresp import StarletteFileResponseInstrumentor


def test_fastapi_static_files_and_file_response(files: Path, telemetry: Telemetry) -> None:
    app = FastAPI()
    app.mount("/static", StaticFiles(directory=files), name="static")

    @app.get("/download")
    async def download() -> FileResponse:
        return FileResponse(files / "small.txt")

    served = OpenTelemetryMiddleware(app, tracer_provider=telemetry.tracer_provider)
    StarletteFileResponseInstrumentor().instrument(tracer_provider=telemetry.tracer_provider)
    try:
        with serve_asgi(served) as server:
            etag = server.request("GET", "/static/small.txt").header("etag")
            assert server.request("GET", "/static/small.txt", {"If-None-Match": etag}).status == 304
            assert server.request("GET", "/download").body == (files / "small.txt").read_bytes()
            responses = telemetry.wait_for("fileresp.response", 3)
    finally:
        StarletteFileResponseInstrumentor().uninstrument()
    spans = telemetry.spans()
    servers = {s.context.span_id: s for s in spans if s.kind == SpanKind.SERVER}
    outcomes = sorted(str(r.attributes["fileresp.outcome"]) for r in responses)
    assert outcomes == ["not_modified", "sent", "sent"]
    for response in responses:
        assert response.parent.span_id in servers
        opened = response.attributes["fileresp.opened"]
        assert ("fileresp.open" in child_names(spans, response)) is opened
        assert opened is (response.attributes["http.response.status_code"] == 200)
