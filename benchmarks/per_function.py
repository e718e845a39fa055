"""Where this package's unsampled cost goes, per function, in instructions.

callgrind sees C functions only; on CPython 3.11 every Python function runs
inside ``_PyEval_EvalFrameDefault``. So every function of ``otel_fileresp``
(module functions, methods, properties, the closures they return and the
bodies of its coroutines) is replaced, before ``instrument()``, by a wrapper
that runs it inside a C function of its own: a tiny extension (compiled
here with gcc) defines ``fileresp_fn_0`` ... ``fileresp_fn_N``, each of
which only calls the Python callable it is given, one per (caller, callee)
pair. The framework functions this package patches (``framework: ...``)
and the callables its closures were given from outside (``outside: ...``:
a worker-pool job, the ASGI ``send``) are wrapped the same way.

``callgrind_annotate --inclusive=yes`` gives each slot's inclusive
instructions; a function's own cost is its inclusive cost minus that of the
slots it calls, minus what the wrapping of each of those calls costs its
caller (measured by a reference loop, about 6 000 instructions a call).
What the SDK does for a function (a histogram update) is in that function's
own cost. The process is as in the ``instructions`` section (contrib's
middleware, unsampled parent, the SDK, default settings), one process per
framework, 200 and 304; per response.
"""

from __future__ import annotations

import argparse
import asyncio
import collections.abc
import functools
import gc
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import sysconfig
import tempfile
import threading
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.path.insert(1, str(HERE.parent))

SLOTS = 1024
WARM_UP = 30
REFERENCE_CALLS = 1000
KINDS = ("200", "304")
_KEEP_DUNDERS = ("__init__", "__call__", "__enter__", "__exit__", "__aenter__", "__aexit__")


def extension_source() -> str:
    functions = "\n".join(
        f"__attribute__((noinline, noipa)) static PyObject *fileresp_fn_{i}"
        "(PyObject *f, PyObject *a, PyObject *k) "
        '{ PyObject *r = PyObject_Call(f, a, k); __asm__ volatile("" ::: "memory"); return r; }'
        for i in range(SLOTS)
    )
    table = ", ".join(f"fileresp_fn_{i}" for i in range(SLOTS))
    return f"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
typedef PyObject *(*tramp_t)(PyObject *, PyObject *, PyObject *);
{functions}
static tramp_t TABLE[{SLOTS}] = {{ {table} }};

typedef struct {{ PyObject_HEAD PyObject *fn; int idx; }} Traced;

