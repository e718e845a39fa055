# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""A finished file response: the frozen value everything downstream reads.

The record (:mod:`otel_fileresp._record`) has two faces. While a response is
served it is a mutable :class:`~otel_fileresp._record.ResponseRecord` that
only the framework modules write, through its verbs. When it ends, it makes
one :class:`FinishedResponse`: a tuple whose facts are final (the truth rules
were applied once, at the end), and that is all emission
(:mod:`otel_fileresp._emit`) and the test recorder (:mod:`otel_fileresp.testing`)
ever see.

Whoever consumes file responses implements :class:`ResponseConsumer`: the
instrumentor's telemetry (it emits the spans and metrics), and the recorder's
count of responses in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Protocol

from opentelemetry import context as context_api

from otel_fileresp import _names as n

#: ``(phase or job kind, start_ns, end_ns)``, on :func:`time.perf_counter_ns`'s clock.
Interval = tuple[str, int, int]


class FinishedResponse(NamedTuple):
    """One file response, as it ended. Times are :func:`time.perf_counter_ns`
    values; emission turns them into wall-clock times."""

    framework: str
    #: The trace context the response started under (its span's parent).
    parent: context_api.Context
    #: Whether a span of it may be recorded (decided once, at its start).
    spans: bool
    #: Whether every phase was collected (else: the lean facts only).
    detailed: bool
    started_ns: int
    end_ns: int
    #: The status handed to the server; None when none was.
    status: int | None
    outcome: str
    #: Why it failed (``error.type``); None when it did not.
    error_type: str | None
    #: Whether the served file was opened for it.
    opened: bool
    #: How the body was handed over (detailed records; a lean one: ``none``).
    transfer: str
    bytes_sent: int
    #: Worker-pool jobs of the response, and their waits summed (ns).
    jobs: int
    wait_ns: int
    #: The served file's path and size (None for a redirect, or unknown).
    file_path: str | None
    file_size: int | None
    content_encoding: str | None
    precondition_result: str
    precondition_header: str | None
    #: Each phase that happened, in start order, clipped to the end.
    phases: tuple[Interval, ...]
    #: ``(job kind, submitted_ns, started_ns)`` of the stat/lookup/open jobs.
    wait_spans: tuple[Interval, ...]
    #: Body reads in the pool: count, summed wait and longest wait (ns).
    read_count: int
    read_wait_ns: int
    read_wait_max_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.started_ns) / 1e9

    @property
    def wait_s(self) -> float:
        return self.wait_ns / 1e9

    def phase_durations(self) -> Mapping[str, float]:
        """Seconds per phase that happened, and the total wait."""
        durations = {phase: (stop - start) / 1e9 for phase, start, stop in self.phases}
        durations[n.PHASE_THREADPOOL_WAIT] = self.wait_s
        return durations


class ResponseConsumer(Protocol):
    """Told of every file response that starts and ends."""

    def response_started(self, key: int, framework: str) -> None:
        """A file response started (in the thread serving it)."""

    def response_ended(self, key: int, finished: FinishedResponse | None) -> None:
        """It ended (``finished``), or turned out not to be a file response
        (None: nothing is emitted for it)."""
