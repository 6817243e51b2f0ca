"""A process forked while its span store is busy (gunicorn, multiprocessing, Celery prefork):
the child inherits no SQLite lock, so it can write and keep its log short."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.collector import decoded, make_span

from tomograph.collector import sqlite_store
from tomograph.collector.sqlite_store import SqliteSpanStore


def trace(number: int, spans: int = 10) -> list[dict[str, Any]]:
    trace_id = f"{number + 1:032x}"
    return decoded(
        [
            make_span(trace_id, f"{number:08x}{n:08x}", name=f"op{n}", tags={"n": str(n)})
            for n in range(1, spans + 1)
        ]
    )


def in_child(check: Callable[[], bool]) -> int:
    """Fork; the child runs ``check`` and exits 0 if it is true (3 if false, 1 if it raised).
    The parent gets the child's exit code, killing it if it runs for more than 60 s."""
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 1
        try:
            status = 0 if check() else 3
        finally:
            os._exit(status)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung")
        time.sleep(0.02)


@contextmanager
def on_a_thread(hold: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run ``hold(inside)`` on a thread, until it has set ``inside``; join it after the block."""
    inside = threading.Event()
    thread = threading.Thread(target=hold, args=(inside,))
    thread.start()
    try:
        assert inside.wait(30)
        yield
    finally:
        thread.join(30)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteSpanStore]:
    # a child that inherited the write lock held would wait this long, then fail its write
    monkeypatch.setattr(sqlite_store, "_BUSY_WAIT_MS", 500)
    store = SqliteSpanStore(tmp_path / "t.db", query_timeout=10)  # no read waits for ever
    store.accept(trace(1))
    yield store
    store.close()


def test_a_child_forked_in_the_middle_of_a_write_can_write(store: SqliteSpanStore) -> None:
    ended = threading.Event()

    def write_slowly(inside: threading.Event) -> None:
        with store._transaction() as db:
            db.execute("INSERT INTO span_names VALUES ('slow', 'SERVER', 'write')")
            inside.set()
            ended.wait(0.3)  # the fork waits for the commit; nothing else ends this write

    def child_writes() -> bool:
        store.accept(trace(2))
        return store.get_trace(f"{3:032x}") is not None

    with on_a_thread(write_slowly):
        assert in_child(child_writes) == 0, "the child found the store locked"
    ended.set()
    with closing(sqlite3.connect(store.path)) as db:  # the parent's write was committed
        slow = db.execute("SELECT count(*) FROM span_names WHERE service = 'slow'").fetchone()
    assert slow == (1,)
    store.accept(trace(3))  # and the parent's writes go on
    assert store.get_trace(f"{4:032x}") is not None


def test_a_child_forked_in_the_middle_of_a_read_can_start_its_log_over(
    store: SqliteSpanStore,
) -> None:
    wal = Path(f"{store.path}-wal")

    def read_slowly(inside: threading.Event) -> None:
        with store._readers.reading() as reader, reader.snapshot():
            reader.execute("SELECT count(*) FROM spans").fetchone()
            inside.set()
            threading.Event().wait(0.3)  # the fork waits for the read to end

    def child_empties_its_log() -> bool:
        for number in range(2, 40):
            store.accept(trace(number))
        store._reset_wal()  # what the store does when the log passes its limit
        return wal.stat().st_size == 0

    with on_a_thread(read_slowly):
        assert in_child(child_empties_its_log) == 0, "the child's log could not start over"
    assert store.span_count() == 390  # reads go on in the parent (the child wrote 380)


def test_a_fork_waits_a_bounded_time_for_a_read_that_does_not_end(
    store: SqliteSpanStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_store, "_FORK_WAIT", 0.2)
    forked = threading.Event()

    def read_until_forked(inside: threading.Event) -> None:
        with store._readers.reading() as reader, reader.snapshot():
            reader.execute("SELECT count(*) FROM spans").fetchone()
            inside.set()
            forked.wait(30)

    with caplog.at_level(logging.WARNING, "tomograph.collector"):
        with on_a_thread(read_until_forked):
            assert in_child(lambda: True) == 0
            forked.set()
    assert any("still answering a query" in r.getMessage() for r in caplog.records)
    assert store.span_count() == 10  # the pool lends connections again after the fork
