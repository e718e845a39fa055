"""A real server under load: spans per response and spans lost, with the SDK's defaults.

    python examples/span_queue_load.py [--seconds 3] [--asgi-middleware]

Run from the root of the repository with the test requirements installed
(it uses ``tests/support/otlp_receiver.py`` as the Collector). uvicorn (one process)
serves ``examples/static`` with Starlette's ``StaticFiles`` under
``opentelemetry-instrument`` (``BatchSpanProcessor`` and OTLP/HTTP with the
SDK's defaults) while an aiohttp client on 16 connections fetches
``hello.txt`` for ``--seconds``, alternating 200s and 304s. Then the server
gets SIGTERM (the package flushes at shutdown) and the script counts what
the loopback receiver got: every ``fileresp.response`` span means nothing was
dropped. ``--asgi-middleware`` wraps the app in contrib's ASGI middleware
(a server span and ``http send``/``http receive`` spans per request), with
``tests/apps/starlette_app.py``. Both the client and the server run on this
machine, so the rate is what one process reached next to its client.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
from support.otlp_receiver import otlp_http_receiver  # noqa: E402

BIN = Path(sys.executable).parent
STATIC = ROOT / "examples" / "static"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _load(port: int, seconds: float, connections: int) -> int:
    url = f"http://127.0.0.1:{port}/static/hello.txt"
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as reply:
            etag = reply.headers["etag"]
            await reply.read()
        done += 1

        async def client() -> None:
            nonlocal done
            sent = 0
            while time.monotonic() < deadline:
                headers = {"If-None-Match": etag} if sent % 2 else {}
                async with session.get(url, headers=headers) as reply:
                    await reply.read()
                done += 1
                sent += 1

        await asyncio.gather(*(client() for _ in range(connections)))
    return done


def run(phase_spans: str, seconds: float, middleware: bool) -> None:
    with otlp_http_receiver() as receiver:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(
            OTEL_SERVICE_NAME="load",
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="none",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_PYTHON_FILERESP_PHASE_SPANS=phase_spans,
            FILERESP_EXAMPLE_STATIC=str(STATIC),
            FILERESP_TEST_STATIC_DIR=str(STATIC),
            FILERESP_TEST_ASGI_MIDDLEWARE="1" if middleware else "0",
            NO_PROXY="127.0.0.1",
        )
        cwd = ROOT / ("tests/apps" if middleware else "examples/servers")
        argv = [str(BIN / "opentelemetry-instrument"), str(BIN / "uvicorn")]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        argv += ["starlette_app:app"]
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            for _ in range(300):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            responses = asyncio.run(_load(port, seconds, 16))
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        time.sleep(1.0)
        received = receiver.received
        spans = len(received.spans())
        full = output.decode(errors="replace").count("Queue full")
        print(
            f"| {'yes' if middleware else 'no'} | {phase_spans} | {responses / seconds:.0f} "
            f"| {spans / responses:.1f} | {len(received.spans('fileresp.response'))} of "
            f"{responses} | {full} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--asgi-middleware", action="store_true")
    args = parser.parse_args()
    print(
        "| ASGI middleware | PHASE_SPANS | responses/s | spans/response | "
        "fileresp.response spans received | 'Queue full' logs |"
    )
    print("|---|---|---|---|---|---|")
    for phase_spans in ("true", "false"):
        run(phase_spans, args.seconds, args.asgi_middleware)


if __name__ == "__main__":
    main()
