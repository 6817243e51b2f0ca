"""Samplers: which new traces are recorded.

A sampler is asked only when a trace starts in this process, or continues from a remote parent;
a child of a local span always follows its parent. Every sampler is a callable object
``sampler(trace_id, parent) -> bool``: cheap, thread-safe, and never raising.

>>> from tomograph.sampling import parent_based, probabilistic
>>> sampler = parent_based(probabilistic(0.25))
"""

from __future__ import annotations

import math
import numbers
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from tomograph.model import TraceContext

__all__ = [
    "AlwaysSampler",
    "NeverSampler",
    "ParentBasedSampler",
    "ProbabilisticSampler",
    "RateLimitedSampler",
    "Sampler",
    "always",
    "constant_root_decision",
    "never",
    "parent_based",
    "probabilistic",
    "rate_limited",
    "undo_root_sample",
]

_LOW_64 = (1 << 64) - 1


class Sampler(Protocol):
    """Decides whether a trace is recorded."""

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        """True to record the trace that ``trace_id`` starts or continues."""
        ...


class AlwaysSampler:
    """Records every trace."""

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        return True

    def __repr__(self) -> str:
        return "always()"


class NeverSampler:
    """Records no trace; ids are still made, so context still propagates."""

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        return False

    def __repr__(self) -> str:
        return "never()"


class ProbabilisticSampler:
    """Records a fraction ``rate`` (0.0 to 1.0) of traces.

    The decision is a function of the trace id's low 64 bits, so every service using the same rate
    makes the same decision for the same trace.
    """

    __slots__ = ("_threshold", "rate")

    def __init__(self, rate: float) -> None:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"sample rate must be a number from 0.0 to 1.0, not {rate!r}")
        self.rate = float(rate)
        # Compare against a threshold instead of drawing a random number: one AND, one compare.
        self._threshold = round(self.rate * (1 << 64))

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        return (trace_id & _LOW_64) < self._threshold

    def __repr__(self) -> str:
        return f"probabilistic({self.rate})"


def _real_number(value: object) -> float | None:
    """``value`` as a float if it is a real number (bools are not), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


class RateLimitedSampler:
    """Records at most ``per_second`` new traces each second, on average.

    A token bucket that holds one second's worth of traces (at least one), starts full and
    refills continuously: ``rate_limited(2)`` records bursts of two, ``rate_limited(0.5)``
    one trace every two seconds, ``rate_limited(1/60)`` one a minute, ``rate_limited(0)``
    none. ``clock`` (monotonic seconds) is there for tests.

    >>> sampler = rate_limited(2)
    >>> [sampler(n, None) for n in range(3)]
    [True, True, False]
    """

    __slots__ = ("__weakref__", "_clock", "_due", "_interval", "_lock", "_tolerance", "per_second")

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        rate = _real_number(per_second)
        if rate is None or not 0 <= rate < math.inf:  # "not" also refuses NaN
            raise ValueError(f"traces per second must be a finite number >= 0, not {per_second!r}")
        self.per_second = rate
        self._clock: Callable[[], float] = clock
        # Kept as times rather than a token count (the "generic cell rate algorithm"), in whole
        # nanoseconds: adding fractions of a token, or of a second, on every call would let
        # rounding decide whether five traces fit a burst of five.
        #: Nanoseconds between two traces at the limit (infinite for a rate of 0).
        interval = 1e9 / self.per_second if self.per_second else math.inf
        self._interval: float = round(interval) if interval < math.inf else math.inf
        #: How far ahead of the clock ``_due`` may run: the burst beyond the first trace.
        capacity = max(1.0, self.per_second)
        self._tolerance: float = round((capacity - 1.0) * interval) if capacity > 1.0 else 0
        #: When the bucket is next empty; at or before now, it holds at least one trace.
        self._due: float = self._now() if self.per_second else math.inf
        # Taken only when a trace starts, never for child spans: contention stays negligible.
        self._lock: threading.Lock = threading.Lock()
        _rate_limited.add(self)

    def _now(self) -> int:
        return round(self._clock() * 1e9)

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        with self._lock:
            now = self._now()
            due = self._due
            if now < due - self._tolerance:
                return False
            self._due = (due if due > now else now) + self._interval
            return True

    def _give_back(self) -> None:
        """Return the last admitted trace to the bucket (it never started)."""
        with self._lock:
            if self._interval < math.inf:
                self._due -= self._interval
            elif self.per_second:
                self._due = -math.inf  # the one trace a near-zero rate ever admits

    def __repr__(self) -> str:
        return f"rate_limited({self.per_second})"


class ParentBasedSampler:
    """Obeys the upstream decision when a remote parent carries one; asks ``root`` otherwise.

    A debug parent is always sampled.
    """

    __slots__ = ("root",)

    def __init__(self, root: Sampler) -> None:
        if not callable(root):
            raise ValueError(f"the root sampler must be callable, not {root!r}")
        self.root = root

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        if parent is not None and parent.sampled is not None:
            return parent.sampled
        return self.root(trace_id, parent)

    def __repr__(self) -> str:
        return f"parent_based({self.root!r})"


def constant_root_decision(sampler: Sampler) -> bool | None:
    """The decision ``sampler`` makes for every new root trace if it is a constant, else None.

    Lets the tracer skip calling the sampler for each new trace.
    """
    if isinstance(sampler, ParentBasedSampler):
        sampler = sampler.root
    if isinstance(sampler, AlwaysSampler):
        return True
    if isinstance(sampler, NeverSampler):
        return False
    return None


#: Every rate-limited sampler, for the fork hook below.
_rate_limited: weakref.WeakSet[RateLimitedSampler] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    # A fork while another thread held a sampler's lock leaves it held forever in the child,
    # whose first new trace would then hang: the child starts with fresh locks.
    for sampler in list(_rate_limited):
        sampler._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)


def undo_root_sample(sampler: Sampler) -> None:
    """Give back what ``sampler`` spent admitting a new trace that never ran.

    A decorator's template span (``@tracer.span('name')``) is made like a new trace but only
    serves as a pattern: a rate-limited sampler must not lose a trace to it.
    """
    if isinstance(sampler, ParentBasedSampler):
        sampler = sampler.root
    if isinstance(sampler, RateLimitedSampler):
        sampler._give_back()


def always() -> AlwaysSampler:
    """A sampler that records every trace."""
    return AlwaysSampler()


def never() -> NeverSampler:
    """A sampler that records nothing (context still propagates)."""
    return NeverSampler()


def probabilistic(rate: float) -> ProbabilisticSampler:
    """A sampler that records ``rate`` (0.0-1.0) of traces, consistently per trace id."""
    return ProbabilisticSampler(rate)


def rate_limited(
    per_second: float, clock: Callable[[], float] = time.monotonic
) -> RateLimitedSampler:
    """A sampler that records at most ``per_second`` traces each second (rates below one too).

    ``clock`` (monotonic seconds) is for tests.
    """
    return RateLimitedSampler(per_second, clock)


def parent_based(root: Sampler | None = None) -> ParentBasedSampler:
    """A sampler that follows the upstream decision, else ``root`` (default: always)."""
    return ParentBasedSampler(root if root is not None else AlwaysSampler())
