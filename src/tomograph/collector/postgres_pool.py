"""A bounded pool of PostgreSQL connections for the span store, and what a URL may show.

At most ``size`` connections ever exist; a call borrows one and gives it back. A connection
that broke (the server restarted, the network dropped) is closed instead of given back, so
the next call opens a fresh one: a collector outlives a database failover without a restart.
Every connection is in autocommit mode; a store method opens its own transaction when it
needs one.

:meth:`ConnectionPool.interrupt` cancels the statements in progress (PostgreSQL's cancel
request) and refuses new calls: a stopping server does not wait for its longest query.

A forked child (gunicorn ``--preload``, ``multiprocessing``) starts with no connection: those it
inherits are its parent's sessions, on sockets the two processes now share.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from tomograph.collector.storage import QueryTimeout, StoreClosed

if TYPE_CHECKING:
    import psycopg

__all__ = ["ConnectionPool", "database_location"]


def database_location(url: str) -> str:
    """Where a PostgreSQL URL points, for logs and errors: never the password.

    >>> database_location("postgresql://spans:s3cret@db.internal:6432/traces?sslmode=require")
    'postgresql://spans@db.internal:6432/traces'
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:  # an unparsable URL: show its scheme only, it may hold a password
        return url.partition("://")[0] + "://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


class ConnectionPool:
    """At most ``size`` connections made by ``connect``; calls wait up to ``wait`` s for one.

    >>> pool = ConnectionPool(lambda: None, 2, wait=1.0)  # doctest: +SKIP
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[tuple[object, ...]]],
        size: int,
        wait: float | None,
        timeout_message: str = "no database connection became free in time",
    ) -> None:
        if size < 1:
            raise ValueError("a connection pool needs at least one connection")
        self._connect = connect
        self.size = size
        self._wait = wait
        self._timeout_message = timeout_message
        self.closing = False  # set once; read without the lock
        self._idle: list[psycopg.Connection[tuple[object, ...]]] = []
        self._busy: set[psycopg.Connection[tuple[object, ...]]] = set()
        self._opened = 0
        self._changed = threading.Condition()
        _POOLS.add(self)

    @property
    def open_connections(self) -> int:
        """How many connections exist now (idle or lent)."""
        return self._opened

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """Borrow a connection for one call; a broken one is closed, not given back."""
        conn = self._borrow()
        try:
            yield conn
        finally:
            self._give_back(conn)

    def _borrow(self) -> psycopg.Connection[tuple[object, ...]]:
        deadline = None if self._wait is None else time.monotonic() + self._wait
        with self._changed:
            while True:
                if self.closing:
                    raise StoreClosed("the span store is closed")
                if self._idle:
                    conn = self._idle.pop()
                    if conn.closed:  # broken while idle (the server restarted)
                        self._opened -= 1
                        continue
                    self._busy.add(conn)
                    return conn
                if self._opened < self.size:
                    self._opened += 1
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not self._changed.wait(left):
                    raise QueryTimeout(self._timeout_message)
        try:
            conn = self._connect()
        except BaseException:
            with self._changed:
                self._opened -= 1
                self._changed.notify_all()
            raise
        with self._changed:
            self._busy.add(conn)
        return conn

    def _give_back(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        from psycopg.pq import TransactionStatus

        usable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._changed:
            self._busy.discard(conn)
            if usable and not self.closing:
                self._idle.append(conn)
            else:
                self._opened -= 1
                conn.close()
            self._changed.notify_all()

    def interrupt(self) -> None:
        """Cancel the statements in progress (they fail) and refuse new calls."""
        with self._changed:
            self.closing = True
            busy = list(self._busy)
            self._changed.notify_all()
        for conn in busy:
            try:
                conn.cancel_safe(timeout=2.0)
            except Exception:  # the connection may have finished or broken meanwhile
                pass

    def _forget_inherited(self) -> None:
        """In a forked child: drop the parent's connections, without ending its sessions.

        Used by both processes, one session answers each with the other's results, or with
        protocol errors; closed normally here, it would end for the parent too (see _detach).
        The lock is new: a thread of the parent may have held it at the fork.
        """
        inherited = [*self._idle, *self._busy]
        self._idle, self._busy, self._opened = [], set(), 0
        self._changed = threading.Condition()
        for conn in inherited:
            _detach(conn)

    def close(self, wait: float = 5.0) -> None:
        """Refuse new calls, wait up to ``wait`` s for those in progress, close the connections."""
        with self._changed:
            self.closing = True
            self._changed.wait_for(lambda: not self._busy, wait)
            for conn in self._idle:
                conn.close()
                self._opened -= 1
            self._idle.clear()


def _detach(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Close this process's copy of a connection it shares with another process (after a fork).

    Closing a connection sends PostgreSQL a Terminate message over its socket, which would end
    the session of the other process too; so this process's descriptor of the socket is first
    pointed at /dev/null, where the message goes instead (the other process's is untouched).
    """
    try:
        socket = conn.fileno()
    except Exception:  # closed already: nothing is shared
        return
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, socket)
    finally:
        os.close(null)
    with suppress(Exception):
        conn.close()


#: Every pool of this process, for the fork hook (weakly: a pool that is gone needs nothing).
_POOLS: weakref.WeakSet[ConnectionPool] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for pool in list(_POOLS):
        pool._forget_inherited()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_inherited_connections)