static PyObject *traced_new(PyTypeObject *type, PyObject *args, PyObject *kw) {{
    PyObject *fn; int idx;
    if (!PyArg_ParseTuple(args, "Oi", &fn, &idx)) return NULL;
    if (idx < 0 || idx >= {SLOTS}) {{ PyErr_SetString(PyExc_ValueError, "slot"); return NULL; }}
    Traced *self = (Traced *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    Py_INCREF(fn); self->fn = fn; self->idx = idx;
    return (PyObject *)self;
}}
static void traced_dealloc(Traced *self) {{ Py_XDECREF(self->fn); Py_TYPE(self)->tp_free(self); }}
static PyObject *traced_call(Traced *self, PyObject *args, PyObject *kw) {{
    return TABLE[self->idx](self->fn, args, kw);
}}
static PyObject *traced_get(PyObject *self, PyObject *obj, PyObject *type) {{
    if (obj == NULL) {{ Py_INCREF(self); return self; }}
    return PyMethod_New(self, obj);
}}
static PyObject *traced_getattro(Traced *self, PyObject *name) {{
    PyObject *r = PyObject_GenericGetAttr((PyObject *)self, name);
    if (r || !PyErr_ExceptionMatches(PyExc_AttributeError)) return r;
    PyErr_Clear();
    return PyObject_GetAttr(self->fn, name);
}}
static PyTypeObject TracedType = {{
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_fileresp_tramp.Traced",
    .tp_basicsize = sizeof(Traced),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = traced_new,
    .tp_dealloc = (destructor)traced_dealloc,
    .tp_call = (ternaryfunc)traced_call,
    .tp_descr_get = traced_get,
    .tp_getattro = (getattrofunc)traced_getattro,
}};
static PyObject *module_call(PyObject *m, PyObject *const *a, Py_ssize_t n) {{
    if (n != 4) {{ PyErr_SetString(PyExc_TypeError, "call(slot, fn, args, kwargs)"); return NULL; }}
    long idx = PyLong_AsLong(a[0]);
    if (idx < 0 || idx >= {SLOTS}) {{
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "slot");
        return NULL;
    }}
    return TABLE[idx](a[1], a[2], a[3] == Py_None ? NULL : a[3]);
}}
static PyMethodDef methods[] = {{
    {{"call", (PyCFunction)(void (*)(void))module_call, METH_FASTCALL, NULL}},
    {{NULL, NULL, 0, NULL}}
}};
static struct PyModuleDef module = {{
    PyModuleDef_HEAD_INIT, "_fileresp_tramp", NULL, -1, methods
}};
PyMODINIT_FUNC PyInit__fileresp_tramp(void) {{
    if (PyType_Ready(&TracedType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&TracedType);
    PyModule_AddObject(m, "Traced", (PyObject *)&TracedType);
    return m;
}}
"""


def build_extension(directory: Path) -> Path:
    source = directory / "_fileresp_tramp.c"
    source.write_text(extension_source())
    target = directory / f"_fileresp_tramp{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-O1",
            "-fno-ipa-icf",
            f"-I{include}",
            "-o",
            str(target),
            str(source),
        ],
        check=True,
    )
    return target


# -- the child: wrap, instrument, count ------------------------------------------


class Tracer:
    """Replaces this package's functions by wrappers that run them through a
    C slot of their own, one slot per (caller, callee) pair: a function's
    own cost is its inclusive cost minus that of the slots it calls."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call
        self.slots: dict[tuple[str, str], int] = {}
        self.calls: dict[tuple[str, str], int] = {}
        self.replaced: dict[int, Any] = {}
        self.local = threading.local()

    def enter(self, name: str, fn: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        stack = getattr(self.local, "stack", None)
        if stack is None:
            main = threading.current_thread() is threading.main_thread()
            stack = self.local.stack = ["<event loop>" if main else "<worker thread>"]
        key = (stack[-1], name)
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) >= SLOTS:
                raise RuntimeError("out of slots")
            slot = self.slots[key] = len(self.slots)
        self.calls[key] = self.calls.get(key, 0) + 1
        stack.append(name)
        try:
            return self.call(slot, fn, args, kwargs or None)
        finally:
            stack.pop()

    def follow(self, result: Any, name: str) -> Any:
        if isinstance(result, types.CoroutineType):
            return TracedCoroutine(result, self, f"{name} [body]")
        if (
            isinstance(result, types.FunctionType)
            and _ours(result)
            and not hasattr(result, "_fileresp_traced")
        ):
            self._wrap_outside_callables(result)
            return self.wrap(result, result.__qualname__)
        return result

    def _wrap_outside_callables(self, closure: types.FunctionType) -> None:
        """A closure of this package calls what it closed over (a worker-pool
        job, the ASGI ``send``): those callables, not this package's, are
        wrapped as ``outside: ...`` so that their cost is not the closure's."""
        for cell in closure.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if (
                callable(value)
                and not isinstance(value, type)
                and not _ours(value)
                and not hasattr(value, "_fileresp_traced")
                and isinstance(value, _CALLABLES)
            ):
                name = getattr(value, "__qualname__", None) or type(value).__name__
                cell.cell_contents = self.wrap(value, f"outside: {name}")

    def wrap(self, fn: Any, name: str) -> Any:
        tracer = self

        def traced(*args: Any, **kwargs: Any) -> Any:
            result = tracer.enter(name, fn, args, kwargs)
            if isinstance(result, _FOLLOWED):
                # wrapping the result is the profiler's work: in a slot of its
                # own, so that it is not counted as the caller's
                return tracer.enter("<profiling>", tracer.follow, (result, name), None)
            return result

        functools.update_wrapper(traced, fn)
        traced._fileresp_traced = True  # type: ignore[attr-defined]
        return traced

    def wrap_package(self) -> None:
        import otel_fileresp

        modules = [otel_fileresp]
        for info in pkgutil.walk_packages(otel_fileresp.__path__, "otel_fileresp."):
            if info.name.endswith(("pytest_plugin", "__main__")) or ".report" in info.name:
                continue
            modules.append(importlib.import_module(info.name))
        for module in modules:
            for value in list(vars(module).values()):
                if isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
                    self.replaced[id(value)] = self.wrap(value, f"{value.__qualname__}")
                elif isinstance(value, type) and value.__module__ == module.__name__:
                    self._wrap_class(value)
        for module in modules:  # every module's reference to a wrapped function
            for attr, value in list(vars(module).items()):
                if id(value) in self.replaced and isinstance(value, types.FunctionType):
                    setattr(module, attr, self.replaced[id(value)])

    def _wrap_class(self, cls: type) -> None:
        for attr, value in list(vars(cls).items()):
            if attr.startswith("__") and attr not in _KEEP_DUNDERS:
                continue
            name = f"{cls.__qualname__}.{attr}"
            if isinstance(value, types.FunctionType):
                setattr(cls, attr, self.wrap(value, name))
            elif isinstance(value, staticmethod):
                setattr(cls, attr, staticmethod(self.wrap(value.__func__, name)))
            elif isinstance(value, classmethod):
                setattr(cls, attr, classmethod(self.wrap(value.__func__, name)))
            elif isinstance(value, property) and value.fget is not None:
                setattr(
                    cls,
                    attr,
                    property(self.wrap(value.fget, name), value.fset, value.fdel, value.__doc__),
                )

    def wrap_patch_points(self, instrumentor: Any) -> list[tuple[str, str]]:
        """Wrap the framework functions ``instrument()`` patches, named
        ``framework: owner.attr``; each with the name of the hook that calls it."""
        import _contrib

        names = []
        for owner, attr, original, hook in _contrib.patch_points(instrumentor):
            owner_name = getattr(owner, "__qualname__", getattr(owner, "__name__", "?"))
            name = f"framework: {owner_name}.{attr}"
            setattr(owner, attr, self.wrap(original, name))
            names.append((name, hook))
        return names


_FOLLOWED = (types.CoroutineType, types.FunctionType)
_CALLABLES = (
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    functools.partial,
)


def _ours(value: Any) -> bool:
    fn = getattr(value, "__func__", value)
    return (getattr(fn, "__module__", None) or "").startswith("otel_fileresp")


class TracedCoroutine(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine whose every step runs through a slot: its body's cost."""

    __slots__ = ("_coro", "_name", "_tracer")

    def __init__(self, coro: Any, tracer: Tracer, name: str) -> None:
        self._coro = coro
        self._tracer = tracer
        self._name = name

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self._tracer.enter(self._name, self._coro.send, (None,), None)

    def send(self, value: Any) -> Any:
        return self._tracer.enter(self._name, self._coro.send, (value,), None)

    def throw(self, *args: Any) -> Any:
        return self._tracer.enter(self._name, self._coro.throw, args, None)

    def close(self) -> None:
        self._coro.close()


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework")
    parser.add_argument("root", type=Path)
    parser.add_argument("library")
    parser.add_argument("extension_dir")
    parser.add_argument("--responses", type=int, default=50)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plain", action="store_true", help="no wrapping (for the total)")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.extension_dir)
    sys.setswitchinterval(30.0)
    import _contrib
    import instructions

    tramp = importlib.import_module("_fileresp_tramp")
    counter = instructions._Counter(args.library)
    telemetry = _contrib.Telemetry()
    instrumentor = _contrib.instrumentor_for(args.framework)
    tracer = Tracer(tramp.call)
    patch_points = [] if args.plain else tracer.wrap_patch_points(instrumentor)
    if not args.plain:
        tracer.wrap_package()
    instrumentor.instrument()
    apps = _contrib.make_apps(args.framework, args.root)
    calls: dict[str, list[tuple[str, str, int]]] = {}

    async def main() -> None:
        await apps.start()
        try:
            _, headers = await apps.one("mw", _contrib.request_for("200", "unsampled", ""))
            etag = headers["etag"]
            counter.start()
            for kind in KINDS:
                run = apps.batch("mw", _contrib.request_for(kind, "unsampled", etag))
                await run(WARM_UP)
                await asyncio.sleep(0.01)
                telemetry.collect()
                gc.collect()
                gc.disable()
                before = dict(tracer.calls)
                counter.zero()
                await run(args.responses)
                await asyncio.sleep(0.01)
                counter.dump(f"{args.framework} profile {kind} ours_unsampled 1")
                gc.enable()
                calls[kind] = [
                    (*key, count - before.get(key, 0))
                    for key, count in tracer.calls.items()
                    if count > before.get(key, 0)
                ]
        finally:
            await apps.stop()

    asyncio.run(main())
    if not args.plain:
        # What the wrapping of one call costs the caller's own figure: a
        # wrapped loop calling a plain function, then a wrapped one.
        def noop() -> None:
            return None

        wrapped_noop = tracer.wrap(noop, "<reference callee>")

        def loop(callee: Callable[[], None]) -> None:
            for _ in range(REFERENCE_CALLS):
                callee()

        for name, callee in (("plain", noop), ("wrapped", wrapped_noop)):
            reference = tracer.wrap(loop, f"<reference {name}>")
            reference(callee)
            counter.zero()
            reference(callee)
            counter.dump(f"{args.framework} profile reference {name} 1")
    slots = {slot: list(key) for key, slot in tracer.slots.items()}
    args.out.write_text(json.dumps({"slots": slots, "patch_points": patch_points, "calls": calls}))
    return 0


# -- the parent ------------------------------------------------------------------

_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+\S*?:?fileresp_fn_(\d+)\b")


def run(root: Path, responses: int, log: Callable[[str], None], timeout: float = 1800) -> dict:
    import instructions

    with tempfile.TemporaryDirectory(prefix="fileresp-profile-") as tmp:
        work = Path(tmp)
        helper = work / "helper.c"
        helper.write_text(instructions.HELPER_SOURCE)
        library = work / "libfileresp_count.so"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(helper)], check=True
        )
        build_extension(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["PYTHONHASHSEED"] = "0"
        processes = []
        for framework in instructions.FRAMEWORKS:
            for plain in (False, True):
                out = work / f"{framework}-{'plain' if plain else 'wrapped'}"
                out.mkdir()
                command = [
                    "valgrind",
                    "--tool=callgrind",
                    "--instr-atstart=no",
                    f"--callgrind-out-file={out}/callgrind.out.%p",
                    sys.executable,
                    str(Path(__file__).resolve()),
                    framework,
                    str(root),
                    str(library),
                    str(work),
                    "--responses",
                    str(responses),
                    "--out",
                    str(out / "result.json"),
                    *(["--plain"] if plain else []),
                ]
                log(f"  profile {framework}{' (not wrapped)' if plain else ''}")
                processes.append(
                    (
                        framework,
                        plain,
                        out,
                        subprocess.Popen(
                            command,
                            env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            text=True,
                        ),
                    )
                )
        result: dict[str, Any] = {}
        for framework, plain, out, process in processes:
            _, stderr = process.communicate(timeout=timeout)
            if process.returncode:
                raise RuntimeError(f"profile {framework} failed: {stderr[-3000:]}")
            data = json.loads((out / "result.json").read_text())
            for dump in sorted(out.glob("callgrind.out.*")):
                text = dump.read_text(errors="replace")
                label = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.M)
                totals = re.search(r"^totals: (\d+)", text, re.M)
                if not label or not totals:
                    continue
                kind = label.group(1).split()[2]
                calls = REFERENCE_CALLS if kind == "reference" else responses
                if kind == "reference":
                    kind = f"reference {label.group(1).split()[3]}"
                entry = result.setdefault(f"{framework} {kind}", {})
                entry["plain" if plain else "wrapped"] = int(totals.group(1)) / calls
                if plain:
                    continue
                entry["slots"] = _slot_costs(dump, data["slots"], calls)
                entry["calls"] = {
                    f"{parent}\t{name}": count / calls
                    for parent, name, count in data["calls"].get(kind, [])
                }
        return result


