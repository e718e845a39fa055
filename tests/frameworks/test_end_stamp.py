"""The end of a response is stamped when its last byte was handed over, never
later, also under GIL contention (issue 18).

Each case serves real files with a real server in this process (uvicorn with
``StaticFiles``; an aiohttp runner with ``web.static``, by ``loop.sendfile``
and by its read fallback), while a CPU-bound thread (a pure Python loop)
competes with the server's event loop for the GIL. The client is another
process, with raw sockets on one keep-alive connection, one request at a
time: it takes ``time.perf_counter_ns()`` right before sending each request
and right after the ``recv`` that returned the response's last byte.

No tolerance is needed: on Linux ``perf_counter_ns`` is
``clock_gettime(CLOCK_MONOTONIC)``, one clock for every process, and it is
also the package's clock. So the record's own stamps (read through the
consumer of finished responses) are compared with the client's as they are: a
response cannot start before its request was sent, and its last byte cannot
reach the client before the server handed it over, so the response's start
is at or after the client's send, and its end at or before the client's last
byte, with nothing in between to allow for. The ``fileresp.response`` span
carries exactly those two stamps (its duration is their difference, to the
nanosecond), so it never lasts longer than the client waited.

Stamping the end once the handing call returned (an ``await send()``, an
``os.sendfile`` or a write resumed) fails here: the loop's thread waits for
the GIL after the bytes left (the switch interval, 5 ms, or more), while the
client, in its own process, already has them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.harness import (
    LoopbackServer,
    Telemetry,
    instrumenting,
    responses,
    serve_aiohttp,
    serve_asgi,
)

from otel_fileresp import _names as n
from otel_fileresp._finished import FinishedResponse
from otel_fileresp._record import ResponseRecord
from otel_fileresp._telemetry import add_consumer

FILE_SIZE = 384 * 1024  # several body chunks on both frameworks
OK_REQUESTS = 30
NOT_MODIFIED_REQUESTS = 15
CLIENT_TIMEOUT = 120.0  # s, the whole plan
SPIN_LIMIT = 180.0  # s: the CPU-bound thread stops by then whatever happens
RECORDS_TIMEOUT = 10.0
TRANSFER = {"starlette": "read", "aiohttp-sendfile": "sendfile", "aiohttp-fallback": "read"}

# The client, in its own process: one keep-alive connection, one request at a
# time; for each, the status, the body bytes received, the time right before
# the request was sent and the time right after its last byte was received.
CLIENT = r"""
import json, socket, sys, time

port, plan = int(sys.argv[1]), json.loads(sys.argv[2])
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
results = []
pending = b""
for path, headers in plan:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    data = pending
    sent_at = time.perf_counter_ns()
    sock.sendall(request)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 20)
        last_at = time.perf_counter_ns()
        if not chunk:
            raise SystemExit("the server closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if status == 304:
        length = 0
    while len(body) < length:
        chunk = sock.recv(1 << 20)
        last_at = time.perf_counter_ns()
        if not chunk:
            raise SystemExit("the server closed the connection mid-body")
        body += chunk
    body, pending = body[:length], body[length:]
    results.append([status, len(body), sent_at, last_at])
sock.close()
print(json.dumps(results))
"""


class Stamps:
    """The records' own start and end (``perf_counter_ns``) and status."""

    def __init__(self) -> None:
        self.ended: list[tuple[int, int, int | None]] = []

    def response_started(self, key: int, framework: str) -> None:
        pass

    def response_ended(self, key: int, finished: FinishedResponse | None) -> None:
        if finished is not None:
            self.ended.append((finished.started_ns, finished.end_ns, finished.status))

    def wait_for(self, count: int) -> list[tuple[int, int, int | None]]:
        deadline = time.monotonic() + RECORDS_TIMEOUT
        while len(self.ended) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.ended)


