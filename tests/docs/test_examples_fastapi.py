"""examples/fastapi_app.py: FastAPI's re-exported StaticFiles and FileResponse
are instrumented like Starlette's (run only where FastAPI is installed, see
noxfile.py)."""

from __future__ import annotations

from support.harness import Telemetry, instrumenting, serve_asgi
from test_examples import check_200_then_304, check_download, example


def test_fastapi_example(examples_path: None, telemetry: Telemetry) -> None:
    app = example("fastapi_app").app
    with instrumenting("starlette", telemetry), serve_asgi(app) as server:
        check_200_then_304(server, "/static/hello.txt", telemetry)
        check_download(server, telemetry)
