"""500 concurrent requests for 500 different files: nothing crosses over.

Each request carries its own W3C ``traceparent`` (trace ID and parent span ID
derived from its file's number), and the app makes it the current context, as
a server span would. Requests come from a pool of client threads, 64 in
flight, a third each: ``/static/`` (200), ``/static/`` with a matching
If-Modified-Since (304) and ``/file/`` (a bare ``FileResponse``, 200).

Then every ``fileresp.response`` must name its own request's file, sit in its
own request's trace under its parent, carry that file's size and bytes, and
own exactly the phase spans of what that request did (its wait spans' job
kinds included); no phase span may be orphaned or hang under another response.
The worker-pool jobs the responses report add up to the jobs the framework
really submitted, counted by a wrapper installed before instrumenting.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from starlette.staticfiles import StaticFiles
from support.aiohttp_site import COMBINED_JOB, STATIC_LOOKUP_JOB
from support.apps import FRAMEWORKS, serve
from support.harness import Reply, Telemetry, attrs, our_spans, responses

FILES = 500
IN_FLIGHT = 64
TOTAL_TIMEOUT = 120.0
MTIME = 1_600_000_000
KINDS = ("static", "not_modified", "file")
TRACE_BASE = 0x5EED_0000_0000_0000_0000_0000_0000_0000
PARENT_BASE = 0x0BAD_CAFE_0000_0000


def name_of(i: int) -> str:
    return f"f{i:03d}.txt"


def size_of(i: int) -> int:
    return 2000 + i  # every file a different size


def content_of(i: int) -> bytes:
    return bytes([i % 251]) * size_of(i)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("many")
    for i in range(FILES):
        path = root / name_of(i)
        path.write_bytes(content_of(i))
        os.utime(path, (MTIME, MTIME))
    (root / "warm.txt").write_bytes(b"warm")
    return root


def request_of(i: int) -> tuple[str, str, dict[str, str]]:
    kind = KINDS[i % 3]
    headers = {"traceparent": f"00-{TRACE_BASE + i:032x}-{PARENT_BASE + i:016x}-01"}
    if kind == "file":
        return kind, f"/file/{name_of(i)}", headers
    if kind == "not_modified":
        headers["If-Modified-Since"] = formatdate(MTIME, usegmt=True)
    return kind, f"/static/{name_of(i)}", headers


def expected_wait_jobs(framework: str, kind: str) -> list[str]:
    """The ``fileresp.threadpool.job`` of the wait spans this kind of request gives."""
    if framework == "starlette":
        # StaticFiles resolves with one lookup_path job (0.17+) or os.stat
        # jobs (0.16, async lookup_path); a bare FileResponse stats itself.
        sync_lookup = not asyncio.iscoroutinefunction(StaticFiles.lookup_path)
        if kind == "file":
            return ["open", "stat"]
        resolve = "lookup" if sync_lookup else "stat"
        return [resolve] if kind == "not_modified" else sorted([resolve, "open"])
    # aiohttp: one make_response job (3.11.10+), else stat (+ open for a 200);
    # a static route adds its lookup job (3.10+).
    opened = kind != "not_modified"
    jobs = ["make_response"] if COMBINED_JOB else (["stat", "open"] if opened else ["stat"])
    if kind != "file" and STATIC_LOOKUP_JOB:
        jobs.append("lookup")
    return sorted(jobs)


def fetch(served: Any, i: int) -> tuple[int, Reply]:
    _, path, headers = request_of(i)
    return i, served.request("GET", path, headers, timeout=TOTAL_TIMEOUT)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_concurrent_requests_keep_their_own_spans(framework: str, root: Path) -> None:
    telemetry = Telemetry()
    with serve(framework, root, telemetry) as served:
        # One-off work (StaticFiles' directory check) out of the way first.
        assert served.request("GET", "/static/warm.txt").status == 200
        assert served.settled()
        telemetry.clear()
        jobs_before = served.jobs()

        replies: dict[int, Reply] = {}
        with ThreadPoolExecutor(max_workers=IN_FLIGHT) as clients:
            futures = [clients.submit(fetch, served, i) for i in range(FILES)]
            for future in as_completed(futures, timeout=TOTAL_TIMEOUT):
                i, reply = future.result()
                replies[i] = reply
        assert served.settled(TOTAL_TIMEOUT)
        jobs = served.jobs() - jobs_before

    for i, reply in replies.items():
        if KINDS[i % 3] == "not_modified":
            assert (i, reply.status, reply.body) == (i, 304, b"")
        else:
            assert (i, reply.status) == (i, 200)
            assert reply.body == content_of(i), i

    spans = our_spans(telemetry)
    found = responses(telemetry)
    by_name = {attrs(r)["file.name"]: r for r in found}
    assert len(found) == FILES
    assert sorted(by_name) == sorted(name_of(i) for i in range(FILES))

    by_id = {r.context.span_id: r for r in found}
    children: dict[int, list[ReadableSpan]] = {span_id: [] for span_id in by_id}
    for span in spans:
        if span.name == "fileresp.response":
            continue
        # No orphan, no phase under anything but a response of ours.
        assert span.parent is not None, span.name
        assert span.parent.span_id in by_id, (span.name, attrs(span))
        owner = by_id[span.parent.span_id]
        assert span.context.trace_id == owner.context.trace_id
        children[span.parent.span_id].append(span)

    reported_jobs = 0
    closes = 0
    for i in range(FILES):
        kind = KINDS[i % 3]
        response = by_name[name_of(i)]
        a = attrs(response)
        # In its own request's trace, under its own request's parent.
        assert response.context.trace_id == TRACE_BASE + i, name_of(i)
        assert response.parent is not None and response.parent.span_id == PARENT_BASE + i
        assert a["file.size"] == size_of(i)
        if kind == "not_modified":
            assert (a["http.response.status_code"], a["fileresp.outcome"]) == (304, "not_modified")
            assert a["fileresp.bytes"] == 0
            assert a["fileresp.opened"] is False
        else:
            assert (a["http.response.status_code"], a["fileresp.outcome"]) == (200, "sent")
            assert a["fileresp.bytes"] == size_of(i)
            assert a["fileresp.opened"] is True
        mine = children[response.context.span_id]
        waits = sorted(
            str(attrs(s)["fileresp.threadpool.job"])
            for s in mine
            if s.name == "fileresp.threadpool.wait"
        )
        assert waits == expected_wait_jobs(framework, kind), (name_of(i), kind, waits)
        phases = Counter(s.name for s in mine if s.name != "fileresp.threadpool.wait")
        assert all(count == 1 for count in phases.values()), (name_of(i), phases)
        assert ("fileresp.send" in phases) == (kind != "not_modified"), (name_of(i), phases)
        assert "fileresp.stat" in phases
        assert a["fileresp.threadpool.jobs"] >= len(waits)
        # Under load too, nothing after the last byte is in the totals.
        duration = ((response.end_time or 0) - (response.start_time or 0)) / 1e9
        assert a["fileresp.threadpool.wait"] <= duration, (name_of(i), a, duration)
        reported_jobs += a["fileresp.threadpool.jobs"]
        # The close of an opened file comes after the response's last byte.
        closes += a["fileresp.opened"] is True

    assert reported_jobs + closes == jobs
    print(f"\n{framework}: {FILES} responses, {len(spans)} spans, {jobs} pool jobs")
    telemetry.shutdown()
