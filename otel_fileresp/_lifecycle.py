# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The app's start and end: where a process starts serving, and the flush at shutdown.

Both frameworks register the patches made here (see :func:`starlette_patches`
and :func:`aiohttp_patches`); :meth:`PatchSet.remove` takes them off with the
others at ``uninstrument()``.

**Serving starts** when the app's startup completes: Starlette's (and
FastAPI's) ``Router.lifespan`` sends ``lifespan.startup.complete``, or
aiohttp's ``Application.startup()`` returns (``AppRunner.setup()``, so
``web.run_app`` and gunicorn's ``GunicornWebWorker``). From then on this
process reports the ``fileresp.opens`` series ``{framework, 304}`` at 0 (a
process whose server runs no lifespan starts at its first file response
instead). The ``fileresp.threadpool.*`` gauges report the pools of the loops
that served a file response (see :mod:`otel_fileresp._pools`). A process that
only imported and instrumented the app, such as a gunicorn master, reports
neither.

**At shutdown**, with ``flush_on_shutdown`` (the default), the global tracer
and meter providers are flushed (``force_flush``; never ``shutdown``, and no
signal handler of ours):

- Starlette/FastAPI: when ``Router.lifespan`` is about to send
  ``lifespan.shutdown.complete`` (or ``.failed``), i.e. after the app's own
  lifespan shutdown code, whatever lifespan the app defines, also none. A
  server runs lifespan shutdown once it has stopped accepting and finished
  its HTTP exchanges (uvicorn, gunicorn's ``UvicornWorker``, hypercorn,
  granian). The server waits for the message, so it does not exit before
  the flush is done.
- aiohttp: after ``Application.cleanup()`` (the ``on_cleanup`` callbacks),
  which ``AppRunner.cleanup()`` calls after the server has shut down its
  connections.

Before flushing, the shutdown waits (at most :data:`SETTLE_TIMEOUT_S`, on
the event loop, so they go on) until every file response this process began
has ended, so the last spans and points are in the flush: a response may
still run after the client has its last byte (Starlette closes the file in a
worker thread after the last body message, then runs the response's
background task), and granian runs the app's shutdown as soon as its HTTP
exchanges are over, while uvicorn waits for the request's task. Responses
still in flight after that are logged once, with their number.

The flush runs in a daemon thread, and the event loop waits for it by
sleeping in steps of a few milliseconds, so other tasks keep running; the
wait is bounded by :data:`FLUSH_TIMEOUT_S` in total (each provider is given
what is left of it as ``timeout_millis``). A flush that fails or does not
finish in time is logged once at WARNING and the shutdown goes on; a thread
still exporting then does not keep the process alive. A provider without
``force_flush`` (the API's proxies and no-op providers) is skipped, so
without an SDK nothing happens.

Not reached: a server run without lifespan (``uvicorn --lifespan off``,
granian's ``asginl`` interface), an ASGI app that is not a Starlette
``Router`` at the top (a bare ``StaticFiles`` as the app), an aiohttp app
served without ``AppRunner`` (a low-level ``web.Server``). docs/servers.md
gives the manual flush for those.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics, trace

from otel_fileresp._log import failed, log_once
from otel_fileresp._patching import Patch
from otel_fileresp._telemetry import responses_in_flight

if TYPE_CHECKING:
    from otel_fileresp._instrumentor import Hooks

#: The longest a shutdown waits for the flush, all providers together (s),
#: the wait for the file responses still in flight included.
FLUSH_TIMEOUT_S: Final = 5.0
#: The longest the flush waits for the file responses still in flight (s).
SETTLE_TIMEOUT_S: Final = 2.0
_POLL_S: Final = 0.005


Sleep = Callable[[float], Awaitable[Any]]
Message = MutableMapping[str, Any]


def _global_flushes() -> list[tuple[str, Callable[..., Any]]]:
    """``force_flush`` of the global tracer and meter providers that have one."""
    flushes = []
    for kind, provider in (
        ("tracer", trace.get_tracer_provider()),
        ("meter", metrics.get_meter_provider()),
    ):
        force_flush = getattr(provider, "force_flush", None)
        if callable(force_flush):
            flushes.append((kind, force_flush))
    return flushes


def _run_flushes(
    flushes: Sequence[tuple[str, Callable[..., Any]]], deadline: float, done: threading.Event
) -> None:
    """In the flush thread: each provider in turn, with the time that is left."""
    try:
        for kind, force_flush in flushes:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                return
            try:
                try:
                    result = force_flush(timeout_millis=remaining_ms)
                except TypeError:  # a provider whose force_flush takes no timeout
                    result = force_flush()
            except Exception:
                failed(f"lifecycle.flush.{kind}", f"the {kind} provider's force_flush failed")
                continue
            if result is False:
                log_once(
                    f"lifecycle.flush.{kind}.incomplete",
                    f"the {kind} provider's force_flush at shutdown did not complete",
                    with_traceback=False,
                )
    finally:
        done.set()


async def _responses_settled(sleep: Sleep, deadline: float) -> None:
    """Wait, sleeping on the loop (so they go on), until every file response
    of this process has ended, or ``deadline``: a response can still be
    running after its last byte reached the client (Starlette closes the file
    in a worker thread, then runs the response's background task), and a
    server may run the app's shutdown by then (granian does)."""
    while responses_in_flight() and time.monotonic() < deadline:
        await sleep(_POLL_S)
    left = responses_in_flight()
    if left:
        log_once(
            "lifecycle.in_flight",
            f"{left} file response(s) still in flight at shutdown after "
            f"{SETTLE_TIMEOUT_S:g} s: the flush goes on without their telemetry",
            with_traceback=False,
        )


async def flush_global_providers(sleep: Sleep, timeout: float = FLUSH_TIMEOUT_S) -> bool:
    """Flush the global providers in a thread; True when it finished within ``timeout``.

    ``sleep`` is the running event loop's (``asyncio.sleep``, ``anyio.sleep``).
    """
    flushes = _global_flushes()
    if not flushes:
        return True
    started = time.monotonic()
    await _responses_settled(sleep, started + min(SETTLE_TIMEOUT_S, timeout))
    deadline = started + timeout
    done = threading.Event()
    threading.Thread(
        target=_run_flushes,
        args=(flushes, deadline, done),
        name="otel_fileresp-flush",
        daemon=True,
    ).start()
    while not done.is_set():
        if time.monotonic() >= deadline:
            log_once(
                "lifecycle.flush.timeout",
                f"the flush at shutdown did not finish within {timeout:g} s; "
                "what was not exported yet may be lost",
                with_traceback=False,
            )
            return False
        await sleep(_POLL_S)
    return True


# --- Starlette / FastAPI -----------------------------------------------------------

_SHUTDOWN_ENDS: Final = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})


def _lifespan_arguments(scope: Any, receive: Any, send: Any) -> tuple[Any, Any, Any]:
    return scope, receive, send


def _starlette_lifespan(hooks: Hooks) -> Callable[..., Awaitable[None]]:
    async def lifespan(
        wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> None:
        telemetry = hooks.telemetry
        if telemetry is None:
            return await wrapped(*args, **kwargs)
        scope, receive, send = _lifespan_arguments(*args, **kwargs)
        flushed = started = False

        async def flush() -> None:
            nonlocal flushed
            if flushed or not telemetry.settings.flush_on_shutdown:
                return
            flushed = True
            try:
                import anyio

                await flush_global_providers(anyio.sleep)
            except Exception:
                failed("lifecycle.flush")

        async def observed_send(message: Message) -> None:
            nonlocal started
            kind = message.get("type") if isinstance(message, MutableMapping) else None
            if kind == "lifespan.startup.complete":
                started = True
                try:
                    telemetry.serving()
                except Exception:
                    failed("lifecycle.serving")
            elif kind in _SHUTDOWN_ENDS:
                await flush()
            await send(message)

        try:
            await wrapped(scope, receive, observed_send)
        except Exception:
            # Starlette 0.15 raises from a failed shutdown without sending
            # lifespan.shutdown.failed: the server is stopping all the same.
            if started:
                await flush()
            raise

    return lifespan


def starlette_patches(hooks: Hooks) -> list[Patch]:
    """``Router.lifespan(self, scope, receive, send)``, sending
    ``lifespan.shutdown.complete``: in every Starlette release from 0.15 to
    1.10 (read in 0.15.0, 0.16.0-0.20.4, 0.27.0, 0.32.0, 0.36.3, 0.38.6,
    0.41.3, 0.45.3, 0.48.0, 1.10.0); FastAPI's ``APIRouter`` inherits it, and
    it runs for an app with no lifespan too."""
    return [Patch("starlette.routing:Router", "lifespan", _starlette_lifespan(hooks))]


# --- aiohttp -----------------------------------------------------------------------


def _aiohttp_startup(hooks: Hooks) -> Callable[..., Awaitable[None]]:
    async def startup(
        wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> None:
        await wrapped(*args, **kwargs)
        telemetry = hooks.telemetry
        if telemetry is not None:
            try:
                telemetry.serving()
            except Exception:
                failed("lifecycle.serving")

    return startup


def _aiohttp_cleanup(hooks: Hooks) -> Callable[..., Awaitable[None]]:
    async def cleanup(
        wrapped: Callable[..., Awaitable[None]], instance: Any, args: Any, kwargs: Any
    ) -> None:
        try:
            await wrapped(*args, **kwargs)
        except Exception:
            await _aiohttp_flush(hooks)
            raise
        await _aiohttp_flush(hooks)

    return cleanup


async def _aiohttp_flush(hooks: Hooks) -> None:
    telemetry = hooks.telemetry
    if telemetry is None or not telemetry.settings.flush_on_shutdown:
        return
    try:
        await flush_global_providers(asyncio.sleep)
    except Exception:
        failed("lifecycle.flush")


def aiohttp_patches(hooks: Hooks) -> list[Patch]:
    """``Application.startup`` and ``.cleanup``, called by ``AppRunner`` (read
    in 3.9.2, 3.9.5, 3.10.11, 3.11.9, 3.11.10, 3.12.15, 3.13.2, 3.14.5): the
    runner calls them for the app it serves (sub-applications get their
    signals from the parent's, not through these methods)."""
    return [
        Patch("aiohttp.web_app:Application", "startup", _aiohttp_startup(hooks)),
        Patch("aiohttp.web_app:Application", "cleanup", _aiohttp_cleanup(hooks)),
    ]
