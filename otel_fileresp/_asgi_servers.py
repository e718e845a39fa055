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

import weakref
from types import FunctionType
from typing import Any, Final

_MAX_STEPS: Final = 32


#: A server's per-request object and the attribute of it that turns true when
#: the client left (read with ``getattr``: no function made per response).
Flag = tuple[object, str]


def _client_gone_flag(owner: object) -> Flag | None:
    """The flag of ``owner`` if it is a known server's per-request object."""
    if isinstance(getattr(owner, "disconnected", None), bool) and hasattr(
        owner, "response_complete"
    ):
        return owner, "disconnected"
    if isinstance(getattr(owner, "closed", None), bool) and hasattr(owner, "app_send"):
        return owner, "closed"
    return None


def client_gone_flag(send: Any) -> Flag | None:
    """The flag that says whether the server behind ``send`` knows the client
    left (its next messages will be dropped): ``getattr(*flag)``; None when
    none is found.

    Each middleware's ``send`` wraps the one it was given: a bound method (a
    responder's ``send`` attribute), a ``__wrapped__``, or a closure over a
    free variable whose name ends in ``send`` (``send``, ``_send``,
    ``original_send``): only those are followed, a chain, not a tree.

    A chain of plain functions (closures, and ``functools.wraps``' wrappers
    followed by their ``__wrapped__``), ending at a server's bound method or
    at a function with no ``send`` of its own, is remembered by its first
    function (a route: each function's name and cell, then the server's class
    and flag, or that very function) and followed again by that route,
    checked at every step and at its end, for the next response; any other
    chain is walked. At most 256 routes are remembered: a chain past
    that is walked each time (slower, never wrong)."""
    route = _ROUTES.get(_name_of(send))
    if route is not None:
        found = _follow(send, route)
        if found is not _MISSED:
            return found  # type: ignore[return-value]
    return _walk(send)


#: A chain of plain closures: ((name, cell index), ...) (-2: its
#: ``__wrapped__``; -1 last: the chain ends at a function with no ``send``),
#: then what is at its end: the server's per-request class and its flag, or,
#: for a chain with no server, that very function (weakly: only the same
#: object, not another one of the same name and cells, ends the route).
#: A closure is known by its function's module, qualified name and number of
#: cells (not its ``__code__``: reading that is an audit event, which every
#: audit hook of the process is called for).
Route = tuple[tuple[tuple[Any, int], ...], "type | weakref.ref[Any]", "str | None"]
_ROUTES: dict[Any, Route] = {}
_MISSED: Final = object()
_WRAPPED: Final = -2  # a route's step to the function's __wrapped__


def _name_of(fn: Any) -> Any:
    """A plain function's (module, qualified name, number of cells), or None."""
    if type(fn) is not FunctionType:
        return None
    closure = fn.__closure__
    return fn.__module__, fn.__qualname__, 0 if closure is None else len(closure)


def _follow(send: Any, route: Route) -> object:
    """``send``'s flag by ``route``; ``_MISSED`` if ``send`` does not follow it."""
    fn = send
    for (module, qualname, cells), index in route[0]:
        # _name_of(fn) == (module, qualname, cells), without a call and a tuple
        if type(fn) is not FunctionType or fn.__qualname__ != qualname:
            return _MISSED
        closure = fn.__closure__
        if (0 if closure is None else len(closure)) != cells or fn.__module__ != module:
            return _MISSED
        wrapped = getattr(fn, "__wrapped__", None)
        if index == _WRAPPED:
            if not callable(wrapped):
                return _MISSED
            fn = wrapped
            continue
        if wrapped is not None:
            return _MISSED
        if index < 0:  # a chain with no server: at that very function
            end = route[1]
            return None if isinstance(end, weakref.ref) and end() is fn else _MISSED
        try:
            fn = closure[index].cell_contents  # type: ignore[index]
        except (ValueError, IndexError, TypeError):  # an empty cell
            return _MISSED
    owner = getattr(fn, "__self__", None)
    flag = route[2]
    if (
        flag is None
        or type(owner) is not route[1]
        or not isinstance(getattr(owner, flag, None), bool)
    ):
        return _MISSED
    return owner, flag


def _remember(steps: list[tuple[Any, int]], end: type | weakref.ref[Any], flag: str | None) -> None:
    if steps and len(_ROUTES) < 256:
        _ROUTES[steps[0][0]] = (tuple(steps), end, flag)


def _walk(send: Any) -> Flag | None:
    fn = send
    steps: list[tuple[Any, int]] = []
    closures_only = True
    for _ in range(_MAX_STEPS):
        owner = getattr(fn, "__self__", None)
        if owner is not None:
            found = _client_gone_flag(owner)
            if found is not None:
                if closures_only:
                    _remember(steps, type(owner), found[1])
                return found
            closures_only = False
            inner = getattr(owner, "send", None)  # a responder (GZip's, say)
            if callable(inner) and inner is not fn:
                fn = inner
                continue
            fn = getattr(fn, "__func__", fn)
        wrapped = getattr(fn, "__wrapped__", None)
        if callable(wrapped):
            if type(fn) is FunctionType:  # functools.wraps' closure (contrib's)
                steps.append((_name_of(fn), _WRAPPED))
            else:
                closures_only = False
            fn = wrapped
            continue
        # The send a closure captured, by its free variable's name.
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        closures_only = closures_only and type(fn) is FunctionType
        index = _SEND_CELL.get(code)
        if index is None:
            index = _send_cell(code)
        steps.append((_name_of(fn), index))
        if index < 0:
            if closures_only:  # fn is a plain function: it takes a weak reference
                _remember(steps, weakref.ref(fn), None)
            return None
        try:
            fn = fn.__closure__[index].cell_contents
        except (ValueError, IndexError, TypeError):  # an empty cell
            return None
        if not callable(fn):
            return None
    return None


_SEND_CELL: dict[Any, int] = {}


def _send_cell(code: Any) -> int:
    """The index of a closure's free variable named ``*send`` (-1: none)."""
    names = code.co_freevars
    index = next((i for i, name in enumerate(names) if name.endswith("send")), -1)
    if len(_SEND_CELL) < 1024:
        _SEND_CELL[code] = index
    return index
