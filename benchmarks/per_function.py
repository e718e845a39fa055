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
caller (measured by a reference loop calling a method with two arguments,
about 6 500 instructions a call).
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
        self.modules: dict[str, str] = {}  # a wrapped function's name -> its module
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
        self._wrap_held_callable(result)
        return result

    def _wrap_held_callable(self, job: Any) -> None:
        """A callable object of this package holding the framework's callable
        (a worker-pool job: ``PoolJob._fn``) calls it: that callable is
        wrapped as ``outside: ...``, as a closure's would be."""
        held = getattr(job, "_fn", None)
        if (
            held is None
            or isinstance(job, type)
            or not _ours(type(job).__call__)
            or _ours(held)
            or hasattr(held, "_fileresp_traced")
            or not isinstance(held, _CALLABLES)
        ):
            return
        name = getattr(held, "__qualname__", None) or type(held).__name__
        job._fn = self.wrap(held, f"outside: {name}")

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
            if isinstance(result, _FOLLOWED) or isinstance(
                getattr(type(result), "_fn", None), types.MemberDescriptorType
            ):
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
                    self.modules[value.__qualname__] = module.__name__
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
            self.modules[name] = cls.__module__
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

    def wrap_sdk(self) -> None:
        """The SDK's ``Histogram.record``, named ``sdk: Histogram.record``:
        what the SDK does for a metric update is not its caller's own cost."""
        from opentelemetry.sdk.metrics._internal.instrument import Histogram

        Histogram.record = self.wrap(Histogram.record, SDK_RECORD)  # type: ignore[method-assign]

    def wrap_patch_points(self, instrumentor: Any) -> list[tuple[str, str]]:
        """Wrap the framework functions ``instrument()`` patches, named
        ``framework: owner.attr``; each with the name of the hook that calls it."""
        import _contrib

        names = []
        for owner, attr, original, hook, _plain in _contrib.patch_points(instrumentor):
            owner_name = getattr(owner, "__qualname__", getattr(owner, "__name__", "?"))
            name = f"framework: {owner_name}.{attr}"
            setattr(owner, attr, self.wrap(original, name))
            names.append((name, hook))
        return names


SDK_RECORD = "sdk: Histogram.record"
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
    parser.add_argument("--bare", action="store_true", help="not instrumented, no wrapping")
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
    args.plain = args.plain or args.bare
    patch_points = [] if args.plain else tracer.wrap_patch_points(instrumentor)
    if not args.plain:
        tracer.wrap_package()
        tracer.wrap_sdk()
    if not args.bare:
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
        # wrapped loop calling a plain method, then a wrapped one; a method
        # with two positional arguments, the commonest call in the package
        # (a function called without arguments: about 160 instructions less).
        class Plain:
            def noop(self, a: int, b: int) -> None:
                return None

        class Wrapped:
            noop = tracer.wrap(Plain.noop, "<reference callee>")

        def loop(callee: Any) -> None:
            for _ in range(REFERENCE_CALLS):
                callee.noop(1, 2)

        for name, callee in (("plain", Plain()), ("wrapped", Wrapped())):
            reference = tracer.wrap(loop, f"<reference {name}>")
            reference(callee)
            counter.zero()
            reference(callee)
            counter.dump(f"{args.framework} profile reference {name} 1")
    slots = {slot: list(key) for key, slot in tracer.slots.items()}
    args.out.write_text(
        json.dumps(
            {
                "slots": slots,
                "patch_points": patch_points,
                "calls": calls,
                "modules": tracer.modules,
            }
        )
    )
    return 0


# -- the parent ------------------------------------------------------------------

_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+\S*?:?fileresp_fn_(\d+)\b")
_FUNCTION = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(?:\*\s+)?(\S+?)(?:\s+\[.*\])?\s*$")
# wrapped: this package's functions run through slots; plain: instrumented,
# no slots; bare: not instrumented (the C-level costs are plain - bare)
VARIANTS = ("wrapped", "plain", "bare")
# C functions whose cost, instrumented less not, is shown by group: what the
# package pays per response in C-level work (inclusive instructions, but
# ``own`` groups: exclusive)
C_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("wrapt's C machinery (its own instructions)", "own", ("Wrapt",)),
    (
        "ContextVar get / set / reset (ours and the SDK's)",
        "inclusive",
        (
            "_contextvars_ContextVar_get",
            "_contextvars_ContextVar_set",
            "_contextvars_ContextVar_reset",
        ),
    ),
    ("contexts copied (copy_context)", "inclusive", ("PyContext_CopyCurrent",)),
    ("perf_counter_ns", "inclusive", ("time_perf_counter_ns",)),
    (
        "function objects made and freed (closures)",
        "inclusive",
        ("PyFunction_NewWithQualName", "func_dealloc"),
    ),
    ("coroutines made and freed", "inclusive", ("_Py_MakeCoro", "gen_dealloc")),
    ("bound methods made and freed", "inclusive", ("PyMethod_New", "method_dealloc")),
)


