# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Errors the report raises for input it cannot read.

:class:`InputError` is the only exception :func:`otel_fileresp.report.summarize`
raises for bad input (a missing file, a directory, text that is not JSON, JSON
that is not a trace export). The command line prints it as one line,
``otel-fileresp: error: FILE: reason``, and exits with status 2.
"""

from __future__ import annotations


class InputError(Exception):
    """A trace file that cannot be read: ``path`` and a one-line ``reason``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class TraceShapeError(ValueError):
    """Valid JSON that does not have the shape of a known trace export."""
