"""Servers in subprocesses, each in its own process group: started (optionally
under ``opentelemetry-instrument``) with the OTLP settings pointing at a
loopback receiver, stopped by a signal, killed with their group if they do
not stop. Every start, request, wait and stop is bounded."""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.harness import Reply
from support.otlp_receiver import Receiver

APPS = Path(__file__).resolve().parents[1] / "apps"
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 20.0
BODY = b"hello, file\n" * 100


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Below the kernel's ephemeral range: a port the kernel picked (bind to 0) is
# one it may give to the next outgoing connection of any process (an OTLP
# exporter's, a test client's) before the server we start binds it.
_PORTS = range(max(1024, min(_ephemeral_low(), 61000) - 20000), min(_ephemeral_low(), 61000))
_PICK = random.Random()
PORT_ATTEMPTS = 5


def free_port() -> int:
    """A loopback port free now, outside the kernel's ephemeral range, so no
    outgoing connection takes it before a server binds it."""
    for _ in range(200):
        port = _PICK.choice(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {_PORTS}")


def port_taken(log: str) -> bool:
    """Whether a server's log says it could not bind its port."""
    lowered = log.lower()
    return "address already in use" in lowered or "connection in use" in lowered


def _request(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        connection.close()


def hide(tmp_path: Path, module: str) -> Path:
    """A directory that, first on PYTHONPATH, makes ``module`` unimportable."""
    root = tmp_path / f"without-{module}"
    package = root / module
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f"raise ModuleNotFoundError({f'No module named {module!r}'!r}, name={module!r})\n"
    )
    return root


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None) -> Reply:
        return _request(self.port, method, path, headers)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a zombie still holds the group id
        return True
    return True


def kill_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)


@contextmanager
def server_process(
    tmp_path: Path,
    command: list[str],
    receiver: Receiver,
    stop_signal: signal.Signals,
    env: Mapping[str, str] | None = None,
    hidden: str | None = None,
    *,
    cwd: Path = APPS,
    auto: bool = True,
    ready_path: str = "/info",
) -> Iterator[Server]:
    """Run ``opentelemetry-instrument COMMAND`` (which must serve on ``{port}``),
    or COMMAND alone with ``auto=False`` (an app that sets up OpenTelemetry
    itself), in ``cwd``, with the OTLP settings pointing at ``receiver``.

    Yields once ``ready_path`` answers 200; on exit stops it with
    ``stop_signal`` and waits (bounded) for the process and everything it
    started to exit.
    """
    static = tmp_path / "static"
    static.mkdir(exist_ok=True)
    (static / "hello.txt").write_bytes(BODY)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.pop("PYTHONPATH", None)
    environ.update(
        {
            "FILERESP_TEST_STATIC_DIR": str(static),
            "FILERESP_TEST_CONTROL_DIR": str(tmp_path),
            "OTEL_SERVICE_NAME": "fileresp-autoinstrument-test",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "5",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "otel,process",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if hidden is not None:
        environ["PYTHONPATH"] = str(hide(tmp_path, hidden))
    environ.update(env or {})
    launcher = [str(BIN / "opentelemetry-instrument")] if auto else []
    for attempt in range(PORT_ATTEMPTS):  # a port free when picked may be taken before the bind
        port = free_port()
        argv = [*launcher, *(a.format(port=port) for a in command)]
        log_path = tmp_path / ("server.log" if attempt == 0 else f"server-{attempt}.log")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=cwd,
                env=environ,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: nothing can be left behind
            )
        server = Server(process, port, log_path)
        if _start(server, ready_path, last_attempt=attempt == PORT_ATTEMPTS - 1):
            break
    try:
        yield server
        stop_server(server, stop_signal)
    finally:
        if process.poll() is None or group_alive(process.pid):
            kill_group(process)


def _start(server: Server, ready_path: str, *, last_attempt: bool) -> bool:
    """Wait until ``server`` serves (True), or it exited because its port was
    taken and another port may be tried (False); fail otherwise."""
    try:
        _wait_until_serving(server, ready_path)
    except BaseException:
        process = server.process
        if process.poll() is None or group_alive(process.pid):
            kill_group(process)
        if last_attempt or process.returncode is None or not port_taken(server.log()):
            raise
        return False
    return True


def _wait_until_serving(server: Server, ready_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if server.request("GET", ready_path).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the server did not answer within {START_TIMEOUT} s:\n{server.log()}")


def stop_server(server: Server, stop_signal: signal.Signals) -> None:
    """Stop ``server`` with ``stop_signal``: it and its group exit (bounded), with 0."""
    process = server.process
    process.send_signal(stop_signal)
    try:
        returncode = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(process)
        pytest.fail(f"the server did not stop within {STOP_TIMEOUT} s:\n{server.log()}")
    deadline = time.monotonic() + STOP_TIMEOUT
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(process.pid):
        kill_group(process)
        pytest.fail(f"processes started by the server outlived it:\n{server.log()}")
    assert returncode == 0, server.log()
