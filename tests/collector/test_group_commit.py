"""Group commit: uploads arriving together share one transaction, yet each learns its own result
and is answered only once its rows are committed."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.collector import decoded, make_span

from tomograph.collector import sqlite_store
from tomograph.collector.group_commit import GroupWriter
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import StoreClosed


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.005)


class Caller(threading.Thread):
    """A thread making one blocking call; its result or error is kept for the test."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as error:
            self.error = error

    def outcome(self) -> Any:
        self.join(30)
        assert not self.is_alive(), "the call never returned"
        if self.error is not None:
            return type(self.error)
        return self.result


class BlockingWrites:
    """A write function that records its groups and holds the first one until released."""

    def __init__(self) -> None:
        self.groups: list[list[Any]] = []
        self.writing = threading.Event()
        self.release = threading.Event()

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        self.groups.append(list(items))
        self.writing.set()
        assert self.release.wait(30)
        return [ValueError(item) if item == "bad" else item.upper() for item in items]


def start_blocked(
    writer: GroupWriter[Any, Any], writes: BlockingWrites, *items: str
) -> list[Caller]:
    """A first write in progress (held), then ``items`` handed over while it is."""
    first = Caller(lambda: writer.submit("first"))
    first.start()
    assert writes.writing.wait(30)
    callers = []
    for item in items:
        callers.append(Caller(lambda item=item: writer.submit(item)))
        callers[-1].start()
        wait_until(lambda: writer.waiting() == len(callers), f"{item} is handed over")
    return [first, *callers]


def test_writes_handed_over_during_a_write_go_together_each_with_its_result() -> None:
    writes = BlockingWrites()
    writer: GroupWriter[str, str] = GroupWriter(writes, "test-writer")
    callers = start_blocked(writer, writes, "a", "b", "c")
    writes.release.set()
    assert [caller.outcome() for caller in callers] == ["FIRST", "A", "B", "C"]
    assert writes.groups == [["first"], ["a", "b", "c"]]
    writer.close()


def test_an_error_reaches_only_the_caller_whose_write_failed() -> None:
    writes = BlockingWrites()
    writer: GroupWriter[str, str] = GroupWriter(writes, "test-writer")
    callers = start_blocked(writer, writes, "a", "bad", "c")
    writes.release.set()
    assert [caller.outcome() for caller in callers] == ["FIRST", "A", ValueError, "C"]
    writer.close()


def test_a_failing_group_fails_its_callers_and_the_writer_goes_on() -> None:
    calls = []

    def write(items: Sequence[str]) -> list[str]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("the disk caught fire")
        return list(items)

    writer: GroupWriter[str, str] = GroupWriter(write, "test-writer")
    with pytest.raises(RuntimeError, match="caught fire"):
        writer.submit("a")
    assert writer.submit("b") == "b"
    writer.close()


def test_close_lets_the_writes_handed_over_finish_then_refuses_new_ones() -> None:
    writes = BlockingWrites()
    writer: GroupWriter[str, str] = GroupWriter(writes, "test-writer")
    callers = start_blocked(writer, writes, "a", "b")
    closing = Caller(writer.close)
    closing.start()
    wait_until(lambda: writer._closing, "close has begun")
    with pytest.raises(StoreClosed):
        writer.submit("late")
    writes.release.set()
    assert closing.outcome() is None
    assert [caller.outcome() for caller in callers] == ["FIRST", "A", "B"]


# -- the SQLite store ------------------------------------------------------------------------