@pytest.fixture
def stamps() -> Iterator[Stamps]:
    listener = Stamps()
    remove = add_consumer(listener)
    try:
        yield listener
    finally:
        remove()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "big.bin").write_bytes(bytes(range(256)) * (FILE_SIZE // 256))
    return root


@contextmanager
def gil_contention() -> Iterator[list[int]]:
    """A CPU-bound thread beside the server's loop while the block runs (and
    at most SPIN_LIMIT seconds); yields its count of loops, to show it ran."""
    stop = threading.Event()
    spins = [0]

    def spin() -> None:
        deadline = time.monotonic() + SPIN_LIMIT
        while not stop.is_set() and time.monotonic() < deadline:
            total = 0
            for value in range(20_000):
                total += value
            spins[0] += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield spins
    finally:
        stop.set()
        thread.join(SPIN_LIMIT)


def run_client(port: int, plan: list[tuple[str, dict[str, str]]]) -> list[list[int]]:
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, str(port), json.dumps(plan)],
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results: list[list[int]] = json.loads(done.stdout)
    return results


def starlette_app(root: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/static", StaticFiles(directory=root))])


def aiohttp_app(root: Path) -> Callable[[], Any]:
    def make() -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_static("/static", root)
        return app

    return make


@contextmanager
def serving(case: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackServer]:
    if case == "starlette":
        with serve_asgi(starlette_app(root)) as server:
            yield server
        return
    if case == "aiohttp-fallback":
        from aiohttp import web_fileresponse

        # AIOHTTP_NOSENDFILE is read when aiohttp is imported; set its result.
        monkeypatch.setattr(web_fileresponse, "NOSENDFILE", True)
    with serve_aiohttp(aiohttp_app(root)) as server:
        yield server


@pytest.mark.parametrize("case", ["starlette", "aiohttp-sendfile", "aiohttp-fallback"])
def test_the_end_is_stamped_no_later_than_the_clients_last_byte(
    case: str,
    site: Path,
    telemetry: Telemetry,
    stamps: Stamps,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    framework = case.partition("-")[0]
    with (
        serving(case, site, monkeypatch) as server,
        instrumenting(framework, telemetry),
    ):
        warm = server.request("GET", "/static/big.bin")
        assert warm.status == 200 and len(warm.body) == FILE_SIZE
        etag = warm.header("etag")
        assert etag is not None
        stamps.wait_for(1)
        stamps.ended.clear()
        telemetry.clear()
        # 200s and 304s, interleaved.
        plan: list[tuple[str, dict[str, str]]] = []
        for i in range(OK_REQUESTS + NOT_MODIFIED_REQUESTS):
            headers = {"If-None-Match": etag} if i % 3 == 2 else {}
            plan.append(("/static/big.bin", headers))
        with gil_contention() as spins:
            results = run_client(server.port, plan)
            spun = spins[0]
        # In request order: a response may still finish (close its file) after
        # the client has its last byte and the next one started.
        ended = sorted(stamps.wait_for(len(plan)))
    spans = responses(telemetry)
    assert spun > 0, "the CPU-bound thread never ran"
    assert len(results) == len(plan)
    assert [status for status, *_ in results].count(304) == NOT_MODIFIED_REQUESTS
    assert all(size == (FILE_SIZE if status == 200 else 0) for status, size, *_ in results)
    assert len(ended) == len(plan) == len(spans)

    # The spans carry the records' two stamps: their durations are the same
    # numbers, to the nanosecond. (They are matched as a whole, not one by
    # one: a span's wall-clock times add an offset read at its emission,
    # which a GIL switch between the two clock reads can shift.)
    def duration(span: Any) -> int:
        assert span.start_time is not None and span.end_time is not None
        return int(span.end_time - span.start_time)

    assert sorted(map(duration, spans)) == sorted(end - start for start, end, _ in ended)
    for span in spans:
        found = dict(span.attributes or {})
        if found["http.response.status_code"] == 200:
            # Every byte went through the calls stamped (os.sendfile, the writes).
            assert found["fileresp.bytes"] == FILE_SIZE, found
            assert found["fileresp.transfer"] == TRANSFER[case], found

    late: list[tuple[int, int, float]] = []
    early_start: list[tuple[int, int, float]] = []
    for i, ((status, _, sent_at, last_at), (start, end, recorded)) in enumerate(
        zip(results, ended, strict=True)
    ):
        assert recorded == status, f"response {i}: recorded {recorded}, client got {status}"
        if start < sent_at:
            early_start.append((i, status, (sent_at - start) / 1e6))
        if end > last_at:
            late.append((i, status, (end - last_at) / 1e6))
    latencies = [(last_at - sent_at) / 1e6 for _, _, sent_at, last_at in results]
    print(
        f"\n{case}: {len(results)} responses under GIL contention (CPU thread: {spun} "
        f"loops); client latency {min(latencies):.1f}-{max(latencies):.1f} ms; "
        f"ends later than the client's last byte: {len(late)}"
        + (f", by up to {max(ms for *_, ms in late):.2f} ms" if late else "")
        + f"; starts before the request: {len(early_start)}"
    )
    assert early_start == [], f"started before the client sent the request: {early_start}"
    assert late == [], (
        f"{len(late)} of {len(results)} responses ended after the client's last byte "
        f"(response, status, ms late): {late}"
    )


# -- the rule in the record: the start of the call that handed over the last byte ----


class NullSink:
    def response_started(self, key: int, framework: str) -> None:
        pass

    def response_ended(self, key: int, finished: FinishedResponse | None) -> None:
        pass


def started_record() -> ResponseRecord:
    from opentelemetry import context as context_api

    record = ResponseRecord(NullSink(), "aiohttp", context_api.Context())
    record.begin(started_ns=1_000)
    return record


def test_the_end_is_the_start_of_the_call_with_the_last_byte_not_of_the_first() -> None:
    record = started_record()
    record.body_started(1_500, n.TRANSFER_SENDFILE)
    record.head_sent(200, 2_000, 30)
    record.body_sent(10, 3_000)
    record.body_sent(10, 4_000)
    record.body_sent(10, 5_000)  # the last byte owed
    record.body_sent(0, 9_000, final=True)  # the send returned, much later
    record.end()
    assert (record.facts().end_ns, record.facts().bytes_sent, record.facts().transfer) == (
        5_000,
        30,
        n.TRANSFER_SENDFILE,
    )
    assert dict((phase, (start, end)) for phase, start, end in record.facts().phases)[
        n.PHASE_SEND
    ] == (
        1_500,
        5_000,
    )


def test_bytes_past_the_announced_length_do_not_move_the_end() -> None:
    record = started_record()
    record.head_sent(206, 2_000, 10)
    record.body_sent(25, 3_000)  # an over-read the writer cuts at the length
    record.body_sent(25, 4_000)
    record.body_sent(0, 9_000, final=True)
    record.end()
    assert (record.facts().end_ns, record.facts().bytes_sent) == (3_000, 10)


def test_a_bodiless_response_ends_at_the_start_of_its_heads_send() -> None:
    record = started_record()
    record.head_sent(304, 2_000, None)
    record.body_sent(0, 9_000, final=True)
    record.end()
    assert record.facts().end_ns == 2_000


def test_an_unannounced_length_ends_at_its_last_byte_before_an_empty_final_call() -> None:
    """Compression drops the Content-Length: the last chunk handed to the
    compressing writer is the last byte, not the send returning."""
    record = started_record()
    record.body_started(1_500, n.TRANSFER_SENDFILE)
    record.head_sent(200, 2_000, None)
    record.body_sent(100, 3_000)
    record.body_sent(50, 4_000)
    record.body_sent(0, 9_000, final=True)
    record.end()
    assert (record.facts().end_ns, record.facts().bytes_sent) == (4_000, 150)


def test_a_failure_after_every_byte_owed_is_complete_at_the_last_byte() -> None:
    record = started_record()
    record.body_started(1_500, n.TRANSFER_SENDFILE)
    record.head_sent(200, 2_000, 20)
    record.body_sent(20, 3_000)
    record.body_failed(9_000)  # aiohttp's write_eof raised: the client left after
    record.end(ConnectionResetError())
    assert (record.facts().end_ns, record.facts().error_type, record.facts().outcome) == (
        3_000,
        None,
        n.OUTCOME_SENT,
    )


def test_a_failure_mid_body_ends_there_with_the_bytes_handed_over() -> None:
    record = started_record()
    record.body_started(1_500, n.TRANSFER_SENDFILE)
    record.head_sent(200, 2_000, 20)
    record.body_sent(8, 3_000)
    record.body_failed(9_000)
    record.end(ConnectionResetError())
    assert (record.facts().end_ns, record.facts().bytes_sent) == (9_000, 8)
    assert record.facts().error_type == "ConnectionResetError"


def test_a_pathsend_ends_at_the_start_of_its_send() -> None:
    record = started_record()
    record.serves("/srv/a.bin", 4096)
    record.head_sent(200, 2_000, 4096)
    record.body_started(3_000, n.TRANSFER_PATHSEND)
    record.body_sent(4096, 3_000, final=True)
    record.end()
    assert (record.facts().end_ns, record.facts().transfer, record.facts().bytes_sent) == (
        3_000,
        n.TRANSFER_PATHSEND,
        4096,
    )


def test_the_send_verbs_never_raise_into_the_app(caplog: pytest.LogCaptureFixture) -> None:
    from otel_fileresp._log import forget_logged

    forget_logged()
    record = started_record()
    record.head_sent(200, 2_000, 20)
    record.body_sent("not a size", 3_000)  # type: ignore[arg-type]
    assert record.facts().bytes_sent == 0
    assert "record.body_sent" in caplog.text


# -- the os.sendfile wrapper: only while a file response sends by sendfile ------------


def test_os_sendfile_is_wrapped_while_instrumented_and_restored_after(
    tmp_path: Path, telemetry: Telemetry
) -> None:
    import os
    import shutil

    original = os.sendfile
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 100_000)
    with instrumenting("aiohttp", telemetry):
        assert os.sendfile is not original
        # Anyone else's sendfile (shutil copies with it on Linux) passes through.
        shutil.copyfile(source, tmp_path / "copy.bin")
        assert (tmp_path / "copy.bin").read_bytes() == source.read_bytes()
    assert os.sendfile is original
    assert responses(telemetry) == []