def _slot_costs(dump: Path, slots: dict[str, list[str]], calls: int) -> dict[str, float]:
    """Inclusive instructions per response of each (caller, callee) slot,
    from ``callgrind_annotate --inclusive=yes``; keyed ``caller\tcallee``."""
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    costs: dict[str, float] = {}
    for line in annotated.splitlines():
        match = _ANNOTATED.match(line)
        if match and match.group(2) in slots:
            parent, name = slots[match.group(2)]
            cost = int(match.group(1).replace(",", "")) / calls
            costs[f"{parent}\t{name}"] = costs.get(f"{parent}\t{name}", 0.0) + cost
    return costs


@dataclass
class Node:
    name: str
    calls: float = 0.0
    inclusive: float = 0.0
    children: float = 0.0  # inclusive cost of the slots it calls
    child_calls: float = 0.0

    def own(self, overhead: float) -> float:
        return self.inclusive - self.children - overhead * self.child_calls


def nodes(entry: dict[str, Any]) -> dict[str, Node]:
    found: dict[str, Node] = {}
    for key, cost in entry.get("slots", {}).items():
        parent, name = key.split("\t")
        calls = entry.get("calls", {}).get(key, 0.0)
        node = found.setdefault(name, Node(name))
        if parent != name:
            node.inclusive += cost
            node.calls += calls
        caller = found.setdefault(parent, Node(parent))
        caller.children += cost
        caller.child_calls += calls
    return found


