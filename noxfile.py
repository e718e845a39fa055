"""The test matrix: every session runs the suite against one set of framework
releases, one per code shape of each framework (see docs/compatibility.md), on
Python 3.11; the latest set also runs on Python 3.12 and 3.13. ``nox`` runs
them all; ``nox -s lint`` runs ruff and mypy.

Release-independent tests run once: the tests that depend neither on the
framework releases nor on the Python version (the record's rules, the report
CLI, settings parsing, the examples' config files, the docs' PromQL and alert
rules run by Prometheus, the README Quickstart in a virtualenv of its own) are
marked ``once`` by the table ``ONCE`` in tests/conftest.py, which says why for
each; they run in the latest set on Python 3.11 (``ONCE_SESSION``) and every
other session deselects them (``-m "not once"``). Every other test, and any
test module the table does not name, runs in every session.

Virtualenvs are made and filled by uv when it is installed beside nox (dev.py
installs it), by venv and pip otherwise: the same packages, in seconds.

Interpreters: ``pythonX.Y`` from ``PATH`` when it runs, otherwise the newest
``X.Y.N`` in pyenv's versions directory (``$PYENV_ROOT/versions`` or
``~/.pyenv/versions``): pyenv's shims are on ``PATH`` but run only the versions
pyenv has selected, so ``python3.12`` can be found there and still fail. A
version found nowhere makes its sessions fail (nothing is downloaded).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox

# uv when nox finds it (dev.py installs it beside nox), else venv + pip.
nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True
# A missing interpreter is an error, never a download.
nox.options.download_python = "never"

# Every framework set, and the lint session.
PYTHON = "3.11"
# The latest framework set only.
NEWER_PYTHONS = ["3.12", "3.13"]
# (Python, framework set) of the one session that also runs the tests marked
# ``once`` (tests/conftest.py ONCE): release-independent, so once is enough.
ONCE_SESSION = (PYTHON, "latest")
# pytest-xdist workers per session, each running whole test modules (a module's
# shared server or Prometheus stays in one process). The suite mostly waits
# (servers starting and stopping, subprocesses, bounded polls), so two workers
# help even on two busy cores. ``-- -n 0`` after the session runs it in one
# process; ``FILERESP_TEST_WORKERS`` sets the number.
WORKERS = os.environ.get("FILERESP_TEST_WORKERS", "2")

# name -> (requirements pinning the framework releases, extra test-only packages)
MATRIX: dict[str, tuple[list[str], list[str]]] = {
    # Starlette: async lookup_path, `method` argument, unquoted ETag (anyio 3).
    # aiohttp: separate stat and open jobs, `_get_file_path_stat_and_gzip`.
    # yarl 1.13+ changed URL joining under aiohttp 3.9's static routes.
    "oldest": (["starlette==0.16.0", "anyio<4", "aiohttp==3.9.5", "yarl<1.13"], []),
    # Starlette: sync lookup_path, no Range support.
    # aiohttp: last release with separate stat/open jobs (`_etag_match`).
    "mid-a": (["starlette==0.38.6", "aiohttp==3.11.9"], []),
    # Starlette: Range support, classmethod `_should_use_range`.
    # aiohttp: first `_make_response` release (PRs #10101 + #10113).
    "mid-b": (["starlette==0.41.3", "aiohttp==3.11.10"], []),
    # Starlette: pathsend, `_open_file`, child-task streaming, native OTel middleware.
    "latest": (["starlette==1.10.0", "aiohttp==3.14.5"], ["fastapi==0.165.0"]),
}

# Starlette 0.21.0-0.37.1's TestClient passes `app=` to httpx.Client, which
# httpx 0.28 removed (0.37.2 stopped passing it; up to 0.20 it used requests).
_HTTPX_APP_ARGUMENT = ((0, 21, 0), (0, 37, 2))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def httpx_pin(pins: list[str]) -> list[str]:
    """``httpx<0.28`` when the pinned Starlette's TestClient needs it."""
    for pin in pins:
        name, _, version = pin.partition("==")
        if name == "starlette" and version:
            low, high = _HTTPX_APP_ARGUMENT
            return ["httpx<0.28"] if low <= _version(version) < high else []
    return []


def _runs(executable: str, version: str) -> bool:
    """Whether ``executable`` starts and is Python ``version`` with venv."""
    try:
        result = subprocess.run(
            [executable, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def _pyenv_bin(version: str) -> Path | None:
    """The bin directory of the newest working ``version.N`` pyenv has installed."""
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    release = re.compile(rf"{re.escape(version)}\.(\d+)")
    for root in dict.fromkeys(roots):
        versions = root / "versions"
        if not versions.is_dir():
            continue
        installed = {
            int(match[1]): path
            for path in versions.iterdir()
            if (match := release.fullmatch(path.name))
        }
        for _, home in sorted(installed.items(), reverse=True):
            if _runs(str(home / "bin" / f"python{version}"), version):
                return home / "bin"
    return None


def _find_interpreters(versions: list[str]) -> None:
    """Put a working ``pythonX.Y`` for each version on nox's ``PATH``.

    A directory from pyenv goes at the end of ``PATH``, so it never shadows a
    command found before it (its ``python3`` and ``pip`` included).
    """
    extra: list[str] = []
    for version in versions:
        on_path = shutil.which(f"python{version}")
        if on_path is not None and _runs(on_path, version):
            continue
        found = _pyenv_bin(version)
        if found is None:
            print(
                f"noxfile: python{version} runs from neither PATH nor pyenv's versions"
                f" directory; its sessions will fail (pyenv install {version}).",
                file=sys.stderr,
            )
        else:
            extra.append(str(found))
    if extra:
        os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *extra])


_find_interpreters([PYTHON, *NEWER_PYTHONS])

SESSIONS = [nox.param(PYTHON, name, id=f"frameworks='{name}'") for name in MATRIX] + [
    nox.param(version, "latest", id=f"python='{version}', frameworks='latest'")
    for version in NEWER_PYTHONS
]


@nox.session
@nox.parametrize(("python", "frameworks"), SESSIONS)
def tests(session: nox.Session, frameworks: str) -> None:
    """The whole test suite against one set of framework releases."""
    pins, extras = MATRIX[frameworks]
    session.install("-r", "tests/requirements.txt", "-e", ".", *pins, *httpx_pin(pins), *extras)
    if session.venv_backend == "uv":
        session.run("uv", "pip", "list", "--format=freeze", silent=False)
    else:
        session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    latest = frameworks == "latest"
    # The FastAPI tests need FastAPI, installed only where its releases fit.
    selection = (
        []
        if latest
        else [
            "--ignore=tests/frameworks/test_fastapi.py",
            "--ignore=tests/docs/test_examples_fastapi.py",
        ]
    )
    # Release-independent tests (the README Quickstart, which installs the
    # latest releases into a virtualenv of its own, among them) run once.
    if (session.python, frameworks) != ONCE_SESSION:
        selection += ["-m", "not once"]
    session.run("pytest", "-n", WORKERS, "--dist", "loadfile", *selection, *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy --strict over the package."""
    session.install(
        "-r",
        "tests/requirements.txt",
        "-e",
        ".",
        "starlette==1.10.0",
        "aiohttp==3.14.5",
        "ruff==0.17.6",
        "mypy==2.4.1",
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
