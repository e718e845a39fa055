"""Responses cut short: a client gone mid-body, a server stopping mid-body.

Every started response must end (its ``fileresp.response`` is exported) with
what really happened, and the file must be closed with no descriptor left
behind. What each framework really does:

- Starlette 1.8+ streams the body from a child task and cancels it when the
  server reports ``http.disconnect``: ``__call__`` returns normally with the
  body incomplete, so the response is ``error`` with
  ``error.type=incomplete_body``;
- older Starlette never listens for the disconnect: it reads the whole file and
  hands every chunk to uvicorn, whose ``send`` drops them silently once the
  connection is gone, so the response is ``sent`` with every byte counted;
- aiohttp's ``loop.sendfile`` raises (``BrokenPipeError``,
  ``ConnectionResetError``, or aiohttp's ``ClientConnectionResetError``), so
  the response is ``error`` with that class as ``error.type``;
- a server that stops while a response is blocked on a client that does not
  read cancels the request after its graceful timeout (uvicorn's
  ``timeout_graceful_shutdown``, aiohttp's ``shutdown_timeout``): ``error``
  with ``error.type=CancelledError`` on both.

The client is a raw socket with a small receive buffer; every wait is bounded.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from support.apps import FRAMEWORKS, fds_on, open_fds, serve, wait_closed, wait_fd_count
from support.harness import Telemetry, attrs, our_spans, response_tree, responses

# Starlette 1.8+ streams the body in a child task, cancelled on http.disconnect
# (the same release added the shielded `_open_file`).
BIG_SIZE = 16 * 1024 * 1024
CLIENT_BUFFER = 64 * 1024
IO_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 0.5
CONNECTION_ERRORS = {"BrokenPipeError", "ConnectionResetError", "ClientConnectionResetError"}
ROUTES = ["/static/", "/file/"]


def _server_send_buffer_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as wmem:
            return int(wmem.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 * 1024 * 1024


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sparse files (no disk, no write time): ``big.bin`` for disconnects; and
    ``huge.bin``, far larger than the server's socket buffer can hold, so a
    client that stops reading blocks the response for sure."""
    root = tmp_path_factory.mktemp("cancel")
    (root / "small.txt").write_bytes(b"x" * 1024)
    with open(root / "big.bin", "wb") as big:
        big.truncate(BIG_SIZE)
    with open(root / "huge.bin", "wb") as huge:
        huge.truncate(max(64 * 1024 * 1024, 8 * _server_send_buffer_max()))
    return root


