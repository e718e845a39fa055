# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Settings, from the environment and from ``instrument()`` keyword arguments.

==================================== ========================= ============================
environment variable                 ``instrument()`` keyword  values (default first)
==================================== ========================= ============================
``OTEL_PYTHON_FILERESP_CAPTURE_PATH`` ``capture_path``         ``name`` | ``full`` | ``none``
``OTEL_PYTHON_FILERESP_PHASE_SPANS``  ``phase_spans``          ``true`` | ``false``
==================================== ========================= ============================

``capture_path``: ``name`` records only the file's base name as ``file.name``;
``full`` adds the absolute server path as ``file.path``; ``none`` records
neither. The default never records the absolute path.

``phase_spans``: with ``false`` only ``fileresp.response`` is emitted, and it
carries each phase's duration in seconds as ``fileresp.<phase>.duration``.
Metrics are the same either way.

A keyword argument wins over the environment. An invalid value never raises:
it logs one warning naming the variable and the default used instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal, get_args

from otel_fileresp._names import ENV_CAPTURE_PATH, ENV_PHASE_SPANS

_logger = logging.getLogger(__name__)

CapturePath = Literal["name", "full", "none"]
_CAPTURE_PATHS: dict[str, CapturePath] = {value: value for value in get_args(CapturePath)}
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class Settings:
    """What an instrumentor records, fixed when ``instrument()`` is called."""

    capture_path: CapturePath = "name"
    phase_spans: bool = True

    @classmethod
    def resolve(cls, capture_path: object = None, phase_spans: object = None) -> Settings:
        """Combine keyword arguments (when not None) with the environment."""
        default = cls()
        return cls(
            capture_path=_capture_path(
                capture_path, os.environ.get(ENV_CAPTURE_PATH), default.capture_path
            ),
            phase_spans=_phase_spans(
                phase_spans, os.environ.get(ENV_PHASE_SPANS), default.phase_spans
            ),
        )


def _capture_path(argument: object, environ: str | None, default: CapturePath) -> CapturePath:
    source, raw = (
        ("capture_path", argument) if argument is not None else (ENV_CAPTURE_PATH, environ)
    )
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value in _CAPTURE_PATHS:
        return _CAPTURE_PATHS[value]
    _logger.warning(
        "otel_fileresp: invalid %s=%r (expected one of %s); using the default %r",
        source,
        raw,
        ", ".join(_CAPTURE_PATHS),
        default,
    )
    return default


def _phase_spans(argument: object, environ: str | None, default: bool) -> bool:
    if isinstance(argument, bool):
        return argument
    source, raw = ("phase_spans", argument) if argument is not None else (ENV_PHASE_SPANS, environ)
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    _logger.warning(
        "otel_fileresp: invalid %s=%r (expected true or false); using the default %r",
        source,
        raw,
        "true" if default else "false",
    )
    return default
