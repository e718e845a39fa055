#!/usr/bin/env python3
"""The project's two commands, needing only Python 3.11 and pip.

    python3 dev.py test    # the whole suite over the framework version matrix (nox)
    python3 dev.py demo    # real servers, real requests, printed span trees

Each command creates (or reuses) its own virtualenv under ``.venvs/``.
Extra arguments after ``test`` go to nox, e.g. ``python3 dev.py test -s lint``
or ``python3 dev.py test -s "tests(frameworks='latest')" -- -k aiohttp``.
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


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("test", "demo"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "test":
        python = _virtualenv("nox", ["nox==2026.10.20"])
        return subprocess.run(
            [str(python), "-m", "nox", *argv[1:]], cwd=ROOT, check=False
        ).returncode
    python = _virtualenv("demo", [*DEMO_REQUIREMENTS, "-e", str(ROOT)])
    demo = ROOT / "examples" / "demo.py"
    return subprocess.run([str(python), str(demo), *argv[1:]], cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
