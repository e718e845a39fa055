"""The test matrix: every session runs the whole suite against one set of
framework releases, one per code shape of each framework (see
docs/compatibility.md). ``nox`` runs them all; ``nox -s lint`` runs ruff and
mypy.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"

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


@nox.session(python=PYTHON)
@nox.parametrize("frameworks", list(MATRIX))
def tests(session: nox.Session, frameworks: str) -> None:
    """The whole test suite against one set of framework releases."""
    pins, extras = MATRIX[frameworks]
    session.install("-r", "tests/requirements.txt", "-e", ".", *pins, *extras)
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    latest = frameworks == "latest"
    # The FastAPI tests need FastAPI, installed only where its releases fit; the
    # README quickstart installs the latest releases, so it runs once, there.
    selection = (
        []
        if latest
        else [
            "--ignore=tests/test_fastapi.py",
            "--ignore=tests/test_examples_fastapi.py",
            "-m",
            "not quickstart",
        ]
    )
    session.run("pytest", *selection, *session.posargs)


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
