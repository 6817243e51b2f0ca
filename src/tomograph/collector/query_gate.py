"""Admission of queries: a few run at once, a few more wait their turn, the rest hear "later".

Without it every query took a worker thread as it came: 24 concurrent searches shared two
cores and the database, each took minutes, memory grew with every one of them, and ingest
waited for a thread behind them. Queries here run on threads of their own, never on ingest's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["Overloaded", "QueryGate"]

_T = TypeVar("_T")


class Overloaded(Exception):
    """The query was refused: too many wait already, its turn did not come, or the server stops.

    ``retry_after`` is the number of seconds a client should wait before asking again.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueryGate:
    """At most ``running`` queries at once; up to ``waiting`` more wait at most ``max_wait`` s.

    >>> import anyio
    >>> gate = QueryGate(running=2, waiting=8, max_wait=5.0)
    >>> anyio.run(gate.run, sum, [1, 2, 3])
    6
    """

    def __init__(self, running: int, waiting: int, max_wait: float) -> None:
        if running < 1 or waiting < 0 or not max_wait >= 0:
            raise ValueError("a query gate needs running >= 1, waiting >= 0 and max_wait >= 0")
        self.running = running
        self.waiting = waiting
        self.max_wait = max_wait
        self._turns = anyio.Semaphore(running)
        self._threads = anyio.CapacityLimiter(running)
        self._queued = 0
        self._closed = False
        self._retry_after = max(1, math.ceil(max_wait))

    def close(self) -> None:
        """Refuse every query from now on (those already running are left to finish)."""
        self._closed = True

    async def run(self, query: Callable[..., _T], *args: object) -> _T:
        """Run the blocking ``query(*args)`` on a query thread once admitted.

        Raises :class:`Overloaded` if the line is full, the turn does not come within
        ``max_wait``, or the gate is closed.
        """
        await self._admit()
        try:
            return await anyio.to_thread.run_sync(query, *args, limiter=self._threads)
        finally:
            self._turns.release()

    async def _admit(self) -> None:
        self._refuse_if_closed()
        try:
            self._turns.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        if self._queued >= self.waiting:
            raise Overloaded(
                f"the query line is full ({self.running} running, {self._queued} waiting):"
                " try again later",
                self._retry_after,
            )
        self._queued += 1
        try:
            with anyio.move_on_after(self.max_wait) as scope:
                await self._turns.acquire()
        finally:
            self._queued -= 1
        if scope.cancelled_caught:
            raise Overloaded(
                f"no turn to query within {self.max_wait:g} s ({self.running} queries run at once)",
                self._retry_after,
            )
        try:
            self._refuse_if_closed()  # closed while this query waited
        except Overloaded:
            self._turns.release()
            raise

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise Overloaded("the collector is shutting down", self._retry_after)