def wrapping_overhead(result: dict[str, Any], framework: str) -> float:
    """Instructions the wrapping of one call adds to its caller's own figure."""
    try:
        plain = nodes(result[f"{framework} reference plain"])["<reference plain>"]
        wrapped = nodes(result[f"{framework} reference wrapped"])["<reference wrapped>"]
    except KeyError:
        return 0.0
    # per reference call (figures are per call): the loop's own cost with a
    # plain callee (which includes running it) and with a wrapped one (which
    # does not)
    return wrapped.inclusive - wrapped.children - plain.inclusive


def report(result: dict[str, Any], top: int = 25) -> str:
    parts = []
    for key, entry in sorted(result.items()):
        if " reference " in key:
            continue
        framework = key.split()[0]
        overhead = wrapping_overhead(result, framework)
        found = nodes(entry)
        ours = [
            node
            for node in found.values()
            if not node.name.startswith(("framework: ", "outside: ", "<")) and node.calls
        ]
        ours.sort(key=lambda node: -node.own(overhead))
        total = sum(node.own(overhead) for node in ours)
        lines = [
            f"| {node.own(overhead):,.0f} | {node.inclusive:,.0f} | {node.calls:g} | "
            f"`{node.name}` |"
            for node in ours[:top]
        ]
        parts.append(
            f"### {key}, unsampled parent, per response\n\n"
            f"All instructions per response: {entry.get('plain', 0):,.0f} without the "
            f"profiling wrappers, {entry.get('wrapped', 0):,.0f} with them. Own "
            f"instructions of this package's functions, summed: {total:,.0f} (the wrapping "
            f"of each call, {overhead:,.0f} instructions, taken out of its caller's "
            "figure). Not in any function of the package: wrapt's call of each hook. "
            "What a closure of the package calls from outside (a worker-pool job, "
            "the ASGI `send` it wraps) is not in its figure; SDK calls are.\n\n"
            "| own | inclusive | calls | function |\n|---|---|---|---|\n" + "\n".join(lines)
        )
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from _common import make_site

    with tempfile.TemporaryDirectory() as tmp:
        root = make_site(Path(tmp) / "static")
        result = run(root, args.responses, lambda s: print(s, file=sys.stderr))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(report(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--run"]:
        sys.exit(main(sys.argv[2:]))
    sys.exit(_child(sys.argv[1:]))
