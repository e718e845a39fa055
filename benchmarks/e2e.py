"""End to end: real servers in their own processes under load on loopback.

Seven servers per framework run side by side for the whole section (see
``e2e_server.py``): ``off`` (contrib's server instrumentation and an SDK
pipeline, sampling everything), ``on`` (the same plus this package, default
settings), ``phase_off`` (``on`` with ``phase_spans=False``), ``off_10`` and
``on_10`` (``off`` and ``on`` sampling 10% of traces, as production services
do), ``bare`` (no OpenTelemetry) and ``bare_on`` (this package without an
SDK: non-recording). ``on`` and ``phase_off`` are compared with ``off``,
``on_10`` with ``off_10``, ``bare_on`` with ``bare``. Each round runs one
load batch on each, in a shuffled order; each batch is bounded in time and
in requests. The load generator is ``wrk -t1 -c16 --latency`` when wrk is
installed (a C program: it leaves the servers most of the 2 cores), else
Python (asyncio, 16 keep-alive connections, each sending its next request
when the previous reply is complete; ``--python-load`` forces it).

The same servers answer the system-call count: ``strace -f -c`` attached to
each server in turn (when strace is installed) while one connection sends a
fixed number of requests.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns, process_time_ns

from _common import Spread, percentile, table, verdict
from drivers import FRAMEWORKS, KeepAliveClient, Request, parse_head, raw_request

HERE = Path(__file__).resolve().parent
CONNECTIONS = 16
TARGET_RPS = 0.93
START_TIMEOUT = 30.0


@dataclass
class Server:
    framework: str
    variant: str
    port: int
    pid: int
    process: subprocess.Popen[str]


@contextmanager
def server(framework: str, variant: str, root: Path, max_seconds: float) -> Iterator[Server]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "e2e_server.py"),
            framework,
            variant,
            str(root),
            str(max_seconds),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port_line = process.stdout.readline()  # bounded: the child exits on any error
        pid_line = process.stdout.readline()
        if not port_line.startswith("PORT ") or not pid_line.startswith("PID "):
            raise RuntimeError(f"{framework} server did not start: {port_line!r}")
        yield Server(
            framework, variant, int(port_line.split()[1]), int(pid_line.split()[1]), process
        )
    finally:
        assert process.stdin is not None
        process.stdin.close()  # the server's signal to exit
        _reap(process)
        if process.stdout is not None:
            process.stdout.close()


def _reap(process: subprocess.Popen[str]) -> None:
    """Wait for a process told to exit; kill it if it does not in time."""
    try:
        process.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(START_TIMEOUT)


# -- load generators --------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    latencies_ns: list[int] = field(default_factory=list)
    client_cpu: float = float("nan")  # load generator CPU seconds / wall second
    errors: int = 0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def p(self, q: float) -> float:
        """Latency percentile in seconds."""
        return percentile(self.latencies_ns, q) / 1e9


async def python_load(
    port: int, request: Request, duration: float, max_requests: int, connections: int
) -> Load:
    raw = raw_request(request, port)
    head_only = request.method == "HEAD"
    clients = [await KeepAliveClient.connect(port) for _ in range(connections)]
    latencies: list[int] = []
    errors = 0
    sent = 0
    cpu_started = process_time_ns()
    started = perf_counter_ns()
    deadline = started + int(duration * 1e9)

    async def worker(client: KeepAliveClient) -> None:
        nonlocal sent, errors
        while sent < max_requests and perf_counter_ns() < deadline:
            sent += 1
            t0 = perf_counter_ns()
            status, _, _ = await client.exchange(raw, head_only)
            latencies.append(perf_counter_ns() - t0)
            if status != request.status:
                errors += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(*(worker(c) for c in clients)), duration + START_TIMEOUT
        )
    finally:
        elapsed = (perf_counter_ns() - started) / 1e9
        cpu = (process_time_ns() - cpu_started) / 1e9
        for client in clients:
            await client.close()
    return Load(len(latencies), elapsed, latencies, cpu / elapsed, errors)


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_COUNT = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def wrk_load(port: int, request: Request, duration: float, connections: int) -> Load:
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for name, value in request.headers:
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://127.0.0.1:{port}{request.path}")
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + START_TIMEOUT, check=True
    ).stdout
    count = _WRK_COUNT.search(output)
    p99 = _WRK_P99.search(output)
    if count is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    seconds = float(count.group(2)) * _UNIT[count.group(3)]
    load = Load(int(count.group(1)), seconds)
    # wrk gives percentiles, not samples: keep the p99 as the only "sample".
    load.latencies_ns = [int(float(p99.group(1)) * _UNIT[p99.group(2)] * 1e9)]
    non_2xx = _WRK_NON2XX.search(output)
    load.errors = int(non_2xx.group(1)) if non_2xx and request.status < 300 else 0
    return load


# -- rounds ------------------------------------------------------------------

VARIANTS = ("off", "on", "phase_off", "off_10", "on_10", "bare", "bare_on")
# Each compared variant and its reference.
REFERENCE = {"on": "off", "phase_off": "off", "on_10": "off_10", "bare_on": "bare"}


@dataclass
class E2EResult:
    framework: str
    path: str
    generator: str
    loads: dict[str, list[Load]]
    orders: list[str]

    def rps_ratio(self, variant: str) -> Spread:
        pairs = zip(self.loads[REFERENCE[variant]], self.loads[variant], strict=True)
        return Spread.of([b.rps / a.rps for a, b in pairs])

    def p99_ratio(self, variant: str) -> Spread:
        pairs = zip(self.loads[REFERENCE[variant]], self.loads[variant], strict=True)
        return Spread.of([b.p(99) / a.p(99) for a, b in pairs])


def _request(path: str, etag: str) -> Request:
    # The request headers are the same with and without our instrumentation.
    headers: tuple[tuple[str, str], ...] = ()
    if path == "304":
        headers = (("if-none-match", etag),)
    return Request(path, "GET", "/static/small.txt", headers, 200 if path == "200" else 304)


async def _etag(port: int) -> str:
    client = await KeepAliveClient.connect(port)
    try:
        client.writer.write(raw_request(Request("e", "GET", "/static/small.txt", (), 200), port))
        head = await client.reader.readuntil(b"\r\n\r\n")
        _, headers = parse_head(head)
        await client.reader.readexactly(int(headers["content-length"]))
        return headers["etag"]
    finally:
        await client.close()


def run(
    root: Path,
    rounds: int,
    duration: float,
    max_requests: int,
    use_wrk: bool,
    paths: tuple[str, ...],
    log: Callable[[str], None],
    syscall_requests: int,
) -> tuple[list[E2EResult], list[list[str]]]:
    generator = "wrk" if use_wrk else "python"
    if use_wrk and shutil.which("wrk") is None:
        log("  wrk is not installed: using the Python load generator")
        generator = "python"
    results = []
    syscall_rows: list[list[str]] = []
    rng = random.Random(7)
    server_seconds = 120 + rounds * len(paths) * len(VARIANTS) * (duration + 5)
    for framework in FRAMEWORKS:
        with ExitStack() as stack:
            servers = {
                variant: stack.enter_context(server(framework, variant, root, server_seconds))
                for variant in VARIANTS
            }
            etag = asyncio.run(_etag(servers["off"].port))

            def load(srv: Server, request: Request, seconds: float) -> Load:
                if generator == "wrk":
                    return wrk_load(srv.port, request, seconds, CONNECTIONS)
                return asyncio.run(
                    python_load(srv.port, request, seconds, max_requests, CONNECTIONS)
                )

            for path in paths:
                request = _request(path, etag)
                for srv in servers.values():  # warm-up
                    load(srv, request, min(1.0, duration))
                loads: dict[str, list[Load]] = {variant: [] for variant in VARIANTS}
                orders = []
                for _ in range(rounds):
                    order = list(VARIANTS)
                    rng.shuffle(order)
                    orders.append(" ".join(order))
                    for variant in order:
                        result_load = load(servers[variant], request, duration)
                        if result_load.errors:
                            raise RuntimeError(f"{result_load.errors} wrong answers ({variant})")
                        loads[variant].append(result_load)
                result = E2EResult(framework, path, generator, loads, orders)
                log(
                    f"  {framework} {path}: requests/s ratio on/off "
                    f"{result.rps_ratio('on').median:.3f}, "
                    f"p99 ratio {result.p99_ratio('on').median:.3f}"
                )
                results.append(result)
                if syscall_requests:
                    syscall_rows.extend(
                        syscall_counts(
                            {v: servers[v] for v in ("off", "on")},
                            request,
                            syscall_requests,
                            framework,
                            path,
                            log,
                        )
                    )
    return results, syscall_rows


# -- system calls ------------------------------------------------------------

STAT_CALLS = {"stat", "lstat", "fstat", "newfstatat", "statx", "fstatat64", "stat64"}
OPEN_CALLS = {"open", "openat", "openat2"}
READ_CALLS = {"read", "pread64", "readv", "preadv", "preadv2"}
SYSCALL_ATTEMPTS = 3
TRACED = "trace=%stat,%lstat,%fstat,open,openat,openat2,read,pread64,readv,preadv,preadv2"


def _strace_summary(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] not in ("total", "syscall") and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


async def _sequential(port: int, request: Request, count: int) -> int:
    client = await KeepAliveClient.connect(port)
    raw = raw_request(request, port)
    try:
        wrong = 0
        for _ in range(count):
            status, _, _ = await client.exchange(raw, False)
            wrong += status != request.status
        return wrong
    finally:
        await client.close()


def _strace_once(srv: Server, request: Request, count: int) -> dict[str, int]:
    """Counts of the traced system calls while ``count`` responses are served."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "strace.txt"
        tracer = subprocess.Popen(
            ["strace", "-f", "-c", "-e", TRACED, "-o", str(out), "-p", str(srv.pid)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tracer.stderr is not None
            line = tracer.stderr.readline()  # "strace: Process N attached"
            if "attached" not in line:
                raise RuntimeError(f"strace could not attach: {line!r}")
            time.sleep(0.5)  # the other threads attach too
            wrong = asyncio.run(_sequential(srv.port, request, count))
            time.sleep(0.3)  # the deferred close jobs (aiohttp) run
        finally:
            tracer.send_signal(signal.SIGINT)  # strace writes its summary and detaches
            _reap(tracer)
            if tracer.stderr is not None:
                tracer.stderr.close()
        if wrong:
            raise RuntimeError(f"{wrong} wrong answers under strace")
        return _strace_summary(out)


def _families(counts: dict[str, int]) -> dict[str, int]:
    return {
        "stat": sum(v for k, v in counts.items() if k in STAT_CALLS),
        "open": sum(v for k, v in counts.items() if k in OPEN_CALLS),
        "read": sum(v for k, v in counts.items() if k in READ_CALLS),
    }


def syscall_counts(
    servers: dict[str, Server],
    request: Request,
    count: int,
    framework: str,
    path: str,
    log: Callable[[str], None],
) -> list[list[str]]:
    """stat/open/read system calls per response of each server (strace -f -c).

    Each server first answers ``count`` requests unobserved (lazy imports and
    caches settle), then is observed up to ``SYSCALL_ATTEMPTS`` times; the
    attempt with the fewest calls is kept, since anything unrelated to the
    responses (a late import, a periodic task) only ever adds calls.
    """
    if shutil.which("strace") is None:
        log("  strace is not installed: no system-call counts")
        return []
    rows = []
    per: dict[str, dict[str, float]] = {}
    for variant, srv in servers.items():
        if asyncio.run(_sequential(srv.port, request, count)):
            raise RuntimeError(f"wrong answers before strace ({variant})")
        attempts = [_strace_once(srv, request, count) for _ in range(SYSCALL_ATTEMPTS)]
        counts = min(attempts, key=lambda c: sum(_families(c).values()))
        totals = " / ".join(str(sum(_families(c).values())) for c in attempts)
        families = _families(counts)
        per[variant] = {k: v / count for k, v in families.items()}
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        detail = f"{detail or 'none'} (attempts: {totals} calls)"
        rows.append(
            [
                framework,
                path,
                variant,
                f"{per[variant]['stat']:.2f}",
                f"{per[variant]['open']:.2f}",
                f"{per[variant]['read']:.2f}",
                detail,
            ]
        )
    same = per["on"] == per["off"]
    rows.append([framework, path, "same?", "", "", "", "yes" if same else "NO: differs"])
    return rows


def report(
    results: list[E2EResult], syscall_rows: list[list[str]], syscall_requests: int
) -> tuple[str, list[tuple[str, str, bool]]]:
    checks: list[tuple[str, str, bool]] = []
    rows = []
    for result in results:
        for variant, reference in REFERENCE.items():
            rps = result.rps_ratio(variant)
            p99 = result.p99_ratio(variant)
            target = ""
            if variant in ("on", "on_10"):
                met = rps.median >= TARGET_RPS
                target = f">= {TARGET_RPS}: {verdict(met)}"
                sampling = "everything sampled" if variant == "on" else "10% sampled"
                checks.append(
                    (
                        f"end to end requests/s {result.framework} {result.path} ({sampling})",
                        f"{rps.median:.3f}",
                        met,
                    )
                )
            off, loads = result.loads[reference], result.loads[variant]
            client = Spread.of([load.client_cpu for load in off + loads]).median
            rows.append(
                [
                    result.framework,
                    result.path,
                    f"{variant} / {reference}",
                    result.generator,
                    f"{Spread.of([load.rps for load in off]).median:.0f}",
                    f"{Spread.of([load.rps for load in loads]).median:.0f}",
                    rps.ratio_text(),
                    f"{Spread.of([load.p(99) for load in off]).median * 1e3:.2f}",
                    f"{Spread.of([load.p(99) for load in loads]).median * 1e3:.2f}",
                    p99.ratio_text(),
                    "n/a" if client != client else f"{client:.2f}",
                    target,
                ]
            )
    text = (
        f"{CONNECTIONS} keep-alive connections on loopback. off = contrib server "
        "instrumentation + SDK (everything sampled); on = the same + otel_fileresp; "
        "phase_off = on with phase_spans=False; off_10/on_10 = off/on with "
        "ParentBased(TraceIdRatioBased(0.1)); bare = no OpenTelemetry; bare_on = "
        "otel_fileresp without an SDK:\n\n"
        + table(
            [
                "framework",
                "response",
                "variant / reference",
                "load generator",
                "reference req/s",
                "variant req/s",
                "req/s ratio: median (IQR, range, rounds)",
                "reference p99 ms",
                "variant p99 ms",
                "p99 ratio: median (IQR, range, rounds)",
                "generator CPU s/s",
                "target",
            ],
            rows,
        )
    )
    raw = []
    for result in results:
        raw_rows = []
        for index, order in enumerate(result.orders):
            cells = []
            for variant in VARIANTS:
                load = result.loads[variant][index]
                cells += [f"{load.rps:.0f}", f"{load.p(99) * 1e3:.2f}"]
            raw_rows.append([index + 1, *cells, order])
        headers = ["round"]
        for variant in VARIANTS:
            headers += [f"{variant} req/s", f"{variant} p99 ms"]
        raw.append(
            f"{result.framework} {result.path} ({result.generator})\n\n"
            + table([*headers, "order run"], raw_rows)
        )
    text += "\n\nRaw rounds:\n\n" + "\n\n".join(raw)
    if syscall_rows:
        same_all = all(row[-1] == "yes" for row in syscall_rows if row[2] == "same?")
        checks.append(("same stat/open/read system calls per response (strace)", "", same_all))
        text += (
            "\n\nSystem calls per response, `strace -f -c` attached to the server process "
            f"(all threads) during {syscall_requests} sequential requests on one "
            f"connection, after as many unobserved; the fewest of {SYSCALL_ATTEMPTS} "
            "attempts:\n\n"
            + table(
                ["framework", "response", "otel_fileresp", "stat", "open", "read", "all counted"],
                syscall_rows,
            )
        )
    return text, checks
