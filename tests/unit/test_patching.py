"""Patching in place: plain layers and wrapt layers, applied and undone exactly
(otel_fileresp._patching), on classes and modules made here."""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

import wrapt

from otel_fileresp._patching import _PLAIN_MARK, Patch, PatchSet, _our_layer

calls: list[tuple[str, Any]] = []


def hook(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    calls.append(("hook", instance))
    return wrapped(*args, **kwargs)


class Base:
    def answer(self, value: int, *, plus: int = 0) -> int:
        """The answer."""
        return value + plus

    @staticmethod
    def static(value: int) -> int:
        return value


class Child(Base):
    def answer(self, value: int, *, plus: int = 0) -> int:
        return super().answer(value, plus=plus) * 10


def module_function(value: int) -> int:
    return value * 2


MODULE = types.ModuleType("otel_fileresp_test_patching_module")
MODULE.module_function = module_function  # type: ignore[attr-defined]
sys.modules[MODULE.__name__] = MODULE
OWNER = f"{__name__}:Base"


def apply(*patches: Patch) -> PatchSet:
    calls.clear()
    patch_set = PatchSet("test")
    patch_set.apply(patches)
    return patch_set


def test_a_plain_method_layer_calls_the_hook_for_the_class_and_its_subclasses() -> None:
    original = vars(Base)["answer"]
    patch_set = apply(Patch(OWNER, "answer", hook, plain=True))
    layer = vars(Base)["answer"]
    try:
        assert not isinstance(layer, wrapt.FunctionWrapper)
        assert getattr(layer, _PLAIN_MARK) is hook
        base, child = Base(), Child()
        assert base.answer(1, plus=2) == 3
        assert child.answer(1, plus=2) == 30  # through super()
        assert Base.answer(base, 4) == 4  # called on the class
        assert calls == [("hook", base), ("hook", child), ("hook", base)]
        # What introspection sees is the original's.
        assert layer.__name__ == "answer" and layer.__doc__ == "The answer."
        assert inspect.signature(layer) == inspect.signature(original)
        assert _our_layer(layer, hook) is layer
    finally:
        patch_set.remove()
    assert vars(Base)["answer"] is original


def test_a_plain_module_function_layer() -> None:
    original = MODULE.module_function
    patch_set = apply(Patch(MODULE.__name__, "module_function", hook, plain=True))
    try:
        assert MODULE.module_function(21) == 42
        assert calls == [("hook", None)]
    finally:
        patch_set.remove()
    assert MODULE.module_function is original


def test_a_wrapt_module_function_is_called_without_an_attribute_error() -> None:
    """wrapt asks the function it wraps for ``__self__`` at every call: the
    function gets ``__self__ = None`` while patched (wrapt then passes
    ``instance=None`` without raising and clearing an AttributeError), and
    loses it when unpatched."""
    original = MODULE.module_function
    patch_set = apply(Patch(MODULE.__name__, "module_function", hook, watched=True))
    try:
        assert isinstance(MODULE.module_function, wrapt.FunctionWrapper)
        assert vars(original)["__self__"] is None
        assert MODULE.module_function(21) == 42
        assert calls == [("hook", None)]
    finally:
        patch_set.remove()
    assert MODULE.module_function is original
    assert "__self__" not in vars(original)


def test_where_plain_will_not_do_wrapt_is_used() -> None:
    """A static method (a descriptor wrapt binds), and a watched point (other
    instrumentations' unwrap() takes off only a wrapt proxy)."""
    patch_set = apply(
        Patch(OWNER, "static", hook, plain=True),
        Patch(f"{__name__}:Child", "answer", hook, plain=True, watched=True),
    )
    try:
        assert isinstance(vars(Base)["static"], wrapt.FunctionWrapper)
        assert isinstance(vars(Child)["answer"], wrapt.FunctionWrapper)
        assert Base.static(5) == 5 and Child().answer(1) == 10
        assert [name for name, _ in calls] == ["hook", "hook"]
    finally:
        patch_set.remove()
    assert not isinstance(vars(Base)["static"], wrapt.FunctionWrapper)


def test_a_plain_layer_under_another_librarys_wrapper_is_taken_back_not_stacked() -> None:
    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append(("theirs", instance))
        return wrapped(*args, **kwargs)

    original = vars(Base)["answer"]
    first = apply(Patch(OWNER, "answer", hook, plain=True))
    wrapt.wrap_function_wrapper(Base, "answer", theirs)  # another library, on top of ours
    first.remove()  # ours is below theirs: left in place, inert for this set
    second = apply(Patch(OWNER, "answer", hook, plain=True))
    try:
        Base().answer(1)
        assert [name for name, _ in calls] == ["theirs", "hook"]  # one layer of ours
    finally:
        second.remove()
    # Theirs stays on top (not ours to remove), with our layer below it.
    on_top = vars(Base)["answer"]
    assert isinstance(on_top, wrapt.FunctionWrapper) and _our_layer(on_top, hook) is not None
    Base.answer = original  # type: ignore[method-assign]  # the other library's own undo