def run(root: Path, responses: int, log: Callable[[str], None], timeout: float = 1800) -> dict:
    import instructions

    with tempfile.TemporaryDirectory(prefix="fileresp-profile-") as tmp:
        work = Path(tmp)
        library = instructions.counter_library(work)
        build_extension(work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env["PYTHONHASHSEED"] = "0"
        processes = []
        for framework in instructions.FRAMEWORKS:
            for variant in VARIANTS:
                out = work / f"{framework}-{variant}"
                out.mkdir()
                command = [
                    *instructions.callgrind(out),
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
                    *([f"--{variant}"] if variant != "wrapped" else []),
                ]
                log(f"  profile {framework} ({variant})")
                processes.append(
                    (
                        framework,
                        variant,
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
        for framework, variant, out, process in processes:
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
                entry[variant] = int(totals.group(1)) / calls
                if variant != "wrapped":
                    if not kind.startswith("reference"):
                        entry[f"c_{variant}"] = c_costs(dump, calls)
                    continue
                entry["modules"] = data["modules"]
                entry["slots"] = _slot_costs(dump, data["slots"], calls)
                entry["calls"] = {
                    f"{parent}\t{name}": count / calls
                    for parent, name, count in data["calls"].get(kind, [])
                }
        return result


def c_costs(dump: Path, calls: int) -> dict[str, list[float]]:
    """Per C function of the groups in ``C_GROUPS``: [inclusive, own]
    instructions per response, from ``callgrind_annotate``."""
    wanted = {name for _, _, names in C_GROUPS for name in names}
    costs: dict[str, list[float]] = {}
    for index, flags in enumerate((["--inclusive=yes"], [])):
        annotated = subprocess.run(
            ["callgrind_annotate", *flags, "--threshold=100", str(dump)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in annotated.splitlines():
            match = _FUNCTION.match(line)
            if not match:
                continue
            function = match.group(2).rsplit(":", 1)[-1]
            if function in wanted or function.startswith("Wrapt"):
                entry = costs.setdefault(function, [0.0, 0.0])
                entry[index] += int(match.group(1).replace(",", "")) / calls
    return costs


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


_CASES = (("starlette", "200"), ("starlette", "304"), ("aiohttp", "200"), ("aiohttp", "304"))
GROUPS = (
    "hooks (the functions wrapt calls, and their helpers)",
    "record verbs (ResponseRecord, PoolJob, Scope, ...)",
    "closures made per response (their bodies)",
    "coroutines made per response (their bodies)",
    "the telemetry decision (Telemetry: may_record_spans, new_record, ...)",
    "emission (attributes, the metric calls; less the SDK's work)",
    "guards (failed, log_once: only when something failed)",
)


def group_of(name: str, module: str) -> str:
    """The group of one of this package's functions (by name and module)."""
    if name.endswith(" [body]"):
        return GROUPS[3]
    if "<locals>" in name:
        return GROUPS[2]
    if module.endswith("._record"):
        return GROUPS[1]
    if module.endswith("._telemetry"):
        return GROUPS[5] if name.startswith("Telemetry.response_") else GROUPS[4]
    if module.endswith(("._emit", "._instruments", "._names")):
        return GROUPS[5]
    if module.endswith("._log"):
        return GROUPS[6]
    if module.endswith((".starlette", ".aiohttp", "._asgi_servers", "._instrumentor")):
        return GROUPS[0]
    return f"other ({module or '?'})"


def _package_nodes(found: dict[str, Node]) -> list[Node]:
    return [
        node
        for node in found.values()
        if not node.name.startswith(("framework: ", "outside: ", "sdk: ", "<")) and node.calls
    ]


def grouped(result: dict[str, Any], key: str) -> dict[str, tuple[float, float]]:
    """Own instructions and calls per response, by group, of one case."""
    entry = result[key]
    overhead = wrapping_overhead(result, key.split(maxsplit=1)[0])
    modules = entry.get("modules", {})
    groups: dict[str, tuple[float, float]] = {}
    for node in _package_nodes(nodes(entry)):
        group = group_of(node.name, modules.get(node.name, ""))
        own, calls = groups.get(group, (0.0, 0.0))
        groups[group] = (own + node.own(overhead), calls + node.calls)
    return groups


def c_grouped(entry: dict[str, Any]) -> dict[str, float]:
    """Instrumented less not (``plain`` - ``bare``), by C group."""
    found: dict[str, float] = {}
    plain, bare = entry.get("c_plain", {}), entry.get("c_bare", {})
    for name, measure, prefixes in C_GROUPS:
        index = 0 if measure == "inclusive" else 1
        total = 0.0
        for function in set(plain) | set(bare):
            if function in prefixes or (prefixes == ("Wrapt",) and function.startswith("Wrapt")):
                total += plain.get(function, [0.0, 0.0])[index]
                total -= bare.get(function, [0.0, 0.0])[index]
        found[name] = total
    return found


def sdk_calls(entry: dict[str, Any]) -> tuple[float, float]:
    """The SDK's ``Histogram.record`` called from this package's functions
    (not contrib's): inclusive instructions and calls per response."""
    cost = calls = 0.0
    for key, value in entry.get("slots", {}).items():
        parent, name = key.split("\t")
        if name == SDK_RECORD and not parent.startswith(("<", "framework: ", "outside: ")):
            cost += value
            calls += entry.get("calls", {}).get(key, 0.0)
    return cost, calls


def _k(value: float) -> str:
    return f"{round(value / 1000, 1) or 0.0:,.1f} k"  # no "-0.0"


def breakdown_table(result: dict[str, Any]) -> str:
    """One column per case: this package's own instructions per response by
    group, the SDK's metric calls, and the C-level work they contain."""
    keys = [f"{framework} {kind}" for framework, kind in _CASES]
    present = [key for key in keys if key in result]
    by_case = {key: grouped(result, key) for key in present}
    names = list(GROUPS) + sorted(
        {g for groups in by_case.values() for g in groups if g not in GROUPS}
    )
    rows = []
    for name in names:
        cells = []
        for key in keys:
            own, calls = by_case.get(key, {}).get(name, (0.0, 0.0))
            cells.append(f"{_k(own)} ({calls:g})" if key in by_case else "")
        rows.append([name, *cells])
    totals = [
        _k(sum(own for own, _ in by_case[key].values())) if key in by_case else "" for key in keys
    ]
    rows.append(["**sum: this package's own instructions in its functions**", *totals])
    sdk = []
    added = []
    measured = []
    for key in keys:
        entry = result.get(key, {})
        cost, calls = sdk_calls(entry)
        sdk.append(f"{_k(cost)} ({calls:g})" if entry else "")
        plain, bare = entry.get("plain"), entry.get("bare")
        added.append(_k(plain - bare) if plain and bare else "")
        if plain and bare and key in by_case:
            own = sum(own for own, _ in by_case[key].values())
            measured.append(f"{own / (plain - bare - cost):.2f}")
        else:
            measured.append("")
    rows.append(["the SDK's `Histogram.record` calls we make (inclusive, calls)", *sdk])
    rows.append(["m3 - m2 in this process (instrumented less not, no slots)", *added])
    rows.append(["the sum above / (m3 - m2 - the SDK's calls) (the profile's error)", *measured])
    c_rows = []
    c_by_case = {key: c_grouped(result[key]) for key in present}
    for name, _, _ in C_GROUPS:
        c_rows.append([name, *[_k(c_by_case[k][name]) if k in c_by_case else "" for k in keys]])
    headers = ["group (own instructions per response, calls)", "S200", "S304", "A200", "A304"]
    return (
        table(headers, rows) + "\n\nC-level work inside the figures above, instrumented less not "
        "(`plain` - `bare`; inclusive instructions per response, except wrapt's: "
        "its own), counted in processes without the profiling slots:\n\n"
        + table(["C functions", "S200", "S304", "A200", "A304"], c_rows)
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def report(result: dict[str, Any], top: int = 15) -> str:
    parts = [breakdown_table(result)]
    for key, entry in sorted(result.items()):
        if " reference " in key:
            continue
        framework = key.split()[0]
        overhead = wrapping_overhead(result, framework)
        ours = _package_nodes(nodes(entry))
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
            f"profiling wrappers ({entry.get('bare', 0):,.0f} not instrumented), "
            f"{entry.get('wrapped', 0):,.0f} with them. Own instructions of this "
            f"package's functions, summed: {total:,.0f} (the wrapping of each call, "
            f"{overhead:,.0f} instructions, taken out of its caller's figure). Not in "
            "any function of the package: wrapt's call of each hook. What a closure of "
            "the package calls from outside (a worker-pool job, the ASGI `send` it "
            "wraps) is not in its figure, nor the SDK's `Histogram.record`.\n\n"
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
