# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Settings, from the environment and from ``instrument()`` keyword arguments.

- ``OTEL_PYTHON_FILERESP_CAPTURE_PATH`` (keyword ``capture_path``):
  ``name`` (default) | ``full`` | ``none``;
- ``OTEL_PYTHON_FILERESP_PHASE_SPANS`` (``phase_spans``): ``true`` (default) | ``false``;
- ``OTEL_PYTHON_FILERESP_PHASE_METRICS`` (``phase_metrics``): ``threadpool.wait``
  (default) | a comma-separated list of phases | ``all`` | ``none``;
- ``OTEL_PYTHON_FILERESP_METRICS`` (``metrics``): ``true`` (default) | ``false``;
- ``OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN`` (``flush_on_shutdown``): ``true``
  (default) | ``false``.

``capture_path``: ``name`` records only the file's base name as ``file.name``;
``full`` adds the absolute server path as ``file.path``; ``none`` records
neither. The default never records the absolute path.

``phase_spans``: with ``false`` only ``fileresp.response`` is emitted, and it
carries each phase's duration in seconds as ``fileresp.<phase>.duration``.
Metrics are the same either way.

``phase_metrics``: the phases that get a ``fileresp.phase.duration`` point,
one per response each: ``stat``, ``precondition``, ``open``,
``threadpool.wait`` (the response's total wait for worker threads) and
``send``. The default, ``threadpool.wait``, costs one histogram update per
response; ``all`` gives every phase (v1's picture, up to five updates per
response); ``none`` records no phase point. As a keyword it also takes a
list of phase names.

``metrics``: ``false`` records no metric of this package at all (no
``fileresp.duration``, phase points, ``fileresp.opens`` or pool gauges);
spans are unaffected. An SDK view that drops the instruments cannot give
this: a dropped instrument still costs the SDK nearly a full update.

``flush_on_shutdown``: when the app shuts down (Starlette/FastAPI lifespan
shutdown, aiohttp's application cleanup), after its last response, the
global tracer and meter providers are flushed (``force_flush``, at most a
few seconds, see :mod:`otel_fileresp._lifecycle`), so a SIGTERM loses no span
or metric point. ``false`` leaves flushing to the application.

A keyword argument wins over the environment. An invalid value never raises:
it logs one warning naming the variable and the default used instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from otel_fileresp import _names as n

_logger = logging.getLogger(__name__)

CapturePath = Literal["name", "full", "none"]
_CAPTURE_PATHS: dict[str, CapturePath] = {value: value for value in get_args(CapturePath)}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
DEFAULT_PHASE_METRICS: frozenset[str] = frozenset({n.PHASE_THREADPOOL_WAIT})
ENV_FLUSH_ON_SHUTDOWN = "OTEL_PYTHON_FILERESP_FLUSH_ON_SHUTDOWN"


@dataclass(frozen=True)
class Settings:
    """What an instrumentor records, fixed when ``instrument()`` is called."""

    capture_path: CapturePath = "name"
    phase_spans: bool = True
    phase_metrics: frozenset[str] = DEFAULT_PHASE_METRICS
    metrics: bool = True
    flush_on_shutdown: bool = True

    @classmethod
    def resolve(
        cls,
        capture_path: object = None,
        phase_spans: object = None,
        phase_metrics: object = None,
        metrics: object = None,
        flush_on_shutdown: object = None,
    ) -> Settings:
        """Combine keyword arguments (when not None) with the environment."""
        default = cls()
        return cls(
            capture_path=_capture_path(
                _pick("capture_path", capture_path, n.ENV_CAPTURE_PATH), default.capture_path
            ),
            phase_spans=_boolean(
                _pick("phase_spans", phase_spans, n.ENV_PHASE_SPANS), default.phase_spans
            ),
            phase_metrics=_phases(
                _pick("phase_metrics", phase_metrics, n.ENV_PHASE_METRICS),
                default.phase_metrics,
            ),
            metrics=_boolean(_pick("metrics", metrics, n.ENV_METRICS), default.metrics),
            flush_on_shutdown=_boolean(
                _pick("flush_on_shutdown", flush_on_shutdown, ENV_FLUSH_ON_SHUTDOWN),
                default.flush_on_shutdown,
            ),
        )


def _pick(keyword: str, argument: object, variable: str) -> tuple[str, object]:
    """Where the value comes from (for the warning) and the value: the keyword if given."""
    if argument is not None:
        return keyword, argument
    return variable, os.environ.get(variable)


def _invalid(source: str, raw: object, expected: str, default: str) -> None:
    _logger.warning(
        "otel_fileresp: invalid %s=%r (expected %s); using the default %r",
        source,
        raw,
        expected,
        default,
    )


def _capture_path(given: tuple[str, object], default: CapturePath) -> CapturePath:
    source, raw = given
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value in _CAPTURE_PATHS:
        return _CAPTURE_PATHS[value]
    _invalid(source, raw, "one of " + ", ".join(_CAPTURE_PATHS), default)
    return default


def _boolean(given: tuple[str, object], default: bool) -> bool:
    source, raw = given
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _invalid(source, raw, "true or false", "true" if default else "false")
    return default


def _phases(given: tuple[str, object], default: frozenset[str]) -> frozenset[str]:
    source, raw = given
    if raw is None:
        return default
    names: Iterable[object]
    if isinstance(raw, str):
        value = raw.strip().lower()
        if value == "all":
            return frozenset(n.PHASES)
        if value in ("none", ""):
            return frozenset()
        names = value.split(",")
    elif isinstance(raw, Iterable):
        names = raw
    else:
        names = (raw,)
    phases = [str(name).strip().lower() for name in names]
    if all(phase in n.PHASES for phase in phases):
        return frozenset(phases)
    _invalid(
        source,
        raw,
        "all, none or a comma-separated list of " + ", ".join(n.PHASES),
        ",".join(sorted(default)),
    )
    return default