@contextmanager
def database_locked_by_another_connection(path: Path) -> Iterator[None]:
    """Another program holding the write lock: the store's writer waits for it (busy timeout)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteSpanStore]:
    """A store whose ``writing`` event is set when its writer starts a group."""
    write_group = SqliteSpanStore._write_group
    writing = threading.Event()

    def announced(self: SqliteSpanStore, batches: Any) -> Any:
        writing.set()
        return write_group(self, batches)

    monkeypatch.setattr(SqliteSpanStore, "_write_group", announced)
    store = SqliteSpanStore(tmp_path / "traces.db")
    store.accept(spans(1, 1, 1))  # the writer exists, the schema is there
    writing.clear()
    store.writing = writing  # type: ignore[attr-defined]
    yield store
    store.close()


def first_write_waiting_for_the_lock(store: SqliteSpanStore, batch: list[Any]) -> Caller:
    first = Caller(lambda: store.accept(batch))
    first.start()
    assert store.writing.wait(30)  # type: ignore[attr-defined]
    return first


def spans(trace: int, first: int, count: int) -> list[dict[str, Any]]:
    trace_id = f"{trace:032x}"
    return decoded(
        [
            make_span(trace_id, f"{n:016x}", timestamp=1_700_000_000_000_000 + n)
            for n in range(first, first + count)
        ]
    )


def stored_span_ids(path: Path) -> set[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        return set(db.execute("SELECT trace_id, span_id FROM spans"))


def test_uploads_waiting_together_are_committed_in_one_transaction_each_counted(
    store: SqliteSpanStore,
) -> None:
    before = store.data_version()
    with database_locked_by_another_connection(store.path):
        first = first_write_waiting_for_the_lock(store, spans(2, 1, 5))
        # overlapping batches: 2..6 shares 2..5 with the first, 4..9 shares with both
        later = [
            Caller(lambda: store.accept(spans(2, 2, 5))),
            Caller(lambda: store.accept(spans(2, 4, 6))),
            Caller(lambda: store.accept(spans(3, 1, 7))),
        ]
        for number, caller in enumerate(later, 1):
            caller.start()
            wait_until(lambda n=number: store._group_writer.waiting() == n, "handed over")
    assert first.outcome() == 5
    assert [caller.outcome() for caller in later] == [1, 3, 7]
    assert store.data_version() == before + 2  # the first alone, then the three together
    assert len(stored_span_ids(store.path)) == 1 + 9 + 7


def test_a_batch_the_database_refuses_fails_alone_in_its_group(store: SqliteSpanStore) -> None:
    too_late = spans(4, 1, 1)
    too_late[0]["timestamp"] = 2**64 - 1  # beyond SQLite's integers (the API refuses it first)
    with database_locked_by_another_connection(store.path):
        first = first_write_waiting_for_the_lock(store, spans(2, 1, 2))
        later = [
            Caller(lambda: store.accept(spans(3, 1, 3))),
            Caller(lambda: store.accept(too_late)),
            Caller(lambda: store.accept(spans(5, 1, 4))),
        ]
        for number, caller in enumerate(later, 1):
            caller.start()
            wait_until(lambda n=number: store._group_writer.waiting() == n, "handed over")
    assert first.outcome() == 2
    assert [caller.outcome() for caller in later] == [3, OverflowError, 4]
    assert len(stored_span_ids(store.path)) == 1 + 2 + 3 + 4


def test_an_error_after_the_commit_neither_fails_nor_miscounts_the_stored_batches(
    store: SqliteSpanStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_housekeeping() -> None:
        raise RuntimeError("after the commit")

    # every commit is followed by housekeeping (emptying the write-ahead log) that fails
    monkeypatch.setattr(store, "_request_wal_reset", broken_housekeeping)
    monkeypatch.setattr(sqlite_store, "_WAL_RESET_BYTES", -1)
    with database_locked_by_another_connection(store.path):
        first = first_write_waiting_for_the_lock(store, spans(2, 1, 2))
        later = [
            Caller(lambda: store.accept(spans(3, 1, 3))),
            Caller(lambda: store.accept(spans(4, 1, 4))),
        ]
        for number, caller in enumerate(later, 1):
            caller.start()
            wait_until(lambda n=number: store._group_writer.waiting() == n, "handed over")
    # committed together, so counted as new: not failed, not re-written one by one as duplicates
    assert first.outcome() == 2
    assert [caller.outcome() for caller in later] == [3, 4]
    assert len(stored_span_ids(store.path)) == 1 + 2 + 3 + 4


def test_closing_stores_the_batches_handed_over_before_it(store: SqliteSpanStore) -> None:
    with database_locked_by_another_connection(store.path):
        callers = [first_write_waiting_for_the_lock(store, spans(2, 1, 3))]
        for trace in (3, 4):
            callers.append(Caller(lambda t=trace: store.accept(spans(t, 1, 3))))
            callers[-1].start()
        wait_until(lambda: store._group_writer.waiting() == 2, "two batches wait")
        closing = Caller(store.close)
        closing.start()
        wait_until(lambda: store._group_writer._closing, "close has begun")
        with pytest.raises(StoreClosed):
            store.accept(spans(5, 1, 1))
    assert closing.outcome() is None
    assert [caller.outcome() for caller in callers] == [3, 3, 3]
    assert len(stored_span_ids(store.path)) == 1 + 9


def test_32_threads_uploading_at_once_each_learn_their_own_count(tmp_path: Path) -> None:
    store = SqliteSpanStore(tmp_path / "traces.db")
    barrier = threading.Barrier(32)

    def upload(thread: int) -> int:
        barrier.wait()
        # every thread sends 10 spans of its own and the 10 of trace 99 everybody sends
        return store.accept(spans(thread + 100, 1, 10) + spans(99, 1, 10))

    callers = [Caller(lambda t=t: upload(t)) for t in range(32)]
    for caller in callers:
        caller.start()
    counts = [caller.outcome() for caller in callers]
    assert [caller.error for caller in callers] == [None] * 32
    assert sorted(counts) == [10] * 31 + [20]  # trace 99 is new to exactly one
    assert len(stored_span_ids(store.path)) == 32 * 10 + 10
    store.close()


def test_a_writer_thread_that_could_not_start_is_started_by_the_next_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # out of threads (or a process limit): that write fails, the next ones must not wait for
    # a thread that never ran
    writer: GroupWriter[int, int] = GroupWriter(lambda items: [i * 2 for i in items], "doubler")
    start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError):
        writer.submit(1)
    monkeypatch.setattr(threading.Thread, "start", start)
    caller = Caller(lambda: writer.submit(2))
    caller.start()
    assert caller.outcome() == 4
    writer.close()
