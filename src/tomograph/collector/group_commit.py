"""Group commit: many threads hand their writes to one writer thread, which stores all that is
waiting in one transaction.

A commit costs far more than the rows in it (the pages of every index it touches are written
again), so uploads arriving together share one. Each caller still waits until its own write is
committed and gets its own result or error: nothing is acknowledged before it is stored.
Preparing the rows stays with the callers, in parallel with the writer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from tomograph.collector.storage import StoreClosed

__all__ = ["GroupWriter"]

log = logging.getLogger("tomograph.collector")

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _Waiting(Generic[_Item, _Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: _Item) -> None:
        self.item = item
        self.done = threading.Event()
        self.result: _Result | None = None
        self.error: BaseException | None = None


class GroupWriter(Generic[_Item, _Result]):
    """One thread that writes what :meth:`submit` hands it, everything waiting at once.

    ``write_group(items)`` stores a group in one transaction and returns, for each item in
    order, its result or the exception its caller should raise. The thread starts with the
    first submit (again in a forked child, where it does not exist).

    >>> writer = GroupWriter(lambda items: [sum(item) for item in items], "adder")
    >>> writer.submit([1, 2, 3])
    6
    >>> writer.close()
    """

    def __init__(
        self,
        write_group: Callable[[Sequence[_Item]], Sequence[_Result | BaseException]],
        name: str,
    ) -> None:
        self._write_group = write_group
        self._name = name
        self._condition = threading.Condition(threading.Lock())
        self._queue: list[_Waiting[_Item, _Result]] = []
        self._closing = False
        self._thread: threading.Thread | None = None
        self._pid = 0

    def submit(self, item: _Item) -> _Result:
        """Write ``item`` with whatever else is waiting; its result once committed.

        Raises the item's own error, or :class:`~tomograph.collector.storage.StoreClosed`
        once :meth:`close` has begun.
        """
        waiting: _Waiting[_Item, _Result] = _Waiting(item)
        with self._condition:
            if self._closing:
                raise StoreClosed("the span store is closed")
            if self._thread is None or self._pid != os.getpid():
                self._start()
            self._queue.append(waiting)
            self._condition.notify()
        waiting.done.wait()
        if waiting.error is not None:
            raise waiting.error
        return waiting.result  # type: ignore[return-value]  # set with done unless error is

    def _start(self) -> None:
        # a daemon: an interpreter exiting without close() must not hang on it (what it was
        # writing was not acknowledged to anyone yet)
        thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        thread.start()  # out of threads, this raises: the next submit tries again
        self._thread, self._pid = thread, os.getpid()

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:  # closing, and everything submitted is written
                    return
                group, self._queue = self._queue, []
            self._write(group)

    def _write(self, group: list[_Waiting[_Item, _Result]]) -> None:
        try:
            results = self._write_group([waiting.item for waiting in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for {len(group)} writes")
        except BaseException as error:  # the callers must learn it, not wait forever
            log.exception("a group of %d writes failed", len(group))
            results = [error] * len(group)
        for waiting, result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                waiting.error = result
            else:
                waiting.result = result
            waiting.done.set()

    def waiting(self) -> int:
        """How many writes are handed over and not yet being written."""
        with self._condition:
            return len(self._queue)

    def close(self) -> None:
        """Refuse new writes, let those submitted be written, stop the thread."""
        with self._condition:
            self._closing = True
            self._condition.notify()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
