"""A bounded pool of read-only SQLite connections, each read bounded in time.

A connection per thread leaks: thread pools retire idle threads, and every retired thread left
an open connection (two file descriptors and up to its page cache) behind. Here at most ``size``
connections ever exist; a read borrows one and gives it back.

A read past its deadline is stopped with ``sqlite3.Connection.interrupt`` from one watchdog
thread. (A progress handler would be simpler, but it calls into Python, so every few thousand
SQLite steps the query would wait for the GIL behind whatever else runs: under load a query
slowed down by the very threads it competes with.) Python loops over rows call
:meth:`Reader.check`, which stops them the same way.

SQLite can restart its write-ahead log only at a moment when no read uses it; with reads
overlapping all the time that moment never comes, and the log grew by a gigabyte a minute under
mixed load. :meth:`ReaderPool.pause` makes that moment: new reads wait until those in progress
are done, ``on_idle`` runs (the store checkpoints the log), and reads go on.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from tomograph.collector.storage import QueryTimeout, StoreClosed

__all__ = ["Reader", "ReaderPool"]

#: While a read is overdue, it is interrupted again this often (seconds): an interrupt only
#: reaches statements running at that moment, not the next one a Python loop starts.
_REINTERRUPT = 0.05
_NEVER = float("inf")


def _seconds_until(deadline: float) -> float | None:
    """A timeout for Condition.wait: None for no deadline, and never beyond what it accepts."""
    if deadline == _NEVER:
        return None
    return min(deadline - time.monotonic(), threading.TIMEOUT_MAX)


class Reader:
    """One pooled connection, lent to one read at a time."""

    __slots__ = ("_cursors", "_pool", "db", "deadline")

    def __init__(self, db: sqlite3.Connection, pool: ReaderPool) -> None:
        self.db = db
        self.deadline = _NEVER
        self._pool = pool
        self._cursors: list[sqlite3.Cursor] = []

    def execute(self, sql: str, parameters: Iterable[Any] = ()) -> sqlite3.Cursor:
        """Run ``sql``; the cursor is closed when the read ends, even if left unfinished."""
        self.check()
        cursor = self.db.execute(sql, tuple(parameters))
        self._cursors.append(cursor)
        return cursor

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Statements inside see the database as the first of them saw it (one read transaction).

        A read-only transaction takes no lock the writer waits for, and waits for none.
        """
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self._finish()

    def check(self) -> None:
        """Raise :class:`StoreClosed` or :class:`QueryTimeout` if this read must stop now."""
        if self._pool.closing:
            raise StoreClosed("the span store is closed")
        if time.monotonic() >= self.deadline:
            raise QueryTimeout(self._pool.timeout_message)

    def _finish(self) -> None:
        # An unfinished cursor keeps its statement, hence a read snapshot of the WAL, open:
        # the next read on this connection would see old data, and checkpoints would stall.
        for cursor in self._cursors:
            cursor.close()
        self._cursors.clear()
        if self.db.in_transaction:  # a snapshot's, or one an interrupted read left open
            try:
                self.db.execute("COMMIT")
            except sqlite3.Error:  # interrupted meanwhile: the connection goes back all the same
                with suppress(sqlite3.Error):
                    self.db.execute("ROLLBACK")


