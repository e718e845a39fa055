"""Production servers, stopped with SIGTERM: every span and metric point arrives.

Each test runs a real server in its own process group (uvicorn, 1 process;
the others with 2 workers), the way
docs/servers.md tells users to, with the files of ``examples/servers/``
exactly as shipped (``starlette_app.py``, ``aiohttp_app.py``,
``gunicorn.conf.py``) and ``opentelemetry-instrument`` exporting over
OTLP/HTTP to the tests' receiver on 127.0.0.1 (``tests/support/otlp_receiver.py``):

- gunicorn, 2 workers of ``uvicorn_worker.UvicornWorker`` (the
  ``uvicorn.workers`` module is deprecated in favour of that package);
- gunicorn, 2 workers of aiohttp's ``GunicornWebWorker``;
- hypercorn, 1 worker process (see ``_hypercorn``);
- granian, ASGI interface, 2 workers: it offers ``http.response.pathsend``,
  which Starlette 0.47+ uses, so the server, not Python, opens the file. Its
  workers are ``multiprocessing`` processes: it runs with the interpreter's
  start method, and with each of the other two set by
  ``tests/apps/granian_start_method.py`` (``fork``, ``forkserver``, which
  granian turns into ``spawn``, and ``spawn``), so the figures hold on Python
  3.14 (default ``forkserver``) as on 3.11-3.13 (default ``fork``); each test
  checks from the workers' command lines that they were started that way.

The batch span processor and the metric reader are set to export every 60 s,
so nothing is exported on schedule during a test: what the receiver gets was
flushed by the package when the app shut down (its lifespan shutdown or
aiohttp's cleanup; the apps have no flush code) or at interpreter exit. The
test sends N requests (200s and 304s), SIGTERMs the server and asserts
exactly N ``fileresp.response`` spans, with the right status, outcome,
``opened`` and ``transfer``, and N ``fileresp.duration`` observations, per
worker.

**Reaching every worker deterministically.** Workers share the listening
socket, so which one accepts a connection is up to the kernel. The test
opens keep-alive connections until each worker holds one: it finds the
process holding the server end of a connection in ``/proc/net/tcp`` and
``/proc/PID/fd`` (Linux), then sends its requests over those connections.
So it knows how many responses each worker served, and checks that each
worker's spans and points (told apart by ``process.pid``) match.

**With the flush off** (``test_sigterm_with_flush_off``,
``OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN=false``) the same servers run the
tests' apps (``tests/apps/``, no flush code either): uvicorn, gunicorn's
``UvicornWorker`` and granian's forked workers deliver nothing (uvicorn
re-raises the signal, the workers die of it or exit with ``os._exit``
without running exit handlers); aiohttp's worker, hypercorn and granian's
spawned workers exit normally, so the SDK's own exit handler delivers
everything.
Those facts are what docs/servers.md states; if a server release changes
them, that test says so.

**Prometheus under gunicorn** (``test_prometheus_per_worker_ports``): with
``OTEL_METRICS_EXPORTER=prometheus`` the master binds the exporter's port
before forking and answers the scrapes from its own meter provider, which
served nothing, so it has no ``fileresp_*`` series (not even the 304 zero
series); ``gunicorn.conf.py``'s ``post_fork`` gives each worker its own port,
and the counts scraped there add up to the responses sent.

Every start, request, wait and stop is bounded; a server that does not stop
is killed with its whole process group and the test fails.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from support.otlp_receiver import Received, Receiver, otlp_http_receiver
from support.processes import Server, group_alive, kill_group, stop_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "servers"
STATIC = ROOT / "examples" / "static"
TEST_APPS = Path(__file__).resolve().parents[1] / "apps"
BIN = Path(sys.executable).parent
BODY = (STATIC / "hello.txt").read_bytes()
N = 34  # the responses of the users' report in issue 14
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 10.0
DATA_TIMEOUT = 10.0
EXPORT_DELAY_MS = "60000"  # nothing is exported on schedule during a test

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="finds each worker through Linux's /proc"
)


def _version(distribution: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", metadata.version(distribution))[:3])


# Starlette answers with http.response.pathsend (when the server offers it) from 0.47.0 on.
STARLETTE_PATHSEND = _version("starlette") >= (0, 47, 0)


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports that are free on 127.0.0.1 now."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        with ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


# --- which process holds a connection ------------------------------------------------


def _server_socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server end of 127.0.0.1:client_port -> 127.0.0.1:server_port."""
    local = f"0100007F:{server_port:04X}"
    remote = f"0100007F:{client_port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[9])
    return None


