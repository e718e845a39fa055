# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Whether an ASGI server dropped what the app sent: the client had left.

uvicorn (httptools and h11) and hypercorn drop the body messages an app sends
after the client went away, without telling the app: ``send`` returns as if
the message had been delivered. A file response whose messages were dropped
was not sent, whatever the app did. The server's own state says it:

========================= ======================================================
server                    the object behind its ``send``, and its flag
========================= ======================================================
uvicorn (httptools, h11)  ``RequestResponseCycle``: ``disconnected``
hypercorn (asyncio, trio) ``HTTPStream``: ``closed``
========================= ======================================================

The server's ``send`` is found once per file response, by following the
``send`` the file response was given through the middlewares that wrapped it
(bound methods, closures, ``__wrapped__``, a responder's ``send`` attribute),
a bounded walk with no call. A server not listed (granian, daphne), or a
middleware that hides the server's ``send`` from that walk, gives nothing to
read: then only an exception from ``send`` or ``http.disconnect`` (Starlette
1.8+) tells that the client left (docs/telemetry.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

_MAX_STEPS: Final = 32


def _client_gone_flag(owner: object) -> Callable[[], bool] | None:
    """The check of ``owner`` if it is a known server's per-request object."""
    if isinstance(getattr(owner, "disconnected", None), bool) and hasattr(
        owner, "response_complete"
    ):
        return lambda: bool(owner.disconnected)  # type: ignore[attr-defined]
    if isinstance(getattr(owner, "closed", None), bool) and hasattr(owner, "app_send"):
        return lambda: bool(owner.closed)  # type: ignore[attr-defined]
    return None


def client_gone_check(send: Any) -> Callable[[], bool] | None:
    """A call that says whether the server behind ``send`` knows the client
    left (its next messages will be dropped), or None when none is found.

    Each middleware's ``send`` wraps the one it was given: a bound method (a
    responder's ``send`` attribute), a ``__wrapped__``, or a closure over a
    free variable whose name ends in ``send`` (``send``, ``_send``,
    ``original_send``): only those are followed, a chain, not a tree."""
    fn = send
    for _ in range(_MAX_STEPS):
        owner = getattr(fn, "__self__", None)
        if owner is not None:
            check = _client_gone_flag(owner)
            if check is not None:
                return check
            inner = getattr(owner, "send", None)  # a responder (GZip's, say)
            if callable(inner) and inner is not fn:
                fn = inner
                continue
            fn = getattr(fn, "__func__", fn)
        wrapped = getattr(fn, "__wrapped__", None)
        if callable(wrapped):
            fn = wrapped
            continue
        fn = _captured_send(fn)
        if fn is None:
            return None
    return None


def _captured_send(fn: Any) -> Any:
    """The ``send`` a closure captured, by its free variable's name."""
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None)
    if code is None or not cells:
        return None
    for name, cell in zip(code.co_freevars, cells, strict=False):
        if name.endswith("send"):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if callable(value):
                return value
    return None
