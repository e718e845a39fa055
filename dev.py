#!/usr/bin/env python3
"""The project's commands, needing only Python 3.11 and pip (``test`` also
needs Python 3.12 and 3.13: noxfile.py takes them from PATH or from pyenv's
versions directory).

    python3 dev.py test    # the whole suite over the framework and Python matrix (nox)
    python3 dev.py demo    # real servers, real requests, printed span trees
    python3 dev.py bench   # overhead benchmarks (docs/performance.md), ~25 min
                           # (--section instructions: issue 18's table, ~8 min)

Each command creates (or reuses) its own virtualenv under ``.venvs/``.
Extra arguments after ``test`` go to nox, e.g. ``python3 dev.py test -s lint``
or ``python3 dev.py test -s "tests(frameworks='latest')" -- -k aiohttp``
(``-p 3.13``: the sessions on Python 3.13; ``-l``: every session); after
``bench`` to ``benchmarks/run.py``, e.g. ``python3 dev.py bench --quick``.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENVS = ROOT / ".venvs"
DEMO_REQUIREMENTS = [
    "opentelemetry-sdk==1.45.1",
    "starlette==1.10.0",
    "aiohttp==3.14.5",
    "uvicorn==0.54.0",
]


def _virtualenv(name: str, requirements: list[str]) -> Path:
    """A virtualenv at .venvs/NAME with ``requirements`` installed; its python."""
    home = VENVS / name
    python = home / "bin" / "python"
    stamp = home / ".installed"
    wanted = "\n".join(requirements)
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(home)
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *requirements,
            ],
            check=True,
        )
        stamp.write_text(wanted)
    return python


def _requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("test", "demo", "bench"):
        print(__doc__, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "test":
        # uv beside nox: noxfile.py makes and fills the sessions' virtualenvs with it.
        python = _virtualenv("nox", ["nox==2026.10.20", "uv==0.13.9"])
        run = [str(python), "-m", "nox", *args]
    elif command == "demo":
        python = _virtualenv("demo", [*DEMO_REQUIREMENTS, "-e", str(ROOT)])
        run = [str(python), str(ROOT / "examples" / "demo.py"), *args]
    else:
        # The benchmarks import the package from this checkout.
        python = _virtualenv("bench", _requirements(ROOT / "benchmarks" / "requirements.txt"))
        run = [str(python), str(ROOT / "benchmarks" / "run.py"), *args]
    return subprocess.run(run, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