def _session_pids(session: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp session ...
            if int(stat.rsplit(")", 1)[1].split()[3]) == session:
                pids.append(int(entry.name))
    return pids


def _holder(session: int, inode: int) -> int | None:
    """The pid, in the server's session, that has socket ``inode`` open."""
    target = f"socket:[{inode}]"
    for pid in _session_pids(session):
        with suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    if os.readlink(fd) == target:
                        return pid
    return None


@dataclass
class Pinned:
    """A keep-alive connection to one worker, and the replies it got."""

    pid: int
    connection: http.client.HTTPConnection
    sock: socket.socket
    statuses: list[int] = field(default_factory=list)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> http.client.HTTPResponse:
        self.connection.request("GET", path, headers=dict(headers or {}))
        response = self.connection.getresponse()
        response.read()
        # http.client reconnects silently when the server closed the connection:
        # then the request may have gone to another worker.
        assert self.connection.sock is self.sock, f"worker {self.pid} closed the connection"
        return response

    def settled(self) -> None:
        """Once this worker's file responses have all ended (``/settled``)."""
        self.connection.request("GET", "/settled")
        left = self.connection.getresponse().read()
        assert self.connection.sock is self.sock, f"worker {self.pid} closed the connection"
        assert left == b"0", f"worker {self.pid}: {left!r} file responses still in flight"


def _pin_workers(server: Server, workers: int) -> list[Pinned]:
    """One keep-alive connection to each of ``workers`` distinct worker processes."""
    pinned: dict[int, Pinned] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for pin in list(pinned.values()):  # still open? (idle keep-alive may have expired)
            try:
                pin.get("/")
            except (OSError, http.client.HTTPException, AssertionError):
                pin.connection.close()
                del pinned[pin.pid]
        if len(pinned) == workers:
            return list(pinned.values())
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request("GET", "/")  # a 404 from the router: no file response
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            connection.close()
            time.sleep(0.05)
            continue
        sock = connection.sock
        if sock is None:  # the server closed this connection (a worker starting or stopping)
            connection.close()
            time.sleep(0.05)
            continue
        inode = _server_socket_inode(server.port, sock.getsockname()[1])
        pid = _holder(server.process.pid, inode) if inode is not None else None
        if pid is None or pid in pinned:
            connection.close()
            time.sleep(0.02)
            continue
        pinned[pid] = Pinned(pid, connection, sock)
    for pin in pinned.values():
        pin.connection.close()
    pytest.fail(
        f"reached {len(pinned)} of {workers} workers within {START_TIMEOUT} s:\n{server.log()}"
    )


def _serve(pins: list[Pinned], count: int) -> None:
    """``count`` file requests, round robin over the workers: a 200 first on each
    connection, then 304 (its ETag sent back) and 200 in turn."""
    etags: dict[int, str] = {}
    for i in range(count):
        pin = pins[i % len(pins)]
        etag = etags.get(pin.pid)
        conditional = etag is not None and len(pin.statuses) % 2 == 1
        response = pin.get("/static/hello.txt", {"If-None-Match": etag} if conditional else None)
        if response.status == 200:
            etags[pin.pid] = response.getheader("etag") or ""
            assert etags[pin.pid], response.getheaders()
        pin.statuses.append(response.status)
    assert {s for p in pins for s in p.statuses} == {200, 304}


# --- running a server ---------------------------------------------------------------


def _environment(receiver: Receiver | None, extra: Mapping[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.pop("PYTHONPATH", None)
    environ.update(
        {
            "FILERESP_EXAMPLE_STATIC": str(STATIC),
            "FILERESP_TEST_STATIC_DIR": str(STATIC),
            "OTEL_SERVICE_NAME": "fileresp-servers-test",
            "OTEL_TRACES_EXPORTER": "otlp" if receiver else "none",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
            "OTEL_BSP_SCHEDULE_DELAY": EXPORT_DELAY_MS,
            "OTEL_METRIC_EXPORT_INTERVAL": EXPORT_DELAY_MS,
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel,process",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if receiver is not None:
        environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    environ.update(extra)
    return environ


@contextmanager
def running(
    tmp_path: Path,
    command: list[str],
    cwd: Path,
    receiver: Receiver | None,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """``opentelemetry-instrument COMMAND`` (``{port}`` replaced) in its own process group.

    Yields once it answers HTTP; stopping it (SIGTERM, bounded wait) is the
    caller's job, through :func:`stop`. Whatever is left is killed on exit.
    """
    port = _free_ports(1)
    argv = [str(BIN / "opentelemetry-instrument"), *(a.format(port=port) for a in command)]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=_environment(receiver, env or {}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{server.log()}")
            with suppress(OSError, http.client.HTTPException):
                server.request("GET", "/")
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {START_TIMEOUT} s:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None or group_alive(process.pid):
            kill_group(process)


def stop(server: Server, *, dies_of_signal: bool = False) -> None:
    """SIGTERM, as Docker, Kubernetes and systemd send; the whole group must exit.

    ``dies_of_signal``: uvicorn re-raises the signal once it has shut down
    gracefully, so it ends with -SIGTERM rather than 0.
    """
    if dies_of_signal:
        process = server.process
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(process)
            pytest.fail(f"the server did not stop within {STOP_TIMEOUT} s:\n{server.log()}")
        assert returncode in (0, -signal.SIGTERM), server.log()
    else:
        stop_server(server, signal.SIGTERM)
    log = server.log()
    assert "Traceback" not in log, log
    assert "otel_fileresp:" not in log, log


# --- the servers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    command: list[str]
    workers: int
    framework: str
    # transfer of a 200, and whether Python opened the file for it
    transfer: str
    opened: bool
    # what arrives with OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN=false: every
    # response (the SDK's exit handler runs), or none
    delivered_without_flush: bool
    # the same server, running the tests' app (no flush code either)
    bare_command: list[str]
    dies_of_signal: bool = False
    # how the workers are started, when the test checks it: "fork" or "spawn"
    workers_start: str | None = None


def _gunicorn(worker_class: str, target: str, config: bool = True) -> list[str]:
    return [
        str(BIN / "gunicorn"),
        # not --config: opentelemetry-instrument takes it for an abbreviation of its own options
        *(["-c", "gunicorn.conf.py"] if config else []),
        "--workers",
        "2",
        "--worker-class",
        worker_class,
        "--bind",
        "127.0.0.1:{port}",
        target,
    ]


def _hypercorn() -> list[str]:
    # One worker process: with several, hypercorn's master terminates the
    # others as soon as the first one exits (hypercorn/run.py), which kills a
    # worker still in its graceful shutdown, flush or no flush (docs/servers.md).
    return [
        str(BIN / "hypercorn"),
        "--workers",
        "1",
        "--bind",
        "127.0.0.1:{port}",
        "starlette_app:app",
    ]


def _uvicorn() -> list[str]:
    return [
        str(BIN / "uvicorn"),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "starlette_app:app",
    ]


# multiprocessing's start methods on Linux; the first is the interpreter's default.
START_METHODS = multiprocessing.get_all_start_methods()
DEFAULT_START_METHOD = START_METHODS[0]


def _granian_workers_start(start_method: str) -> str:
    """How granian 2.x starts its workers under a start method: ``fork``, or
    ``spawn`` for ``forkserver`` too (granian/server/mp.py, ``WorkerProcess``)."""
    return "fork" if start_method == "fork" else "spawn"


def _granian(start_method: str | None = None) -> list[str]:
    """granian's command line; with ``start_method``, its workers are started
    with that ``multiprocessing`` start method (``tests/apps/granian_start_method.py``)."""
    launcher = (
        [str(BIN / "granian")]
        if start_method is None
        else [sys.executable, str(TEST_APPS / "granian_start_method.py"), start_method]
    )
    return [
        *launcher,
        "--interface",
        "asgi",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "starlette_app:app",
    ]


SETUPS = {
    "uvicorn": Setup(
        _uvicorn(),
        workers=1,
        framework="starlette",
        transfer="read",
        opened=True,
        delivered_without_flush=False,
        bare_command=_uvicorn(),
        dies_of_signal=True,
    ),
    "gunicorn-uvicorn-worker": Setup(
        _gunicorn("uvicorn_worker.UvicornWorker", "starlette_app:app"),
        workers=2,
        framework="starlette",
        transfer="read",
        opened=True,
        delivered_without_flush=False,
        bare_command=_gunicorn("uvicorn_worker.UvicornWorker", "starlette_app:app", False),
    ),
    "gunicorn-aiohttp-worker": Setup(
        _gunicorn("aiohttp.GunicornWebWorker", "aiohttp_app:make_app"),
        workers=2,
        framework="aiohttp",
        transfer="sendfile",
        opened=True,
        delivered_without_flush=True,
        bare_command=_gunicorn(
            "aiohttp.GunicornWebWorker", f"aiohttp_app:make_app({str(STATIC)!r})", False
        ),
    ),
    "hypercorn": Setup(
        _hypercorn(),
        workers=1,
        framework="starlette",
        transfer="read",
        opened=True,
        delivered_without_flush=True,
        bare_command=_hypercorn(),
    ),
    "granian": Setup(
        _granian(),
        workers=2,
        framework="starlette",
        # The server opens the file (pathsend) where Starlette uses it.
        transfer="pathsend" if STARLETTE_PATHSEND else "read",
        opened=not STARLETTE_PATHSEND,
        # The interpreter's default start method: fork on Linux up to 3.13.
        delivered_without_flush=_granian_workers_start(DEFAULT_START_METHOD) == "spawn",
        bare_command=_granian(),
        workers_start=_granian_workers_start(DEFAULT_START_METHOD),
    ),
    # The other start methods, set by the program that runs granian (Python
    # 3.14's default is forkserver): a spawned worker ends with sys.exit, so
    # the SDK's exit handler flushes too; a forked one with os._exit.
    **{
        f"granian-{method}": Setup(
            _granian(method),
            workers=2,
            framework="starlette",
            transfer="pathsend" if STARLETTE_PATHSEND else "read",
            opened=not STARLETTE_PATHSEND,
            delivered_without_flush=_granian_workers_start(method) == "spawn",
            bare_command=_granian(method),
            workers_start=_granian_workers_start(method),
        )
        for method in START_METHODS
        if method != DEFAULT_START_METHOD
    },
}


def _expected(setup: Setup, pins: list[Pinned]) -> dict[int, Counter[tuple[object, ...]]]:
    """Per worker pid: (status, outcome, opened, transfer) -> responses."""
    expected: dict[int, Counter[tuple[object, ...]]] = {}
    for pin in pins:
        expected[pin.pid] = Counter(
            (200, "sent", setup.opened, setup.transfer)
            if status == 200
            else (304, "not_modified", False, "none")
            for status in pin.statuses
        )
    return expected


def _received_responses(received: Received) -> dict[int, Counter[tuple[object, ...]]]:
    found: dict[int, Counter[tuple[object, ...]]] = {}
    for span in received.spans("fileresp.response"):
        a = span.attributes
        key = (
            a["http.response.status_code"],
            a["fileresp.outcome"],
            a["fileresp.opened"],
            a["fileresp.transfer"],
        )
        found.setdefault(span.pid, Counter())[key] += 1
    return found


def _received_durations(received: Received) -> dict[int, Counter[tuple[object, ...]]]:
    """Per worker pid: (status, outcome, opened) -> observations of ``fileresp.duration``."""
    found: dict[int, Counter[tuple[object, ...]]] = {}
    for point in received.latest_points("fileresp.duration"):
        a = point.attributes
        key = (a["http.response.status_code"], a["fileresp.outcome"], a["fileresp.opened"])
        found.setdefault(point.resource.get("process.pid"), Counter())[key] += point.count or 0
    return found


def _without_transfer(counts: dict[int, Counter[tuple[object, ...]]]) -> dict[int, Counter]:
    result: dict[int, Counter[tuple[object, ...]]] = {}
    for pid, counter in counts.items():
        result[pid] = Counter()
        for key, n in counter.items():
            result[pid][key[:3]] += n
    return result


def _check_workers_start(setup: Setup, pins: list[Pinned]) -> None:
    """The workers were started as ``setup`` says: a spawned ``multiprocessing``
    worker runs ``multiprocessing.spawn``'s ``spawn_main`` (its command line
    says so); a forked one has its parent's command line."""
    if setup.workers_start is None:
        return
    for pin in pins:
        argv = Path(f"/proc/{pin.pid}/cmdline").read_bytes().split(b"\0")
        spawned = any(b"spawn_main" in arg for arg in argv)
        assert spawned == (setup.workers_start == "spawn"), (setup.workers_start, argv)


@pytest.mark.parametrize("name", list(SETUPS))
def test_sigterm_delivers_everything(tmp_path: Path, name: str) -> None:
    """The examples as shipped (no flush code): N responses, SIGTERM, exactly N
    spans and N observations, flushed by the package at the app's shutdown."""
    setup = SETUPS[name]
    with (
        otlp_http_receiver() as receiver,
        running(tmp_path, setup.command, EXAMPLES, receiver) as server,
    ):
        pins = _pin_workers(server, setup.workers)
        _check_workers_start(setup, pins)
        _serve(pins, N)
        stop(server, dies_of_signal=setup.dies_of_signal)
    expected = _expected(setup, pins)
    received = receiver.received
    received.wait_until(lambda r: len(r.spans("fileresp.response")) >= N, DATA_TIMEOUT)
    received.wait_until(
        lambda r: sum(sum(c.values()) for c in _received_durations(r).values()) >= N,
        DATA_TIMEOUT,
    )
    assert len(received.spans("fileresp.response")) == N
    assert _received_responses(received) == expected
    assert _received_durations(received) == _without_transfer(expected)
    # Each worker is its own instance (the SDK draws service.instance.id per process).
    instances = {(s.pid, s.resource.get("service.instance.id")) for s in received.spans()}
    assert len({pid for pid, _ in instances}) == len(instances) == setup.workers
    assert len({i for _, i in instances if i}) == setup.workers
    # fileresp.opens comes from the workers only (a gunicorn master that
    # instrumented and served nothing sends no series), each with its 304
    # series at 0: the positive control is there once per serving process.
    workers = {pin.pid for pin in pins}
    opens = received.latest_points("fileresp.opens")
    assert {point.resource.get("process.pid") for point in opens} == workers
    zero = [p for p in opens if p.attributes.get("http.response.status_code") == 304]
    assert sorted(p.resource.get("process.pid") for p in zero) == sorted(workers)
    assert {p.value for p in zero} == {0}
    # So do the pool gauges and every other fileresp.* metric: nothing from
    # a process that served no file (a gunicorn or granian master).
    metric_pids = {
        p.resource.get("process.pid") for p in received.points() if p.metric.startswith("fileresp.")
    }
    assert metric_pids == workers, (metric_pids, workers)
    pool_pids = {
        p.resource.get("process.pid") for p in received.points("fileresp.threadpool.limit")
    }
    assert pool_pids == workers, (pool_pids, workers)
    for span in received.spans("fileresp.response"):
        assert span.attributes["fileresp.framework"] == setup.framework
        assert span.attributes["file.name"] == "hello.txt"
        sent = span.attributes["http.response.status_code"] == 200
        assert span.attributes["fileresp.bytes"] == (len(BODY) if sent else 0)


@pytest.mark.parametrize("name", list(SETUPS))
def test_sigterm_with_flush_off(tmp_path: Path, name: str) -> None:
    """The tests' apps, ``OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN=false``: what
    each server loses on SIGTERM without the package's flush, of responses
    that had all ended (``/settled``) when the signal came.

    uvicorn, gunicorn's UvicornWorker and granian's forked workers lose every
    span and point buffered in their workers; aiohttp's worker, hypercorn and
    granian's spawned workers exit normally and the SDK's exit handler
    flushes. docs/servers.md reports the same figures. (A response still
    running after its last byte is another matter: see
    :func:`test_sigterm_delivers_a_response_still_finishing`.)
    """
    setup = SETUPS[name]
    with (
        otlp_http_receiver() as receiver,
        running(
            tmp_path,
            setup.bare_command,
            TEST_APPS,
            receiver,
            {"OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN": "false"},
        ) as server,
    ):
        pins = _pin_workers(server, setup.workers)
        _check_workers_start(setup, pins)
        _serve(pins, N)
        for pin in pins:
            pin.settled()
        stop(server, dies_of_signal=setup.dies_of_signal)
    received = receiver.received
    if setup.delivered_without_flush:
        received.wait_until(lambda r: len(r.spans("fileresp.response")) >= N, DATA_TIMEOUT)
        expected = _expected(setup, pins)
        received.wait_until(
            lambda r: sum(sum(c.values()) for c in _received_durations(r).values()) >= N,
            DATA_TIMEOUT,
        )
        assert _received_responses(received) == expected
        assert _received_durations(received) == _without_transfer(expected)
        return
    # The server has exited: anything flushed would be here already; allow for
    # the receiver's last request in flight.
    time.sleep(1.0)
    assert received.spans("fileresp.response") == []
    assert received.points("fileresp.duration") == []


@pytest.mark.parametrize(
    "name", [name for name, setup in SETUPS.items() if setup.framework == "starlette"]
)
def test_sigterm_delivers_a_response_still_finishing(tmp_path: Path, name: str) -> None:
    """SIGTERM as soon as each worker's client has its last byte, while the
    response still runs (its background task, ``FINISHING_S``): the flush at
    shutdown waits for it, so its span and point are delivered, whether the
    server waits for the request's task before the app's shutdown (uvicorn)
    or not (granian)."""
    setup = SETUPS[name]
    with (
        otlp_http_receiver() as receiver,
        running(tmp_path, setup.bare_command, TEST_APPS, receiver) as server,
    ):
        pins = _pin_workers(server, setup.workers)
        for pin in pins:
            response = pin.get("/finishing/hello.txt")
            assert response.status == 200
        stop(server, dies_of_signal=setup.dies_of_signal)
    received = receiver.received
    received.wait_until(lambda r: len(r.spans("fileresp.response")) >= len(pins), DATA_TIMEOUT)
    received.wait_until(
        lambda r: sum(sum(c.values()) for c in _received_durations(r).values()) >= len(pins),
        DATA_TIMEOUT,
    )
    expected = {pin.pid: Counter([(200, "sent", setup.opened, setup.transfer)]) for pin in pins}
    assert _received_responses(received) == expected
    assert _received_durations(received) == _without_transfer(expected)


def _scrape(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        connection.close()


def _duration_count(exposition: str) -> int:
    """The sum of every ``fileresp_duration_seconds_count`` series."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("fileresp_duration_seconds_count{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


@pytest.mark.parametrize("preload", [False, True], ids=["fork", "preload"])
def test_prometheus_per_worker_ports(tmp_path: Path, preload: bool) -> None:
    """gunicorn, 2 UvicornWorkers, ``OTEL_METRICS_EXPORTER=prometheus``.

    The exporter's own port (bound by the master before it forked) shows no
    ``fileresp_*`` series at all; the per-worker ports that ``gunicorn.conf.py`` opens in
    ``post_fork`` show each worker's, and together all of them.
    """
    base = _free_ports(3)
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(base),
    }
    setup = SETUPS["gunicorn-uvicorn-worker"]
    # --preload: the master imports the app (and so instruments it) before forking.
    command = [*setup.command[:-1], "--preload", setup.command[-1]] if preload else setup.command
    with running(tmp_path, command, EXAMPLES, None, env) as server:
        pins = _pin_workers(server, 2)
        # Unequal shares, so each port's count says which worker it is.
        _serve(pins, 10)
        _serve(pins[:1], 5)
        master = _scrape(base)
        # A worker's last response may still run once its client has the last
        # byte (Starlette closes the file in a worker thread): scrape again
        # until both counts are in, for a bounded time.
        expected = sorted(len(p.statuses) for p in pins)
        deadline = time.monotonic() + DATA_TIMEOUT
        while True:
            workers = [_scrape(base + i) for i in (1, 2)]
            per_worker = sorted(_duration_count(exposition) for exposition in workers)
            if per_worker == expected or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        stop(server)
    # Each worker reports the positive control.
    assert all("fileresp_opens_total{" in exposition for exposition in workers)
    # The master serves nothing: not even the 304 zero series (the positive
    # control of docs/proving-304.md is only reported where an app serves).
    assert "fileresp_" not in master, master
    assert per_worker == expected == [5, 10]
    assert "Prometheus metrics on 127.0.0.1" in server.log()


def test_prometheus_worker_without_a_port_logs_an_error(tmp_path: Path) -> None:
    """Every worker port taken: each worker still serves, and says at ERROR
    that its metrics are not served (no silent gap in the scrape)."""
    base = _free_ports(3)
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(base),
    }
    setup = SETUPS["gunicorn-uvicorn-worker"]
    with ExitStack() as taken:
        for port in (base + 1, base + 2):
            sock = taken.enter_context(socket.socket())
            sock.bind(("127.0.0.1", port))
            sock.listen()
        with running(tmp_path, setup.command, EXAMPLES, None, env) as server:
            pins = _pin_workers(server, 2)
            _serve(pins, 4)
            stop_server(server, signal.SIGTERM)
    errors = [line for line in server.log().splitlines() if "no free Prometheus port" in line]
    assert len(errors) == 2, server.log()
    assert all("[ERROR]" in line for line in errors), errors
    assert {str(pin.pid) for pin in pins} == {
        line.split("worker ")[1].split(":")[0] for line in errors
    }
