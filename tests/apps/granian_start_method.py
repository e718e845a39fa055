"""granian's command line, with the ``multiprocessing`` start method set first.

    opentelemetry-instrument python granian_start_method.py METHOD \\
        --interface asgi --workers 2 ... starlette_app:app

granian (2.x) starts its workers with ``multiprocessing``, using the start
method the interpreter has chosen (``multiprocessing.get_start_method()``:
``fork`` on Linux up to Python 3.13, ``forkserver`` from 3.14; granian turns
``forkserver`` into ``spawn``, see ``granian/server/mp.py``). A program that
runs granian from Python sets it as here; the tests use this file to run
granian's workers under each start method on any Python. METHOD is ``fork``,
``forkserver`` or ``spawn``; the other arguments are granian's own.
"""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    method = sys.argv.pop(1)
    multiprocessing.set_start_method(method)
    from granian.cli import entrypoint

    sys.exit(entrypoint())
