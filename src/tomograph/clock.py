"""Span timing: a monotonic clock anchored once to the wall clock.

Spans record ``time.perf_counter_ns()`` (monotonic, high resolution, cheap) and convert to epoch
microseconds only when encoded. Anchoring once means a wall-clock step (NTP, a manual change)
cannot make a span's duration negative or shift one span relative to its siblings.
"""

from __future__ import annotations

import time

__all__ = ["EPOCH_OFFSET_NS", "epoch_us", "monotonic_ns", "now_epoch_us", "to_monotonic_ns"]

monotonic_ns = time.perf_counter_ns

#: epoch nanoseconds = monotonic nanoseconds + EPOCH_OFFSET_NS
EPOCH_OFFSET_NS: int = time.time_ns() - time.perf_counter_ns()


def epoch_us(mono_ns: int) -> int:
    """Epoch microseconds for a reading of :func:`monotonic_ns`."""
    return (mono_ns + EPOCH_OFFSET_NS) // 1000


def to_monotonic_ns(epoch_microseconds: int) -> int:
    """The monotonic reading that corresponds to an epoch-microsecond timestamp."""
    return epoch_microseconds * 1000 - EPOCH_OFFSET_NS


def now_epoch_us() -> int:
    """The current time in epoch microseconds, on the span clock."""
    return (time.perf_counter_ns() + EPOCH_OFFSET_NS) // 1000
