"""What each observation costs: this package's own work per unsampled
response with one observation switched off, against all of them on.

"Our own work" is the ``instructions`` section's figure: m3 - m2 - the SDK
calls we make (``ours_unsampled`` - ``bare_unsampled`` - the replay of the
``Histogram.record`` calls this package made for one unsampled response,
less a replay of nothing). Here it is counted in one process per
framework and **ablation**: the same child as that section (contrib's
middleware, unsampled parent, default settings, a 100 kB file's 200 and
304), where, before ``instrument()``, one observation of the package is
replaced by a pass-through:

- ``jobs`` (both): the pool hook's logic for a job of a file response being
  served (Starlette's ``run_sync``; aiohttp's ``submit`` inside a
  response): the job is submitted as it is, so no wait is measured. The
  patch point itself stays (wrapt's call of the hook, and the hook's
  context read);
- ``send`` (Starlette): the observer of the ASGI messages (status, bytes,
  the end stamped when the last byte is handed over, a client gone);
  (aiohttp): the wrapper of its send method (the end of the body);
- ``client_gone`` (Starlette): the server's client-gone flag, found per
  response through the chain of ``send`` wrappers;
- ``head`` (aiohttp): the observer of ``_write_headers`` (the head's
  time, status and length);
- ``audit`` (both): the ``open`` audit hook (no hook is added).

A response with an observation off is not the same response to the package
(without its send observer, Starlette's has no status and ends as an error;
its metric attributes differ): each mode subtracts the replay of its own
metric calls, so the figure compared is always this package's own work. The
saving of an ablation is what that observation costs, give or take what
the response's other path costs instead; the ablations do not add up to the
total (the record, its start and end, emission and the patch points remain
in each). A static route's lookup job is not switched off: the record it
makes in the handler is what gives the response its parent (a record made
in the worker that builds the ``FileResponse`` would be a root, sampled).
Counts are callgrind's instruction counts, two passes per process as in
the ``instructions`` section, each process run three times (rounds): two
processes of the same code differ by a few thousand instructions per
response (their memory layouts differ), which the report shows. With
``audit`` off, aiohttp's lean record no longer knows that the file was
opened (its open is seen only by the hook), so that saving includes the
opens counter's update it then skips.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: framework -> ablation -> what it switches off (the report's words).
ABLATIONS: dict[str, dict[str, str]] = {
    "starlette": {
        "jobs": "the pool jobs' logic (run_sync's hook calls through)",
        "send": "the send observer (status, bytes, end stamp, client gone)",
        "client_gone": "the client-gone flag found through the send chain",
        "audit": "the open audit hook",
    },
    "aiohttp": {
        "jobs": "the pool jobs' logic inside a response (submit's hook calls through)",
        "head": "the head observer (_write_headers)",
        "send": "the send method's wrapper (the body's end)",
        "audit": "the open audit hook",
    },
}


def apply(framework: str, ablation: str) -> None:
    """Switch ``ablation`` off in this process (before ``instrument()``)."""
    if ablation == "audit":
        from otel_fileresp import _instrumentor

        _instrumentor.watch_opens = lambda: None  # type: ignore[assignment]
    elif framework == "starlette":
        from otel_fileresp import starlette

        if ablation == "jobs":
            starlette._submit = lambda record, args: None  # type: ignore[assignment]
        elif ablation == "send":
            starlette._observed_send = lambda record, send: send  # type: ignore[assignment]
        elif ablation == "client_gone":
            starlette.client_gone_flag = lambda send: None  # type: ignore[assignment]
        else:
            raise ValueError(ablation)
    else:
        from otel_fileresp import aiohttp
        from otel_fileresp._record import current_scope

        hooks = aiohttp._AiohttpHooks
        submit = hooks.submit
        if ablation == "jobs":

            def passing(self: Any, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                if current_scope() is not None:
                    return wrapped(*args, **kwargs)
                return submit(self, wrapped, instance, args, kwargs)

            hooks.submit = passing  # type: ignore[method-assign]
        elif ablation == "head":
            observe = aiohttp._observe

            def no_head(owner: Any, name: str, *rest: Any) -> Any:
                return None if name == "_write_headers" else observe(owner, name, *rest)

            aiohttp._observe = no_head
        elif ablation == "send":
            aiohttp._sent = lambda record, response, sending: sending  # type: ignore[assignment]
        else:
            raise ValueError(ablation)


Counts = dict[tuple[str, str, str, str, str], list[float]]


def run(
    root: Path,
    responses: int,
    log: Callable[[str], None],
    rounds: int = 3,
    parallel: int = 2,
) -> Counts:
    """Count, under valgrind, the bare process, the package with every
    observation on (``none``) and one process per ablation, per framework,
    each ``rounds`` times (two processes of the same code differ by a few
    thousand instructions per response: their memory layouts differ):
    (framework, ablation, kind, mode, round) -> the counts of the kept passes."""
    import instructions

    with tempfile.TemporaryDirectory(prefix="fileresp-ablation-") as tmp:
        work = Path(tmp)
        library = instructions.counter_library(work)
        children: list[Any] = []
        processes = [
            (str(number), framework, ablation)
            for number in range(rounds)
            for framework in instructions.FRAMEWORKS
            for ablation in ("bare", "none", *ABLATIONS[framework])
        ]
        for number, framework, ablation in processes:
            out = work / f"ablation-{framework}-{ablation}-{number}"
            out.mkdir()
            role = "bare" if ablation == "bare" else "ablated"
            extra = ["--responses", str(responses)]
            if role == "ablated":
                extra += ["--ablate", ablation]
            command = instructions.child_command(
                out, framework, "sdk", role, root, str(library), extra, counted=True
            )
            children.append(((framework, ablation, number), command, out, out / "result.json"))
        started = time.monotonic()
        log(f"ablation: {len(children)} processes, {responses} responses per mode and pass")
        instructions._run_all(children, parallel, 1800, log)
        log(f"  counted in {time.monotonic() - started:.0f} s")
        counts: Counts = {}
        for (framework, ablation, number), _, out, _ in children:
            for (_, _, kind, mode, _), value in instructions._parse(out, responses).items():
                counts.setdefault((framework, ablation, kind, mode, number), []).append(value)
        return counts


def _mean(counts: Counts, framework: str, ablation: str, kind: str, mode: str) -> float:
    """The mean over every round and kept pass."""
    values = [
        value
        for (f, a, k, m, _), found in counts.items()
        if (f, a, k, m) == (framework, ablation, kind, mode)
        for value in found
    ]
    if not values:
        raise KeyError(f"no count for {(framework, ablation, kind, mode)}")
    return statistics.fmean(values)


def own_work(counts: Counts, framework: str, ablation: str, kind: str) -> float:
    """m3 - m2 - the SDK calls made, with ``ablation`` off (``none``: all on),
    over every round."""
    m2 = _mean(counts, framework, "bare", kind, "bare_unsampled")
    m3 = _mean(counts, framework, ablation, kind, "ours_unsampled")
    sdk = _mean(counts, framework, ablation, kind, "replay_metrics") - _mean(
        counts, framework, ablation, kind, "replay_none"
    )
    return m3 - m2 - sdk


def spread(counts: Counts, framework: str, kind: str, mode: str) -> float:
    """The largest difference between two rounds' processes of the same
    code and mode (the mean of each process's passes), in instructions."""
    means = [
        statistics.fmean(found)
        for (f, a, k, m, _), found in counts.items()
        if (f, k, m) == (framework, kind, mode) and a in ("bare", "none")
    ]
    return max(means) - min(means) if means else 0.0


def report(counts: Counts) -> str:
    lines = [
        "| framework | switched off | own work, 200 | saved, 200 | own work, 304 | saved, 304 |",
        "|---|---|---|---|---|---|",
    ]
    for framework, ablations in ABLATIONS.items():
        full = {kind: own_work(counts, framework, "none", kind) for kind in ("200", "304")}
        lines.append(
            f"| {framework} | nothing (every observation on) | {full['200'] / 1e3:.0f} k | | "
            f"{full['304'] / 1e3:.0f} k | |"
        )
        for ablation, what in ablations.items():
            cells = []
            for kind in ("200", "304"):
                own = own_work(counts, framework, ablation, kind)
                cells += [f"{own / 1e3:.0f} k", f"{(full[kind] - own) / 1e3:.0f} k"]
            lines.append(f"| {framework} | `{ablation}`: {what} | " + " | ".join(cells) + " |")
    spreads = ", ".join(
        f"{framework} {kind}: m2 {spread(counts, framework, kind, 'bare_unsampled') / 1e3:.0f} k,"
        f" m3 {spread(counts, framework, kind, 'ours_unsampled') / 1e3:.0f} k"
        for framework in ABLATIONS
        for kind in ("200", "304")
    )
    lines.append(
        "\nThe same code and mode in two processes (rounds), largest difference: "
        + spreads
        + ". A saving smaller than that is not told from noise."
    )
    return "\n".join(lines)
