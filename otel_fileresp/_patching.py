# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Patching in place with wrapt, undone exactly.

Each framework module lists its patch points as :class:`Patch` values. A
:class:`PatchSet` applies them with :func:`wrapt.wrap_function_wrapper` on the
class or module that defines them, so objects created before ``instrument()``
(apps, routes, subclasses, bound methods looked up at call time) are covered,
and :meth:`PatchSet.remove` puts the original attributes back.

A patch point missing from an unknown framework release is warned about once
and left unpatched; the rest still works.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import wrapt

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


class PatchSet:
    """Patches applied together and removed together, in reverse order."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._applied: list[tuple[Any, str, Any, Any]] = []

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
            wrapt.wrap_function_wrapper(owner, patch.attribute, patch.wrapper)
            self._applied.append((owner, patch.attribute, original, vars(owner)[patch.attribute]))

    def remove(self) -> None:
        """Restore every original that is still ours to restore.

        When another instrumentation wrapped the same attribute after us, its
        wrapper stays in place (removing it would undo the other's work); ours
        below it is inert once the instrumentor is uninstrumented.
        """
        for owner, attribute, original, installed in reversed(self._applied):
            if vars(owner).get(attribute) is installed:
                setattr(owner, attribute, original)
            else:
                _logger.debug(
                    "otel_fileresp: %s.%s was wrapped again by someone else; left in place",
                    owner,
                    attribute,
                )
        self._applied.clear()

    def __len__(self) -> int:
        return len(self._applied)
