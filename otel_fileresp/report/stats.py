# Copyright The otel_fileresp Authors
# SPDX-License-Identifier: Apache-2.0
"""Percentiles by the nearest-rank method.

For ``n`` values sorted in ascending order, the p-th percentile is the value
at (1-based) rank ``ceil(p / 100 * n)``. It is always one of the observed
values, never an interpolation: with 20 durations, p95 is the 19th smallest
and p99 the 20th (the maximum); with a single duration every percentile is
that duration. The rank is computed in integer arithmetic, so no rounding
error can move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from otel_fileresp.report.model import DurationStats

PERCENTILES: Final = (50, 95, 99)


def nearest_rank(sorted_values: Sequence[int], percentile: int) -> int:
    """The ``percentile``-th percentile (0 < percentile <= 100) of ascending values."""
    if not sorted_values:
        raise ValueError("no values")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile} is not in (0, 100]")
    rank = -(-percentile * len(sorted_values) // 100)  # ceil(p * n / 100)
    return sorted_values[rank - 1]


def duration_stats(durations_ns: Sequence[int]) -> DurationStats:
    """Count, p50, p95, p99 and max of durations (in any order)."""
    ordered = sorted(durations_ns)
    p50, p95, p99 = (nearest_rank(ordered, p) for p in PERCENTILES)
    return DurationStats(count=len(ordered), p50_ns=p50, p95_ns=p95, p99_ns=p99, max_ns=ordered[-1])
