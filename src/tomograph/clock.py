"""Span timing: a monotonic clock, mapped to epoch time by an anchor that follows the wall clock.

Spans record ``time.perf_counter_ns()`` (monotonic, high resolution, cheap) and convert to epoch
microseconds only when encoded, adding the *epoch offset* (epoch ns minus monotonic ns) they
took when they started: a local root span takes the current offset of :data:`ANCHOR`, and its
children take their parent's. A wall-clock step (NTP, a manual change) can therefore never make
a duration negative, or move a note or a child span relative to the rest of its trace.

The anchor compares the two clocks at most once a second (when a local root span starts) and
moves the offset when they drifted apart by more than a millisecond: after a wall-clock step, a
long-lived process reports wall-clock times again from its next trace on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = [
    "ANCHOR",
    "CHECK_INTERVAL_NS",
    "MAX_DRIFT_NS",
    "EpochAnchor",
    "epoch_us",
    "monotonic_ns",
    "now_epoch_us",
    "to_monotonic_ns",
]

monotonic_ns = time.perf_counter_ns

#: How often (monotonic ns) the anchor compares the wall clock with the monotonic clock.
CHECK_INTERVAL_NS = 1_000_000_000
#: A drift between the two clocks larger than this (ns) moves the anchor.
MAX_DRIFT_NS = 1_000_000
#: Monotonic readings further apart than this (ns) around a wall-clock reading mean the thread
#: was interrupted in between: that comparison is not trusted.
_MAX_READ_SPREAD_NS = 100_000


class EpochAnchor:
    """The epoch offset of the monotonic clock, re-measured when the wall clock moves.

    ``epoch ns = monotonic ns + offset_ns``. :meth:`offset_at` is what a local root span asks;
    ``wall_ns`` and ``monotonic_ns`` are the clocks compared (injectable for tests).

    >>> wall = [5_000_000_000]
    >>> anchor = EpochAnchor(wall_ns=lambda: wall[0], monotonic_ns=lambda: 1_000_000_000)
    >>> anchor.offset_ns
    4000000000
    >>> wall[0] += 60_000_000_000  # the wall clock is stepped a minute ahead
    >>> anchor.offset_at(anchor.next_check_ns)
    64000000000
    """

    __slots__ = ("monotonic_ns", "next_check_ns", "offset_ns", "wall_ns")

    def __init__(
        self,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self.wall_ns = wall_ns
        self.monotonic_ns = monotonic_ns
        offset = None
        for _ in range(5):  # an interrupted measurement is retried; the last one stands
            offset = self._measure()
            if offset is not None:
                break
        #: epoch nanoseconds = monotonic nanoseconds + offset_ns
        self.offset_ns: int = offset if offset is not None else wall_ns() - monotonic_ns()
        #: The monotonic time from which the next local root span compares the clocks again.
        self.next_check_ns: int = monotonic_ns() + CHECK_INTERVAL_NS

    def _measure(self) -> int | None:
        before = self.monotonic_ns()
        wall = self.wall_ns()
        after = self.monotonic_ns()
        if after - before > _MAX_READ_SPREAD_NS:
            return None
        return wall - (before + after) // 2

    def offset_at(self, now_ns: int) -> int:
        """The offset for a local root span starting at monotonic ``now_ns``.

        Compares the clocks if the check is due, and moves the offset if they drifted apart by
        more than :data:`MAX_DRIFT_NS`. Costs two clock reads once per
        :data:`CHECK_INTERVAL_NS`, and nothing otherwise.
        """
        if now_ns < self.next_check_ns:
            return self.offset_ns
        # Threads that race here all measure; any of their results is as good as another.
        self.next_check_ns = now_ns + CHECK_INTERVAL_NS
        measured = self._measure()
        if measured is not None and abs(measured - self.offset_ns) > MAX_DRIFT_NS:
            self.offset_ns = measured
        return self.offset_ns

    def __repr__(self) -> str:
        return f"EpochAnchor(offset_ns={self.offset_ns})"


#: The process's anchor: local root spans take their epoch offset from it.
ANCHOR = EpochAnchor()


def epoch_us(mono_ns: int, offset_ns: int | None = None) -> int:
    """Epoch microseconds for a reading of :func:`monotonic_ns`.

    ``offset_ns`` is a span's :attr:`~tomograph.Span.epoch_offset_ns`; by default the
    anchor's current one.
    """
    return (mono_ns + (ANCHOR.offset_ns if offset_ns is None else offset_ns)) // 1000


def to_monotonic_ns(epoch_microseconds: int, offset_ns: int | None = None) -> int:
    """The monotonic reading that corresponds to an epoch-microsecond timestamp.

    ``offset_ns`` as for :func:`epoch_us`.
    """
    return epoch_microseconds * 1000 - (ANCHOR.offset_ns if offset_ns is None else offset_ns)


def now_epoch_us() -> int:
    """The current time in epoch microseconds, on the span clock."""
    now = monotonic_ns()
    return (now + ANCHOR.offset_at(now)) // 1000
