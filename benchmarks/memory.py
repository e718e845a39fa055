"""Memory and descriptors over many responses, in-process.

Starlette: the ASGI app driven directly (see ``drivers``); aiohttp: a real
server on loopback with one keep-alive client, both on this process's loop.
Instrumented and recording (SDK pipeline: BatchSpanProcessor into a null
exporter, metrics on), sampled parent; requests alternate 200, 304, HEAD and
Range. RSS (``/proc/self/statm``) and open descriptors (``/proc/self/fd``)
are read after a warm-up (the first tenth, at most 5 000 responses), at
every tenth, and at the end after a garbage collection. Bounded by count and
by time (the run stops at the deadline and says how far it got).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    TRACEPARENT_SAMPLED,
    TRACEPARENT_UNSAMPLED,
    open_fd_count,
    rss_bytes,
    sdk_pipeline,
    table,
    verdict,
)
from drivers import FRAMEWORKS, etag_of, instrumentor_for, make_driver, requests_for

TARGET_RSS_MB = 5.0
MB = 1024 * 1024


@dataclass
class MemoryResult:
    framework: str
    instrumented: bool
    planned: int
    served: int = 0
    seconds: float = 0.0
    samples: list[tuple[int, float, int]] = field(default_factory=list)  # served, RSS MB, fds

    @property
    def rss_growth_mb(self) -> float:
        return self.samples[-1][1] - self.samples[0][1]

    @property
    def fd_growth(self) -> int:
        return self.samples[-1][2] - self.samples[0][2]


async def _run(
    framework: str, root: Path, responses: int, instrumented: bool, deadline_seconds: float
) -> MemoryResult:
    driver = make_driver(framework, root)
    pipeline = sdk_pipeline()
    instrumentor = instrumentor_for(framework)
    await driver.start()
    result = MemoryResult(framework, instrumented, responses)
    try:
        etag = await etag_of(driver, TRACEPARENT_UNSAMPLED)
        requests = list(requests_for(etag, TRACEPARENT_SAMPLED).values())
        if instrumented:
            instrumentor.instrument(
                tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
            )
        try:
            warm_up = min(5000, max(1, responses // 10))
            step = max(1, responses // 10)
            started = time.monotonic()
            deadline = started + deadline_seconds
            served = 0
            chunk = 50
            next_sample = warm_up
            while served < responses and time.monotonic() < deadline:
                for request in requests:
                    await driver.batch(request, chunk // len(requests) or 1)
                served += (chunk // len(requests) or 1) * len(requests)
                if served >= next_sample:
                    await asyncio.sleep(0.01)  # aiohttp's deferred close jobs
                    pipeline.flush()
                    gc.collect()
                    result.samples.append((served, rss_bytes() / MB, open_fd_count()))
                    next_sample += step
            result.served = served
            result.seconds = time.monotonic() - started
            await asyncio.sleep(0.05)
            pipeline.flush()
            gc.collect()
            result.samples.append((served, rss_bytes() / MB, open_fd_count()))
        finally:
            if instrumented:
                instrumentor.uninstrument()
    finally:
        await driver.stop()
        pipeline.shutdown()
    return result


def run(
    root: Path,
    responses: int,
    baseline: bool,
    deadline_seconds: float,
    log: Callable[[str], None],
) -> list[MemoryResult]:
    results = []
    for framework in FRAMEWORKS:
        for instrumented in (True, False) if baseline else (True,):
            result = asyncio.run(_run(framework, root, responses, instrumented, deadline_seconds))
            log(
                f"  {framework} {'instrumented' if instrumented else 'not instrumented'}: "
                f"{result.served} responses in {result.seconds:.0f} s, "
                f"RSS {result.rss_growth_mb:+.2f} MB, descriptors {result.fd_growth:+d}"
            )
            results.append(result)
    return results


def report(results: list[MemoryResult]) -> tuple[str, list[tuple[str, str, bool]]]:
    checks = []
    rows = []
    for result in results:
        target = ""
        if result.instrumented:
            complete = result.served >= result.planned
            met = complete and result.rss_growth_mb < TARGET_RSS_MB and result.fd_growth <= 0
            target = f"< {TARGET_RSS_MB} MB, fds not growing: {verdict(met)}"
            if not complete:
                target += " (deadline reached first)"
            checks.append(
                (
                    f"memory over {result.served} responses {result.framework}",
                    f"{result.rss_growth_mb:+.2f} MB, {result.fd_growth:+d} fds",
                    met,
                )
            )
        rows.append(
            [
                result.framework,
                "recording" if result.instrumented else "off",
                result.served,
                f"{result.seconds:.0f}",
                f"{result.samples[0][1]:.1f}",
                f"{result.samples[-1][1]:.1f}",
                f"{result.rss_growth_mb:+.2f}",
                f"{result.samples[0][2]} -> {result.samples[-1][2]}",
                target,
            ]
        )
    text = table(
        [
            "framework",
            "mode",
            "responses",
            "seconds",
            "RSS after warm-up MB",
            "RSS at end MB",
            "growth MB",
            "open fds",
            "target",
        ],
        rows,
    )
    samples = []
    for result in results:
        samples.append(
            f"{result.framework} {'recording' if result.instrumented else 'off'}: "
            + ", ".join(f"{s} {rss:.1f} MB/{fds} fds" for s, rss, fds in result.samples)
        )
    return text + "\n\nSamples (responses served: RSS, fds):\n\n" + "\n".join(
        f"- {line}" for line in samples
    ), checks