def start_download(port: int, path: str, at_least: int) -> tuple[socket.socket, int]:
    """Ask for ``path`` and read until ``at_least`` bytes arrived; the socket
    is left open, unread beyond that."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_BUFFER)
    client.settimeout(IO_TIMEOUT)
    client.connect(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    received = b""
    for _ in range(10_000):  # bounded; each recv also times out
        chunk = client.recv(CLIENT_BUFFER)
        if not chunk:
            break
        received += chunk
        if len(received) >= at_least:
            break
    assert received.startswith(b"HTTP/1.1 200"), received[:100]
    assert len(received) >= at_least
    return client, len(received)


def warm_up(served: Any, telemetry: Telemetry) -> None:
    """First requests do one-off work (StaticFiles' directory check)."""
    assert served.request("GET", "/static/small.txt").status == 200
    assert served.settled()
    telemetry.clear()


def the_response(telemetry: Telemetry) -> Any:
    found = telemetry.wait_for("fileresp.response")
    assert len(found) == 1, [attrs(s) for s in found]
    return found[0]


def assert_tree_complete(telemetry: Telemetry, response: Any) -> None:
    """Every span of ours is this response or one of its phases, all ended."""
    tree = response_tree(telemetry.spans(), response)
    assert {s.context.span_id for s in tree} | {response.context.span_id} == {
        s.context.span_id for s in our_spans(telemetry)
    }
    for span in [response, *tree]:
        assert span.end_time is not None
        assert span.start_time <= span.end_time
        assert span.context.trace_id == response.context.trace_id
    assert "fileresp.send" in {s.name for s in tree}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_client_disconnect_mid_body(
    framework: str, route: str, root: Path, telemetry: Telemetry
) -> None:
    big = root / "big.bin"
    with serve(framework, root, telemetry) as served:
        warm_up(served, telemetry)
        before = len(open_fds())
        client, received = start_download(served.port, f"{route}big.bin", 256 * 1024)
        during = len(open_fds())
        # The server cannot have sent 16 MiB yet: the file is open.
        assert fds_on(big), "the file should be open while it is being sent"
        client.close()  # unread data in the receive buffer: the peer gets a RST
        closed_at = time.monotonic()
        response = the_response(telemetry)
        exported_after = time.monotonic() - closed_at
        still_open = wait_closed(big)
        closed_after = time.monotonic() - closed_at
        after = wait_fd_count(before)
    print(
        f"\n{framework} {route}: received {received} B; fds before {before}, "
        f"during {during}, after {after}; span exported {exported_after * 1000:.1f} ms "
        f"and the file closed {closed_after * 1000:.1f} ms after the client closed; "
        f"{attrs(response)}"
    )
    assert still_open == [], "the file is still open"
    assert after <= before, "a descriptor leaked"

    a = attrs(response)
    assert a["http.response.status_code"] == 200
    assert a["file.name"] == "big.bin"
    assert a["file.size"] == BIG_SIZE
    assert a["fileresp.opened"] is True
    assert_tree_complete(telemetry, response)
    # Starlette before 1.8 reads the whole file into uvicorn, which drops what
    # comes after the client left: those messages are not handed over (issue
    # 21), so every release ends incomplete, never sent.
    assert a["fileresp.outcome"] == "error"
    assert response.status.status_code == StatusCode.ERROR
    assert a["fileresp.bytes"] < BIG_SIZE
    if framework == "starlette":
        assert a["error.type"] == "incomplete_body"
    else:
        assert a["error.type"] in CONNECTION_ERRORS | {"CancelledError"}
    # The metrics say the same (the warm-up request was one more ``sent``).
    counts = {
        dict(p.attributes)["fileresp.outcome"]: p.count
        for p in telemetry.metric_points("fileresp.duration")
    }
    expected = {"sent": 1}
    expected[a["fileresp.outcome"]] = expected.get(a["fileresp.outcome"], 0) + 1
    assert counts == expected


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_server_shutdown_mid_body(
    framework: str, route: str, root: Path, telemetry: Telemetry
) -> None:
    huge = root / "huge.bin"
    before = len(open_fds())
    with serve(framework, root, telemetry, shutdown_timeout=SHUTDOWN_TIMEOUT) as served:
        warm_up(served, telemetry)
        client, received = start_download(served.port, f"{route}huge.bin", 128 * 1024)
        try:
            during = len(open_fds())
            assert fds_on(huge), "the file should be open while the response is blocked"
            assert responses(telemetry) == []  # blocked: the response has not ended
            stopping = time.monotonic()
            served.stop()
            stopped_after = time.monotonic() - stopping
            response = the_response(telemetry)
        finally:
            client.close()
    still_open = wait_closed(huge)
    # uvicorn leaves the cancelled connection's socket to the garbage
    # collector (instrumented or not): the count is taken after a collection.
    after = wait_fd_count(before)
    print(
        f"\n{framework} {route}: received {received} B; stop took {stopped_after * 1000:.0f} ms "
        f"(graceful timeout {SHUTDOWN_TIMEOUT * 1000:.0f} ms); fds before the server "
        f"{before}, during {during}, after {after}; {attrs(response)}"
    )
    assert still_open == [], "the file is still open"
    assert after <= before, "a descriptor leaked"

    a = attrs(response)
    assert a["fileresp.outcome"] == "error"
    assert a["error.type"] == "CancelledError"
    assert response.status.status_code == StatusCode.ERROR
    assert a["http.response.status_code"] == 200
    assert a["fileresp.opened"] is True
    assert a["fileresp.bytes"] < a["file.size"]
    assert_tree_complete(telemetry, response)