class ReaderPool:
    """At most ``size`` read-only connections made by ``connect``; reads wait for a free one.

    ``timeout`` (seconds, None for no limit) bounds each read, from when it asks for a
    connection: waiting for one counts.

    >>> import sqlite3
    >>> pool = ReaderPool(lambda: sqlite3.connect(":memory:", check_same_thread=False), 2, 5.0)
    >>> with pool.reading() as reader:
    ...     reader.execute("SELECT 1").fetchone()
    (1,)
    >>> pool.close()
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        size: int,
        timeout: float | None,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        if size < 1:
            raise ValueError("a reader pool needs at least one connection")
        self._connect = connect
        self.size = size
        self.timeout = timeout
        self.timeout_message = f"the query ran longer than {timeout or 0:g} s and was stopped"
        self.closing = False  # set once; reads check it without the lock
        self._idle: list[Reader] = []
        self._busy: set[Reader] = set()
        self._opened = 0
        self._connecting = 0  # connections being opened, for hold_for_fork
        self._paused = False
        self._held = False  # across a fork (see hold_for_fork)
        self._on_idle = on_idle
        self._changed = threading.Condition()
        self._watchdog: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        """How many connections exist now (idle or lent)."""
        return self._opened

    @contextmanager
    def reading(self, bounded: bool = True) -> Iterator[Reader]:
        """Borrow a connection for one read; SQLite's "interrupted" becomes our own errors.

        ``bounded=False``: the read is not a client's and has no deadline (closing still stops it).
        """
        timeout = self.timeout if bounded else None
        deadline = time.monotonic() + timeout if timeout is not None else _NEVER
        reader = self._borrow(deadline)
        try:
            yield reader
        except sqlite3.OperationalError:
            if self.closing:
                raise StoreClosed("the span store is closed") from None
            if time.monotonic() >= deadline:
                raise QueryTimeout(self.timeout_message) from None
            raise
        finally:
            self._give_back(reader)

    def _borrow(self, deadline: float) -> Reader:
        reader: Reader | None
        with self._changed:
            while True:
                if self.closing:
                    raise StoreClosed("the span store is closed")
                if self._paused or self._held:
                    pass
                elif self._idle:
                    reader = self._idle.pop()
                    break
                elif self._opened < self.size:
                    self._opened += 1
                    self._connecting += 1
                    reader = None
                    break
                left = _seconds_until(deadline)
                if not self._changed.wait(left):
                    raise QueryTimeout(self.timeout_message)
        opened = reader is None
        if reader is None:
            try:
                reader = Reader(self._connect(), self)
            except BaseException:
                with self._changed:
                    self._opened -= 1
                    self._connecting -= 1
                    self._changed.notify_all()
                raise
        with self._changed:
            reader.deadline = deadline
            self._busy.add(reader)
            if opened:
                self._connecting -= 1  # now busy instead
            if deadline != _NEVER:
                try:
                    self._start_watchdog()
                except BaseException:  # out of threads: lent to no one, not busy for ever
                    self._busy.discard(reader)
                    reader.deadline = _NEVER
                    self._idle.append(reader)
                    self._changed.notify_all()
                    raise
                self._changed.notify_all()  # the watchdog may have a later deadline in mind
        return reader

    def _give_back(self, reader: Reader) -> None:
        reader._finish()
        with self._changed:
            self._busy.discard(reader)
            reader.deadline = _NEVER
            if self.closing:
                # close() left this connection to its last user: closing a connection while
                # another thread runs a query on it crashes the interpreter
                reader.db.close()
                self._opened -= 1
            else:
                self._idle.append(reader)
            self._changed.notify_all()
            last_of_pause = self._paused and not self._busy
        if last_of_pause:
            try:
                self._on_idle()
            finally:
                self.resume()

    def pause(self) -> bool:
        """Lend no connection until :meth:`resume`; True if no read is in progress now.

        Otherwise the last read in progress, when it ends, calls ``on_idle`` then
        :meth:`resume` (in its own thread). A read waiting for a connection meanwhile counts
        that time against its deadline.
        """
        with self._changed:
            was_paused, self._paused = self._paused, True
            return not was_paused and not self._busy

    def resume(self) -> None:
        """Lend connections again."""
        with self._changed:
            self._paused = False
            self._changed.notify_all()

    def hold_for_fork(self, timeout: float) -> bool:
        """Before a fork: lend no connection until :meth:`release_after_fork`, and wait up to
        ``timeout`` seconds for the reads in progress to end; whether they all did.

        SQLite keeps the locks of a process's connections to a file in one table, which a fork
        copies: forked in the middle of a read, the child finds that read's lock on the log held
        by a connection it never uses again, and can never start the log over.
        """
        with self._changed:
            self._held = True
            # a connection being opened reads the file too
            return self._changed.wait_for(lambda: not self._busy and not self._connecting, timeout)

    def release_after_fork(self) -> None:
        """In the parent after a fork: lend connections again (see :meth:`hold_for_fork`)."""
        with self._changed:
            self._held = False
            self._changed.notify_all()

    def _start_watchdog(self) -> None:
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(
                target=self._watch, name="tomograph collector query watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        with self._changed:
            while self._busy or not self.closing:
                now = time.monotonic()
                overdue = [r for r in self._busy if r.deadline <= now or self.closing]
                for reader in overdue:
                    # under the lock, so the reader cannot have been given back and lent again
                    reader.db.interrupt()
                nearest = min((r.deadline for r in self._busy if r.deadline > now), default=_NEVER)
                wait = _REINTERRUPT if overdue else _seconds_until(nearest)
                if wait is None and self.closing:
                    return
                self._changed.wait(wait)

    def interrupt(self) -> None:
        """Stop every read in progress and refuse new ones (they raise :class:`StoreClosed`)."""
        with self._changed:
            self.closing = True
            for reader in self._busy:
                reader.db.interrupt()
            if self._busy:
                self._start_watchdog()  # keeps interrupting until each read has stopped
            self._changed.notify_all()

    def close(self, wait: float = 5.0) -> None:
        """Interrupt reads in progress, wait up to ``wait`` s for them, close the connections.

        A read that does not stop in time keeps its connection; it is closed when that read
        gives it back.
        """
        self.interrupt()
        with self._changed:
            self._changed.wait_for(lambda: not self._busy, wait)
            for reader in self._idle:
                reader.db.close()
                self._opened -= 1
            self._idle.clear()
