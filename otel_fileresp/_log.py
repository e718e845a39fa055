# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""This package's own failures: caught, logged once, never raised into a request.

Every hook runs the framework's code exactly as it would run without
instrumentation; what this package does around it is contained by one idiom
(the pattern of Sentry's ``capture_internal_exceptions``)::

    try:
        ...  # our own work
    except Exception:
        failed("record.begin")  # where it failed: the log-once key

An exception there is logged once per key, with its traceback, at WARNING on
the ``otel_fileresp`` logger, and the request goes on untouched. A ``try``
costs nothing until something raises (Python 3.11+), so the idiom is also the
cheapest. Only :class:`Exception` is contained: ``KeyboardInterrupt``,
``SystemExit`` and cancellation pass through, as they would without this
package. The record's verbs contain their own failures (see
:mod:`otel_fileresp._record`); a framework module contains only its reading
of the framework's objects.

Nothing in the package imports anything from here but the standard library,
so every module can use it.
"""

from __future__ import annotations

import logging
from typing import Final

_logger: Final = logging.getLogger("otel_fileresp")
_logged_once: set[str] = set()


def log_once(key: str, message: str, *, with_traceback: bool = True) -> None:
    """Log ``message`` once per ``key`` (with the exception being handled, if any)."""
    if key in _logged_once:
        return
    _logged_once.add(key)
    _logger.warning("otel_fileresp: %s", message, exc_info=with_traceback)


def failed(where: str, what: str | None = None) -> None:
    """In an ``except Exception:`` block around our own work: log the failure
    being handled, once per ``where`` (a dotted place, e.g. ``record.end``),
    with ``what`` failed when the reader can act on it."""
    said = what or "internal failure"
    log_once(where, f"{said} (in {where}); the request goes on untouched")


def forget_logged() -> None:
    """Let every key log again (for tests of the logging itself)."""
    _logged_once.clear()
