"""Write-ahead-log checkpoints on a thread of their own, off the path of every write.

A checkpoint copies the pages that commits appended to the log back into the database file and
syncs it to disk. SQLite runs one by default inside the commit that fills the log past a
thousand pages; with the random index pages of spans that is nearly every commit of a batch,
and the writer then waits for the disk while uploads queue behind it. Here the writer only
wakes this thread, which checkpoints at most once per interval everything committed meanwhile:
a page written by several commits is copied once, the sync happens without the write lock or
the GIL (SQLite releases it), and the writer goes straight on to the next group.

A PASSIVE checkpoint never blocks writers or readers, but under steady writes it never ends
with the whole log copied either, and SQLite starts the log over only when it is. So once the
log holds more than :data:`RESTART_BYTES`, the file is synced, a second pass copies what was
committed during the first, and a last one holds writes back: it copies just what came during
the second, waits briefly for the reads still using the log, and starts it over. A read that
outlasts the wait keeps the log for the next round; the store's own reset of a log grown too
long (run by the writer itself, holding new reads back) bounds it then.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["BackgroundCheckpoints"]

log = logging.getLogger("tomograph.collector")

#: Seconds between two checkpoints while writes go on: the commits of an interval share one.
CHECKPOINT_INTERVAL = 0.1
#: A log longer than this is caught up with writes held back, so that it starts over.
RESTART_BYTES = 4 * 1024 * 1024
#: How long the pass holding writes back waits for reads that still use the log.
HELD_WAIT_MS = 100


_fdatasync = getattr(os, "fdatasync", os.fsync)  # macOS has only fsync


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []


def _same_file(fd: int, wanted: os.stat_result) -> bool:
    if fd < 0:
        return False
    try:
        found = os.fstat(fd)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino)


class BackgroundCheckpoints:
    """A thread that checkpoints the log of the SQLite file at ``path`` after :meth:`wake`.

    ``connect`` opens the thread's own connection (on the thread, in the process that uses it:
    a forked child starts its own thread at its first :meth:`wake`). ``hold_writes()`` returns
    a context in which no write transaction runs; it yields False once the store is closed. The
    writer's connection should have ``PRAGMA wal_autocheckpoint = 0``, or it checkpoints in its
    commits as well.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        connect: Callable[[], sqlite3.Connection],
        hold_writes: Callable[[], AbstractContextManager[bool]],
        interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self._path = path
        self._connect = connect
        self._hold_writes = hold_writes
        self._interval = interval
        self._condition = threading.Condition(threading.Lock())
        self._pending = False
        self._pass_lock = threading.Lock()  # held by each checkpoint pass (see paused)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        # held here, not on the thread's stack: a forked child clears the stacks of threads it
        # does not have, and closing the parent's connection there could drop its locks
        self._db: sqlite3.Connection | None = None
        self._page_size = 4096
        self._failing = False  # the last checkpoint failed (see _run)
        self._fd = -1  # a descriptor of the database file that SQLite holds (see _sync_file)
        self.checkpoints = 0  # completed, for tests and diagnostics

    def wake(self) -> None:
        """Ask for a checkpoint of what is committed now (it runs within an interval)."""
        with self._condition:
            if self._stopping:
                return
            self._pending = True
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._start()
            self._condition.notify()

    def _start(self) -> None:
        thread = threading.Thread(
            target=self._run, name="tomograph collector checkpoints", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:
            # out of threads: the log grows until the store's reset of a long log empties it,
            # and the next wake tries again
            log.warning("could not start the checkpoint thread; the next write tries again")
            return
        self._thread, self._pid = thread, os.getpid()

    def _run(self) -> None:
        try:
            while True:
                with self._condition:
                    while not self._pending and not self._stopping:
                        self._condition.wait()
                    if self._stopping:
                        return
                    self._pending = False
                try:
                    self._checkpoint()
                except sqlite3.Error as error:
                    # nothing is lost: the pages stay in the log for the next checkpoint; said
                    # once per run of failures, not ten times a second
                    if not self._failing:
                        log.warning("checkpoint of the span database failed: %s", error)
                    self._failing = True
                else:
                    if self._failing:
                        log.info("checkpoints of the span database work again")
                    self._failing = False
                with self._condition:
                    # the commits of the next interval share one checkpoint
                    self._condition.wait_for(lambda: self._stopping, self._interval)
        finally:
            if self._db is not None:
                with self._pass_lock:  # see _checkpoint
                    self._db.close()
                self._db = None

    def _checkpoint(self) -> None:
        if self._db is None:
            with self._pass_lock:  # opening reads the file: not during a fork (hold_for_fork)
                self._db = self._connect()
                # the held RESTART waits at most this long for reads still using the log
                self._db.execute(f"PRAGMA busy_timeout = {HELD_WAIT_MS}")
                self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        frames = self._pass()
        if frames * self._page_size > RESTART_BYTES:
            # A pass overtaken by commits leaves the pages it copied unsynced (SQLite syncs the
            # file only when a pass reaches the end of the log), and the pass holding writes
            # would sync them all: sync them here instead. A second pass copies what was
            # committed during the first, in less time, so the held one has the least to do.
            self._sync_file()
            self._pass()
            self._sync_file()
            # The write lock first, the pass lock inside it, as paused() is taken under it.
            # RESTART copies the rest, then waits (up to HELD_WAIT_MS) for the reads still
            # using the log to end: reads starting meanwhile read the file alone, as it is all
            # copied, and the log starts over without any read held back.
            with self._hold_writes() as open_, self._pass_lock:
                if open_:
                    self._db.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        self.checkpoints += 1

    def _sync_file(self) -> None:
        """Flush the pages copied into the database file, through a descriptor SQLite holds.

        fsync acts on the file, whichever descriptor it is given; a descriptor of our own would
        do, but closing it would drop every POSIX lock this process holds on the file, SQLite's
        included. Where descriptors cannot be listed (no /proc), the held pass syncs instead.
        """
        try:
            wanted = os.stat(self._path)
            if not _same_file(self._fd, wanted):
                self._fd = next((fd for fd in _open_descriptors() if _same_file(fd, wanted)), -1)
            if self._fd >= 0:
                _fdatasync(self._fd)
        except OSError:
            pass  # closed meanwhile, or not a file: the held pass's own sync does it

    def _pass(self) -> int:
        """One PASSIVE checkpoint; the frames in the log when it started."""
        assert self._db is not None
        with self._pass_lock:
            _busy, frames, _copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Wait for a pass in progress to end, and start none meanwhile.

        For a checkpoint of the writer's own (the store's reset of a long log): SQLite refuses
        one while another runs. May be taken under the write lock, never the other way round.
        """
        with self._pass_lock:
            yield

    def hold_for_fork(self) -> None:
        """Before a fork: wait for a pass in progress to end, and start none until
        :meth:`release_after_fork` (in the parent; the child makes a checkpointer of its own).

        SQLite keeps the locks of a process's connections to a file in one table, which a fork
        copies: forked in the middle of a pass, the child finds the checkpoint lock held by a
        connection it never uses again, and every checkpoint of its own is refused for good.
        """
        self._pass_lock.acquire()

    def release_after_fork(self) -> None:
        """In the parent after a fork: passes may run again (see :meth:`hold_for_fork`)."""
        self._pass_lock.release()

    def close(self, timeout: float) -> None:
        """Stop the thread once its checkpoint in progress ends, and close its connection.

        The writer closes its connection after this: as the file's last connection, it
        checkpoints what remains and removes the log.
        """
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join(timeout)
