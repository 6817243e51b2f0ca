"""Samplers: which new traces are recorded.

A sampler is asked only when a trace starts in this process, or continues from a remote parent;
a child of a local span always follows its parent. Every sampler is a callable object
``sampler(trace_id, parent) -> bool``: cheap, thread-safe, and never raising.

>>> from tomograph.sampling import parent_based, probabilistic
>>> sampler = parent_based(probabilistic(0.25))
"""

from __future__ import annotations

import threading
import time
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


class RateLimitedSampler:
    """Records at most ``per_second`` new traces each second (a token bucket, bursts of one second).

    >>> sampler = rate_limited(2)
    >>> [sampler(n, None) for n in range(3)]
    [True, True, False]
    """

    __slots__ = ("_last", "_lock", "_tokens", "per_second")

    def __init__(self, per_second: float) -> None:
        if not isinstance(per_second, (int, float)) or per_second < 0:
            raise ValueError(f"traces per second must be a number >= 0, not {per_second!r}")
        self.per_second = float(per_second)
        self._tokens = self.per_second
        self._last = time.monotonic()
        # Taken only when a trace starts, never for child spans: contention stays negligible.
        self._lock = threading.Lock()

    def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.per_second, self._tokens + (now - self._last) * self.per_second)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def __repr__(self) -> str:
        return f"rate_limited({self.per_second})"


class ParentBasedSampler:
    """Obeys the upstream decision when a remote parent carries one; asks ``root`` otherwise.

    A debug parent is always sampled.
    """

    __slots__ = ("root",)

    def __init__(self, root: Sampler) -> None:
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


def always() -> AlwaysSampler:
    """A sampler that records every trace."""
    return AlwaysSampler()


def never() -> NeverSampler:
    """A sampler that records nothing (context still propagates)."""
    return NeverSampler()


def probabilistic(rate: float) -> ProbabilisticSampler:
    """A sampler that records ``rate`` (0.0-1.0) of traces, consistently per trace id."""
    return ProbabilisticSampler(rate)


def rate_limited(per_second: float) -> RateLimitedSampler:
    """A sampler that records at most ``per_second`` traces each second."""
    return RateLimitedSampler(per_second)


def parent_based(root: Sampler | None = None) -> ParentBasedSampler:
    """A sampler that follows the upstream decision, else ``root`` (default: always)."""
    return ParentBasedSampler(root if root is not None else AlwaysSampler())
