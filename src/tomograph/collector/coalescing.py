"""Expensive results computed once for everyone who asks at the same time.

Eight clients asking for the same day of dependency links used to run eight copies of the
same scan, each slowed by the others until all took 20 times as long as one. Here one caller
computes while the others wait for its result, and a result stays valid as long as the data
it came from has not changed.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["CoalescingCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Entry(Generic[V]):
    __slots__ = ("computed_at", "running", "value")

    def __init__(self) -> None:
        self.value: V | None = None
        self.computed_at = -1  # the data version the value was computed from; -1: none yet
        self.running = False


class CoalescingCache(Generic[K, V]):
    """Results by key, reused while the data is unchanged; one computation per key at a time.

    ``version`` returns a number that grows with every change of the data. A caller gets a
    result computed from a version at least as new as the one it saw on arrival, so it never
    misses a change made before it asked. Callers who arrive while a computation runs wait
    for it and, if it started too early for them, share the next one: however many ask, a key
    is computed at most twice in a row. The ``maxsize`` most recently used keys are kept.

    >>> version = 0
    >>> cache = CoalescingCache(lambda: version, maxsize=8)
    >>> cache.get("day", lambda: "links")
    'links'
    >>> cache.get("day", lambda: "not computed again")
    'links'
    >>> version += 1
    >>> cache.get("day", lambda: "new links")
    'new links'
    """

    def __init__(self, version: Callable[[], int], maxsize: int) -> None:
        self._version = version
        self._maxsize = maxsize
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._changed = threading.Condition()

    def get(self, key: K, compute: Callable[[], V], timeout: float | None = None) -> V:
        """The value of ``key``, computed by ``compute`` unless a fresh one exists.

        Raises TimeoutError if another caller's computation of ``key`` keeps this one waiting
        longer than ``timeout`` seconds; an exception of ``compute`` reaches only its caller
        (the next waiter computes again).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = self._version()
        with self._changed:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                self._evict(keep=key)
            self._entries.move_to_end(key)
            while True:
                if entry.computed_at >= seen:
                    return entry.value  # type: ignore[return-value]  # set with computed_at
                if not entry.running:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"waited {timeout} s for another computation of {key!r}")
                self._changed.wait(left)
            entry.running = True
        try:
            start = self._version()  # read before compute reads the data: never too new
            value = compute()
        except BaseException:
            with self._changed:
                entry.running = False
                self._changed.notify_all()
            raise
        with self._changed:
            entry.value, entry.computed_at, entry.running = value, start, False
            self._changed.notify_all()
        return value

    def _evict(self, keep: K) -> None:
        while len(self._entries) > self._maxsize:
            idle = next((k for k, e in self._entries.items() if not e.running and k != keep), None)
            if idle is None:
                return  # every entry is being computed: let it grow until they finish
            del self._entries[idle]
