"""Expensive answers computed once for everyone who asks at the same time.

Eight clients asking for the same day of dependency links used to run eight copies of the
same scan, each slowed by the others until all took ten times as long as one. Here one request
computes while the others wait for its answer (as coroutines: they hold no thread and no turn
in the query line), and an answer stays valid as long as the data it came from is unchanged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import anyio

__all__ = ["CoalescingCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Computation:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.error: Exception | None = None


class _Entry(Generic[V]):
    __slots__ = ("computed_at", "running", "value")

    def __init__(self) -> None:
        self.value: V | None = None
        self.computed_at = -1  # the data version the value was computed from; -1: none yet
        self.running: _Computation | None = None


class CoalescingCache(Generic[K, V]):
    """Answers by key, reused while the data is unchanged; one computation per key at a time.

    ``version`` returns a number that grows with every change of the data. A caller gets an
    answer computed from a version at least as new as the one it saw on arrival, so it never
    misses a change made before it asked. Callers arriving while a computation runs wait for
    it and share its answer, or its error; if it started before a change they must see, they
    share the next one: however many ask, a key is computed at most twice in a row. The
    ``maxsize`` most recently used keys are kept. For one event loop (not thread-safe).

    >>> import anyio
    >>> version = 0
    >>> cache = CoalescingCache(lambda: version, maxsize=8)
    >>> async def links(): return ["web -> db"]
    >>> anyio.run(cache.get, "day", links)
    ['web -> db']
    """

    def __init__(self, version: Callable[[], int], maxsize: int) -> None:
        self._version = version
        self._maxsize = maxsize
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        """The answer for ``key``: a fresh one kept, one being computed, or ``compute()``'s."""
        seen = self._version()
        while True:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                self._evict(keep=key)
            self._entries.move_to_end(key)
            if entry.computed_at >= seen:
                return entry.value  # type: ignore[return-value]  # set with computed_at
            running = entry.running
            if running is None:
                break
            await running.done.wait()
            if running.error is not None:
                raise running.error
        computation = entry.running = _Computation()
        try:
            start = self._version()  # read before compute reads the data: never too new
            value = await compute()
            entry.value, entry.computed_at = value, start
            return value
        except Exception as error:
            computation.error = error
            raise
        finally:  # cancelled too: a waiter then computes in its turn
            entry.running = None
            computation.done.set()

    def _evict(self, keep: K) -> None:
        while len(self._entries) > self._maxsize:
            idle = next(
                (k for k, e in self._entries.items() if e.running is None and k != keep), None
            )
            if idle is None:
                return  # every entry is being computed: let it grow until they finish
            del self._entries[idle]
