# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Patching in place, undone exactly.

Each framework module lists its patch points as :class:`Patch` values. A
:class:`PatchSet` applies them on the class or module that defines them, so
objects created before ``instrument()`` (apps, routes, subclasses, bound
methods looked up at call time) are covered, and :meth:`PatchSet.remove`
puts the original attributes back. A point is wrapped with
:func:`wrapt.wrap_function_wrapper`, or, when the point says ``plain`` and
the attribute is a plain function or method, by a plain function that calls
the same hook (one Python call instead of wrapt's machinery, for the
synchronous points a file response passes through several times; the
coroutine functions keep wrapt, which keeps them coroutine functions to
:mod:`inspect`).

A module's plain function wrapped by wrapt (``anyio.to_thread.run_sync``) is
given ``__self__ = None`` while it is patched: wrapt asks the function it
wraps for ``__self__`` at every call, and a plain function's AttributeError,
raised and cleared once per pool job, cost more than the rest of the call.

A patch point missing from an unknown framework release is warned about once
and left unpatched; the rest still works.

Never two layers of ours: a layer of ours already in an attribute's chain of
wrappers (left under another library's wrapper by an earlier
``uninstrument()``) is taken back instead of wrapped again. And a layer of
ours that someone else's unwrap removed (contrib's ``unwrap`` takes off
whatever is on top) is noticed by :meth:`PatchSet.verify`, which the hooks
call when a response starts, for the points other instrumentations wrap too
(``Patch.watched``: the worker pool's submit and ``run_sync``): it logs once
and wraps the attribute again.
"""

from __future__ import annotations

import functools
import importlib
import logging
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import wrapt

from otel_fileresp._log import failed, log_once

_logger = logging.getLogger(__name__)

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Patch:
    """Wrap ``owner.attribute``, where ``owner`` is ``"module"`` or ``"module:Class"``."""

    owner: str
    attribute: str
    wrapper: Wrapper
    # False for patch points that exist only in some releases (the module
    # knows which); a missing required one is warned about.
    required: bool = True
    # True for a point other instrumentations wrap too (the worker pool's
    # submit): checked when each response starts (see PatchSet.verify).
    watched: bool = False
    # True to patch with a plain function (see _plain_layer) where the
    # attribute is a plain function or method: no wrapt call per call. Not
    # for a watched point: other instrumentations' unwrap() takes off only a
    # wrapt proxy, so on a point they share, ours must be one too.
    plain: bool = False


def resolve_owner(owner: str) -> Any:
    """The module or class named ``"module"`` or ``"module:Class"``, or None."""
    module_name, _, class_name = owner.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError:
        return None
    for part in filter(None, class_name.split(".")):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


def _chain(value: Any, depth: int = 16) -> Any:
    """``value`` and the callables it wraps (wrapt proxies, ``__wrapped__``)."""
    for _ in range(depth):
        if value is None:
            return
        yield value
        try:
            value = getattr(value, "__wrapped__", None)
        except Exception:  # a proxy whose target is gone, say
            return


def _code_of(fn: Any) -> Any:
    """The code a wrapper function runs (a bound method's, a closure's: the
    same for every instance or closure made from it)."""
    return getattr(getattr(fn, "__func__", fn), "__code__", None)


#: The attribute of a plain layer of ours that holds its wrapper.
_PLAIN_MARK = "_otel_fileresp_wrapper"


def _our_layer(value: Any, wrapper: Wrapper) -> Any:
    """The layer in ``value``'s chain that runs ``wrapper``'s code: a wrapt
    wrapper of ours, or a plain layer of ours."""
    code = _code_of(wrapper)
    if code is None:
        return None
    for layer in _chain(value):
        try:
            runs = getattr(layer, "_self_wrapper", None) or getattr(layer, _PLAIN_MARK, None)
            ours = _code_of(runs) is code
        except Exception:  # a proxy whose target is gone, say
            continue
        if ours:
            return layer
    return None


def _plain_layer(owner: Any, original: Any, wrapper: Wrapper) -> Any:
    """``original`` wrapped by a plain function that calls ``wrapper`` as wrapt
    would (``wrapped``, ``instance``, ``args``, ``kwargs``), or None where only
    wrapt will do. A plain function costs one Python call where wrapt's
    wrapper costs several thousand instructions more; it is used for a plain
    function of a module, or a plain method of a class (which every subclass
    inherits, and ``super()`` finds). ``functools.update_wrapper`` keeps the
    name, the documentation and, through ``__wrapped__``, the signature."""
    if isinstance(owner, type):
        if not isinstance(original, types.FunctionType):
            return None  # a static or class method, a descriptor: wrapt binds those

        bind = types.MethodType  # one C call (``__get__`` would make a method-wrapper first)

        def patched_method(self: Any, *args: Any, **kwargs: Any) -> Any:
            return wrapper(bind(original, self), self, args, kwargs)

        layer: Any = patched_method
    elif callable(original) and not isinstance(original, type):

        def patched_function(*args: Any, **kwargs: Any) -> Any:
            return wrapper(original, None, args, kwargs)

        layer = patched_function
    else:
        return None
    functools.update_wrapper(layer, original)
    setattr(layer, _PLAIN_MARK, wrapper)
    return layer


def _install(owner: Any, patch: Patch) -> Any:
    """Wrap ``owner``'s attribute by ``patch`` (plainly where it can); the layer."""
    if patch.plain and not patch.watched:
        layer = _plain_layer(owner, vars(owner)[patch.attribute], patch.wrapper)
        if layer is not None:
            setattr(owner, patch.attribute, layer)
            return layer
    wrapt.wrap_function_wrapper(owner, patch.attribute, patch.wrapper)
    return vars(owner)[patch.attribute]


def _mark_unbound(owner: Any, original: Any) -> bool:
    """Give a module's plain function, wrapped by wrapt, ``__self__ = None``
    (True if this did it). wrapt's proxy asks the function it wraps for
    ``__self__`` at every call (a bound method's instance is passed on as
    ``instance``); a plain function has none, so each call raised and cleared
    an ``AttributeError`` (a formatted message: some 3 000 instructions, on
    ``anyio.to_thread.run_sync`` once per pool job). With the attribute set to
    None, wrapt passes ``instance=None`` as before, without the exception;
    :meth:`PatchSet.remove` takes it off again."""
    if isinstance(owner, type) or not isinstance(original, types.FunctionType):
        return False
    if "__self__" in vars(original):
        return False
    try:
        original.__self__ = None  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - a function that takes no attribute
        return False
    return True


def _unmark_unbound(function: Any) -> None:
    """Take off the ``__self__ = None`` :func:`_mark_unbound` gave ``function``."""
    if vars(function).get("__self__", _UNSET) is None:
        del function.__self__


_UNSET = object()


class _Applied:
    """One applied patch: what was there, what we put, and what is on top now."""

    __slots__ = ("attribute", "installed", "original", "owner", "patch", "top")

    def __init__(self, owner: Any, patch: Patch, original: Any, installed: Any, top: Any) -> None:
        self.owner = owner
        self.patch = patch
        self.attribute = patch.attribute
        self.original = original
        #: Our layer on top, which remove() takes off; None for a layer of
        #: ours taken back from under someone else's wrapper (left in place).
        self.installed = installed
        #: What verify() expects on top of the attribute.
        self.top = top


class PatchSet:
    """Patches applied together and removed together, in reverse order."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._applied: list[_Applied] = []
        # Functions given ``__self__ = None`` (see _mark_unbound), taken off by remove().
        self._unbound: list[Any] = []
        # (the owner's __dict__, attribute, _Applied) for verify(): a live view.
        self._checks: tuple[tuple[Any, str, _Applied], ...] = ()

    def apply(self, patches: Sequence[Patch]) -> None:
        for patch in patches:
            owner = resolve_owner(patch.owner)
            original = None if owner is None else vars(owner).get(patch.attribute)
            if original is None:
                if patch.required:
                    _logger.warning(
                        "otel_fileresp: %s has no %s.%s; that part is not instrumented",
                        self._description,
                        patch.owner,
                        patch.attribute,
                    )
                continue
            layer = _our_layer(original, patch.wrapper)
            if layer is original:
                # Ours, on top (left by another library that restored what it
                # found): take it back, as if just installed.
                below = layer.__wrapped__
                self._applied.append(_Applied(owner, patch, below, layer, layer))
                continue
            if layer is not None:
                # Ours already, under someone else's wrapper: take it back.
                self._applied.append(_Applied(owner, patch, None, None, original))
                continue
            installed = _install(owner, patch)
            if isinstance(installed, wrapt.FunctionWrapper) and _mark_unbound(owner, original):
                self._unbound.append(original)
            self._applied.append(_Applied(owner, patch, original, installed, installed))
        self._checks = tuple(
            (vars(a.owner), a.attribute, a) for a in self._applied if a.patch.watched
        )

    def verify(self) -> None:
        """Check that each watched layer of ours is still in place (a dictionary
        lookup per point); re-apply, once logged, one that someone removed."""
        for namespace, attribute, applied in self._checks:
            if namespace.get(attribute) is not applied.top:
                try:
                    self._repair(applied)
                except Exception:
                    failed("patching.patch.repair")

    def _repair(self, applied: _Applied) -> None:
        owner, attribute, patch = applied.owner, applied.attribute, applied.patch
        current = vars(owner).get(attribute)
        if current is None:
            return  # the attribute itself is gone: nothing to wrap
        if _our_layer(current, patch.wrapper) is not None:
            applied.top = current  # someone wrapped above us: fine
            return
        log_once(
            f"patch.removed.{patch.owner}.{attribute}",
            f"{patch.owner}.{attribute} lost its otel_fileresp wrapper (another "
            "instrumentation's uninstrument() unwrapped what was on top); wrapped again",
            with_traceback=False,
        )
        installed = _install(owner, patch)
        applied.original = current  # remove() puts back what we wrapped now
        applied.installed = installed
        applied.top = installed

    def remove(self) -> None:
        """Restore every original that is still ours to restore.

        When another instrumentation wrapped the same attribute after us, its
        wrapper stays in place (removing it would undo the other's work); ours
        below it is inert once the instrumentor is uninstrumented, and taken
        back by the next ``instrument()``.
        """
        for applied in reversed(self._applied):
            owner, attribute = applied.owner, applied.attribute
            if applied.installed is not None and vars(owner).get(attribute) is applied.installed:
                setattr(owner, attribute, applied.original)
            else:
                _logger.debug(
                    "otel_fileresp: %s.%s was wrapped again by someone else; left in place",
                    owner,
                    attribute,
                )
        self._applied.clear()
        self._checks = ()
        for function in self._unbound:
            try:
                _unmark_unbound(function)
            except Exception:
                failed("patching.unmark")
        self._unbound.clear()

    def __len__(self) -> int:
        return len(self._applied)
