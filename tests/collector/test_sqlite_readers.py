"""Reads of the SQLite store: a bounded pool of connections, stopped at their deadline or close."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.collector import decoded, make_span, now_us

from tomograph.collector import sqlite_links, sqlite_store
from tomograph.collector.sqlite_readers import ReaderPool
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import QueryTimeout, StoreClosed

#: A query that never ends by itself: only an interrupt stops it.
RUNAWAY = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Outcome:
    """What a function run on its own thread returned or raised."""

    def __init__(self, function: Callable[[], object]) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self.thread.start()

    def _run(self, function: Callable[[], object]) -> None:
        try:
            self.value = function()
        except BaseException as error:
            self.error = error

    def join(self, timeout: float = 20.0) -> Outcome:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the read was not stopped"
        return self


def trace_of(number: int) -> list[dict[str, object]]:
    trace_id = f"{number:032x}"
    return [
        make_span(trace_id, "1" * 16, service="web", kind="SERVER"),
        make_span(trace_id, "2" * 16, parent_id="1" * 16, service="web", remote="db"),
    ]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_file_descriptors_stay_flat_across_thread_churn(tmp_path: Path) -> None:
    # Thread pools retire idle threads: a connection per thread leaked two descriptors each.
    store = SqliteSpanStore(tmp_path / "t.db", readers=4)
    store.accept(decoded(trace_of(1)))

    def cycle() -> None:  # eight fresh threads reading at once, then gone
        start = threading.Barrier(8)

        def read() -> None:
            start.wait(10)
            assert store.service_names() == ["web"]
            assert store.get_trace(f"{1:032x}") is not None

        threads = [threading.Thread(target=read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)

    try:
        with contextlib.ExitStack() as held:  # the pool opens all its connections now
            for _ in range(4):
                held.enter_context(store._readers.reading())
        assert store._readers.open_connections == 4
        cycle()
        before = open_fds()
        for _ in range(30):
            cycle()
        assert open_fds() - before <= 2  # room for a stray descriptor of the test runner
        assert store._readers.open_connections <= 4
    finally:
        store.close()


def test_a_read_past_its_deadline_is_interrupted(tmp_path: Path) -> None:
    pool = ReaderPool(lambda: sqlite3.connect(tmp_path / "t.db", check_same_thread=False), 1, 0.2)

    def runaway() -> object:
        with pool.reading() as reader:
            return reader.execute(RUNAWAY).fetchone()

    outcome = Outcome(runaway).join()
    assert isinstance(outcome.error, QueryTimeout)
    with pool.reading() as reader:  # the connection is usable again
        assert reader.execute("SELECT 1").fetchone() == (1,)
    pool.close()


def test_a_timeout_too_long_to_wait_for_is_no_limit(tmp_path: Path) -> None:
    pool = ReaderPool(lambda: sqlite3.connect(tmp_path / "t.db", check_same_thread=False), 1, 1e300)
    try:
        with pool.reading() as reader:
            assert reader.execute("SELECT 1").fetchone() == (1,)
            watchdog = pool._watchdog
            assert watchdog is not None
            watchdog.join(0.2)  # waiting 1e300 s for this read overflowed the clock: it died
            assert watchdog.is_alive()
    finally:
        pool.close()


def test_a_store_read_past_the_query_timeout_raises_query_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the links are left for the query to compute (the store's background pass would too)
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)
    store = SqliteSpanStore(tmp_path / "t.db", query_timeout=0.3)
    spans = decoded(trace_of(1) + trace_of(2) + trace_of(3))
    store.accept(spans)
    store.accept(spans)  # a retry reaches stored traces: their links wait for the query
    linked = threading.Event()
    links_of = sqlite_links.links_of

    def slow_links_of(spans: list[Any]) -> Any:
        if spans and not linked.is_set():
            linked.set()
            time.sleep(0.5)  # the work on the first trace alone outlasts the query's budget
        return links_of(spans)

    monkeypatch.setattr(sqlite_links, "links_of", slow_links_of)
    try:
        end_ms = now_us() // 1000 + 1000
        with pytest.raises(QueryTimeout):
            store.dependencies(end_ms, 3_600_000)
        assert linked.is_set()
        assert store.dependencies(end_ms, 3_600_000) == [  # computed again, in time
            {"parent": "web", "child": "db", "callCount": 3, "errorCount": 0}
        ]
    finally:
        store.close()


def test_close_interrupts_a_running_read_and_waits_until_it_stops(tmp_path: Path) -> None:
    store = SqliteSpanStore(tmp_path / "t.db")
    running = threading.Event()

    def runaway() -> object:
        with store._readers.reading() as reader:
            reader.db.set_progress_handler(lambda: running.set() or 0, 1000)
            return reader.execute(RUNAWAY).fetchone()

    outcome = Outcome(runaway)
    assert running.wait(10)
    store.close()
    # close() returned only once the read had let go of its connection: closing a
    # connection while another thread runs a query on it crashes the interpreter
    assert store._readers.open_connections == 0
    assert isinstance(outcome.join().error, StoreClosed)
    with pytest.raises(StoreClosed):
        store.service_names()
    with pytest.raises(StoreClosed):
        store.accept(decoded(trace_of(1)))


def test_interrupted_reads_leave_writes_going(tmp_path: Path) -> None:
    store = SqliteSpanStore(tmp_path / "t.db")
    try:
        store.interrupt_reads()  # what a server does as soon as it is told to stop
        with pytest.raises(StoreClosed):
            store.service_names()
        assert store.accept(decoded(trace_of(1))) == 2
    finally:
        store.close()
    reopened = SqliteSpanStore(tmp_path / "t.db")
    try:
        assert reopened.get_trace(f"{1:032x}") is not None
    finally:
        reopened.close()


def test_a_read_left_unfinished_does_not_hide_later_writes(tmp_path: Path) -> None:
    # An open cursor keeps its read snapshot: the next read on that connection saw old data.
    store = SqliteSpanStore(tmp_path / "t.db", readers=1)
    try:
        store.accept(decoded(trace_of(1) + trace_of(2)))
        with store._readers.reading() as reader:
            unfinished = reader.execute("SELECT row_id FROM spans")
            assert unfinished.fetchone() is not None
        store.accept(decoded(trace_of(3)))
        assert store.span_count() == 6
    finally:
        store.close()


@pytest.mark.parametrize("ends", ["normally", "with an error", "interrupted"])
def test_a_snapshot_ends_with_its_read(tmp_path: Path, ends: str) -> None:
    # a read transaction left open on a pooled connection would show the next read old data
    # and keep checkpoints from emptying the write-ahead log
    store = SqliteSpanStore(tmp_path / "t.db", readers=1, query_timeout=0.2)
    try:
        store.accept(decoded(trace_of(1)))
        with contextlib.suppress(RuntimeError, QueryTimeout):
            with store._readers.reading() as reader, reader.snapshot():
                assert reader.db.in_transaction
                assert reader.execute("SELECT count(*) FROM spans").fetchone() == (2,)
                if ends == "with an error":
                    raise RuntimeError("the read fails")
                if ends == "interrupted":
                    reader.execute(RUNAWAY).fetchone()
        with store._readers.reading() as reader:
            assert not reader.db.in_transaction
        store.accept(decoded(trace_of(2)))
        assert store.span_count() == 4
    finally:
        store.close()


def test_the_write_ahead_log_is_emptied_although_reads_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite restarts its log only when no read uses it; overlapping reads kept it growing.
    monkeypatch.setattr(sqlite_store, "_WAL_RESET_BYTES", 256 * 1024)
    store = SqliteSpanStore(tmp_path / "t.db", readers=2, max_age=None)
    wal = tmp_path / "t.db-wal"
    stop = threading.Event()

    def overlapping_reads(offset: int) -> None:
        while not stop.is_set():
            with store._readers.reading() as reader:  # a read of a few milliseconds
                for _ in reader.execute("SELECT body FROM spans LIMIT 200 OFFSET ?", (offset,)):
                    pass

    readers = [threading.Thread(target=overlapping_reads, args=(n * 100,)) for n in range(2)]
    try:
        for thread in readers:
            thread.start()
        largest = 0
        for batch in range(200):
            store.accept(decoded([s for n in range(1, 21) for s in trace_of(batch * 20 + n)]))
            largest = max(largest, wal.stat().st_size)
        assert largest < 8 * 1024 * 1024  # without the pauses: 16 MB and growing
        assert wal.stat().st_size < 4 * 1024 * 1024
    finally:
        stop.set()
        for thread in readers:
            thread.join(20)
        store.close()


def test_a_pool_held_for_a_fork_waits_for_reads_in_progress_and_lends_nothing_until_released(
    tmp_path: Path,
) -> None:
    # a fork must copy no read in the middle (see test_sqlite_store_fork): the hold waits
    pool = ReaderPool(lambda: sqlite3.connect(tmp_path / "t.db", check_same_thread=False), 2, 30)
    first_read = threading.Event()
    end_read = threading.Event()

    def read_until_told() -> None:
        with pool.reading() as reader:
            reader.execute("SELECT 1").fetchone()
            first_read.set()
            end_read.wait(30)

    reading = Outcome(read_until_told)
    try:
        assert first_read.wait(10)
        assert pool.hold_for_fork(0.05) is False  # the read is still going on
        end_read.set()
        reading.join()
        assert pool.hold_for_fork(10) is True  # ended: nothing left to wait for

        def read_again() -> object:
            with pool.reading() as reader:
                return reader.execute("SELECT 2").fetchone()

        second = Outcome(read_again)
        second.thread.join(0.2)
        assert second.thread.is_alive(), "a connection was lent during the fork"
        pool.release_after_fork()
        assert second.join().value == (2,)
    finally:
        end_read.set()
        pool.close()
