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
from tests.support.forked import in_child

from tomograph.collector import sqlite_store
from tomograph.collector.sqlite_links import TraceLinks
from tomograph.collector.sqlite_readers import ReaderPool
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import StoreClosed


def trace(number: int, spans: int = 10) -> list[dict[str, Any]]:
    trace_id = f"{number + 1:032x}"
    return decoded(
        [
            make_span(trace_id, f"{number:08x}{n:08x}", name=f"op{n}", tags={"n": str(n)})
            for n in range(1, spans + 1)
        ]
    )


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


def slow_opening(monkeypatch: pytest.MonkeyPatch, seconds: float) -> threading.Event:
    """Make the opening of a new file last ``seconds`` longer, inside its transaction (the
    write lock held); the event is set once an opening is that far."""
    in_opening = threading.Event()
    start_rollup = TraceLinks.start_rollup

    def start_rollup_slowly(writer: sqlite3.Connection, hour: int) -> None:
        start_rollup(writer, hour)
        in_opening.set()
        threading.Event().wait(seconds)

    monkeypatch.setattr(TraceLinks, "start_rollup", start_rollup_slowly)
    return in_opening


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


def test_a_fork_waits_for_a_checkpoint_in_progress(store: SqliteSpanStore) -> None:
    # forked in the middle of a pass, the child would find the checkpoint lock held for good
    released_at: list[float] = []

    def checkpoint_slowly(inside: threading.Event) -> None:
        with store._checkpoints.paused():  # what a pass in progress holds
            inside.set()
            threading.Event().wait(0.3)  # the fork waits for the pass to end
            released_at.append(time.monotonic())

    with on_a_thread(checkpoint_slowly):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        forked_at = time.monotonic()
        os.waitpid(pid, 0)
    assert released_at[0] <= forked_at


def test_a_store_being_opened_is_opened_before_a_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the opening of a new file writes its tables under the write lock: a child forked then
    # would never get that lock (and could not even open the file)
    monkeypatch.setattr(sqlite_store, "_BUSY_WAIT_MS", 500)
    monkeypatch.setattr(sqlite_store, "_OPEN_WAIT_MS", 500)
    path = tmp_path / "t.db"
    inside = slow_opening(monkeypatch, 0.3)
    opened: list[SqliteSpanStore] = []
    opener = threading.Thread(target=lambda: opened.append(SqliteSpanStore(path)))
    opener.start()
    try:
        assert inside.wait(30)

        def child_opens_and_writes() -> bool:
            child_store = SqliteSpanStore(path)
            child_store.accept(trace(5))
            return child_store.span_count() == 10

        assert in_child(child_opens_and_writes) == 0, "the child found the file locked"
    finally:
        opener.join(30)
        for store in opened:
            store.close()


def test_an_error_while_holding_for_a_fork_leaves_nothing_held(
    store: SqliteSpanStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a signal handler raising in the middle of the hook (Ctrl-C): CPython reports the error
    # and forks all the same, then runs the after-fork hook, which must release what was taken
    hold_for_fork = ReaderPool.hold_for_fork

    def interrupted(self: ReaderPool, timeout: float) -> bool:
        if self is store._readers:  # (other stores of this process are held as usual)
            raise KeyboardInterrupt
        return hold_for_fork(self, timeout)

    with monkeypatch.context() as patched:
        patched.setattr(ReaderPool, "hold_for_fork", interrupted)
        with pytest.raises(KeyboardInterrupt):
            sqlite_store._hold_for_fork()
    sqlite_store._release_after_fork()
    assert not store._write_lock.locked()
    taken: list[bool] = []  # another thread can fork now

    def take_and_release() -> None:
        taken.append(sqlite_store._FORKING.acquire(blocking=False))
        if taken[0]:
            sqlite_store._FORKING.release()

    other = threading.Thread(target=take_and_release)
    other.start()
    other.join(30)
    assert taken == [True]
    store.accept(trace(2))  # writes and reads go on
    assert store.span_count() == 20


def test_a_store_opened_while_a_fork_waits_for_another_joins_after_the_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the fork holds the stores it found; one whose opening began later would be copied in
    # the middle of it (its write lock held in the child for good)
    monkeypatch.setattr(sqlite_store, "_BUSY_WAIT_MS", 500)
    monkeypatch.setattr(sqlite_store, "_OPEN_WAIT_MS", 500)
    first = SqliteSpanStore(tmp_path / "a.db")
    in_opening = slow_opening(monkeypatch, 0.5)
    opened: list[SqliteSpanStore] = []
    opener = threading.Thread(target=lambda: opened.append(SqliteSpanStore(tmp_path / "b.db")))
    hold_for_fork = ReaderPool.hold_for_fork

    def open_another_meanwhile(self: ReaderPool, timeout: float) -> bool:
        if self is first._readers and not opener.is_alive() and not opened:
            opener.start()  # while the fork waits here (for a read of the first store)
            in_opening.wait(1.0)  # (the fork holds the opening back: this waits in vain)
        return hold_for_fork(self, timeout)

    monkeypatch.setattr(ReaderPool, "hold_for_fork", open_another_meanwhile)

    def child_opens_the_second_file() -> bool:
        SqliteSpanStore(tmp_path / "b.db").accept(trace(1))
        return True

    try:
        assert in_child(child_opens_the_second_file) == 0, "the child found the file locked"
    finally:
        opener.join(30)
        for store in (first, *opened):
            store.close()
    assert len(opened) == 1  # opened in the parent, after the fork


def test_a_store_the_child_cannot_reopen_is_closed_there_and_the_others_reopen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_BUSY_WAIT_MS", 500)
    (tmp_path / "gone").mkdir()
    gone = SqliteSpanStore(tmp_path / "gone" / "a.db")
    kept = SqliteSpanStore(tmp_path / "b.db")
    try:
        for path in (tmp_path / "gone").iterdir():  # its folder removed under it
            path.unlink()
        (tmp_path / "gone").rmdir()

        def child_uses_both() -> bool:
            kept.accept(trace(1))
            try:
                gone.accept(trace(2))
            except StoreClosed:
                return kept.span_count() == 10
            return False

        assert in_child(child_uses_both) == 0
    finally:
        kept.close()
        gone.close()
