# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""The metric instruments of a meter provider, made once and shared by both
instrumentors, and the in-process open counts behind ``fileresp.opens``.

``fileresp.opens`` is an observable counter read from :class:`OpenCounts` (a
response that opened the file pays an integer increment, not an SDK update).
Each instrument's attribute mappings are made once per key
(:meth:`Instruments.attributes`, from :func:`metric_attributes`): the SDK
copies and hashes them at every update anyway. A forked child gets new locks
(``os.register_at_fork``): the parent's metric reader may have held one at
the fork.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any, Final

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from otel_fileresp import _names as n
from otel_fileresp._log import failed
from otel_fileresp._pools import PoolGauges
from otel_fileresp.version import __version__

#: The first item of a metric key: which instrument it is for.
KEY_DURATION: Final = "duration"
KEY_PHASE: Final = "phase"


def metric_attributes(key: tuple[Any, ...]) -> dict[str, AttributeValue]:
    """The attributes behind a metric key: ``(KEY_PHASE, framework, phase)``
    or ``(KEY_DURATION, framework, outcome, opened, status)``."""
    if key[0] == KEY_PHASE:
        return {n.ATTR_FRAMEWORK: key[1], n.ATTR_PHASE: key[2]}
    _, framework, outcome, opened, status = key
    attributes: dict[str, AttributeValue] = {
        n.ATTR_FRAMEWORK: framework,
        n.ATTR_OUTCOME: outcome,
        n.ATTR_OPENED: opened,
    }
    if status is not None:
        attributes[n.ATTR_STATUS_CODE] = status
    return attributes


class OpenCounts:
    """Files opened for file responses, by framework and status (in process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int | None], int] = {}
        _FORK_SAFE.add(self)

    def after_fork_in_child(self) -> None:
        """A forked child gets a new lock: the parent's metric reader may have
        held this one at the fork, and nothing in the child would release it.
        The counts are the parent's so far, as the SDK's own counters are."""
        self._lock = threading.Lock()

    def seed(self, framework: str, status: int) -> None:
        """Report ``{framework, status}`` from now on, at 0 until an open."""
        with self._lock:
            self._counts.setdefault((framework, status), 0)

    def add(self, framework: str, status: int | None) -> None:
        key = (framework, status)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        observations = []
        for (framework, status), count in counts:
            attributes: dict[str, AttributeValue] = {n.ATTR_FRAMEWORK: framework}
            if status is not None:
                attributes[n.ATTR_STATUS_CODE] = status
            observations.append(Observation(count, attributes))
        return observations


class Instruments:
    """The metric instruments of one meter provider, shared by both instrumentors."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.meter = meter
        buckets = list(n.DURATION_BUCKETS)
        self.duration: Histogram = meter.create_histogram(
            n.METRIC_DURATION,
            unit="s",
            description="Duration of file responses, from resolving the file to the last byte.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self.phase_duration: Histogram = meter.create_histogram(
            n.METRIC_PHASE_DURATION,
            unit="s",
            description="Duration of each enabled phase of file responses, one point per "
            "response and phase; threadpool.wait is the response's total wait for workers.",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self.open_counts = OpenCounts()
        self.opens = meter.create_observable_counter(
            n.METRIC_OPENS,
            callbacks=[self._observe_opens],
            unit="{open}",
            description="Files opened by Python for a file response, by response status.",
        )
        # Worker-pool occupancy gauges; the framework modules note each pool.
        self.pools = PoolGauges(meter)
        self._attributes: dict[tuple[Any, ...], Mapping[str, AttributeValue]] = {}

    def _observe_opens(self, options: CallbackOptions) -> Iterable[Observation]:
        try:
            return self.open_counts.observe(options)
        except Exception:
            failed("instruments.opens.observe")
        return []

    def attributes(self, key: tuple[Any, ...]) -> Mapping[str, AttributeValue]:
        """The attribute mapping for ``key`` (made once; the SDK hashes it each time)."""
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = metric_attributes(key)
            self._attributes[key] = attributes
        return attributes


# Every OpenCounts of this process, for the child of a fork.
_FORK_SAFE: weakref.WeakSet[OpenCounts] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _INSTRUMENTS_LOCK  # noqa: PLW0603 - replaced only in a fresh child
    _INSTRUMENTS_LOCK = threading.Lock()
    for counts in list(_FORK_SAFE):
        counts.after_fork_in_child()


_GLOBAL_INSTRUMENTS: list[Instruments] = []
_INSTRUMENTS: weakref.WeakKeyDictionary[MeterProvider, Instruments] = weakref.WeakKeyDictionary()
_INSTRUMENTS_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_after_fork_in_child)


def instruments_for(meter_provider: MeterProvider | None) -> Instruments:
    """The instruments of ``meter_provider`` (None: the global one), made once."""
    with _INSTRUMENTS_LOCK:
        if meter_provider is None:
            if not _GLOBAL_INSTRUMENTS:
                _GLOBAL_INSTRUMENTS.append(Instruments(_meter(None)))
            return _GLOBAL_INSTRUMENTS[0]
        found = _INSTRUMENTS.get(meter_provider)
        if found is None:
            found = _INSTRUMENTS[meter_provider] = Instruments(_meter(meter_provider))
        return found


def _meter(meter_provider: MeterProvider | None) -> metrics.Meter:
    return metrics.get_meter(
        n.INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=n.SCHEMA_URL
    )
