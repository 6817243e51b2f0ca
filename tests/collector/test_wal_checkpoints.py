"""Checkpoints of the span database's write-ahead log run on their own thread, off the writes."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.collector import decoded, make_span
from tests.support.forked import in_child

from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.wal_checkpoints import BackgroundCheckpoints


def trace(number: int, spans: int = 10) -> list[dict[str, Any]]:
    trace_id = f"{number + 1:032x}"
    return decoded(
        [
            make_span(trace_id, f"{number:08x}{n:08x}", name=f"op{n}", tags={"n": str(n)})
            for n in range(1, spans + 1)
        ]
    )


def spans_in_the_file_alone(path: Path) -> int:
    """Spans in the database file itself, as a copy of it without its log would have them."""
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM spans").fetchone()[0])
    except sqlite3.DatabaseError:  # not even the tables are there yet
        return 0
    finally:
        db.close()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_committed_spans_reach_the_database_file_while_the_log_is_still_short(
    tmp_path: Path,
) -> None:
    # SQLite's own checkpoint waits for a thousand pages of log; the background copies what is
    # committed within an interval (a copy of the file alone, as a backup takes, has them)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:
        store.accept(trace(1))
        assert wait_until(lambda: spans_in_the_file_alone(path) == 10)
    finally:
        store.close()


def test_a_write_never_runs_a_checkpoint_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the background asleep, a log of thousands of pages stays uncopied: no commit waited
    # for the disk (SQLite's own checkpoint would run inside the commit past 1000 pages)
    monkeypatch.setattr(BackgroundCheckpoints, "wake", lambda self: None)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:
        for number in range(40):
            store.accept([s for n in range(10) for s in trace(number * 10 + n)])
        assert path.with_name("t.db-wal").stat().st_size > 4096 * 1000
        assert store.span_count() == 4000
        assert spans_in_the_file_alone(path) == 0
    finally:
        store.close()
    assert spans_in_the_file_alone(path) == 4000  # the last connection checkpointed at close
    assert not path.with_name("t.db-wal").exists()


def test_close_stops_the_checkpoint_thread_and_removes_the_log(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    store.accept(trace(1))
    assert wait_until(lambda: store._checkpoints.checkpoints > 0)
    thread = store._checkpoints._thread
    store.close()
    # this store's thread: another test's store left open would have one of the same name
    assert thread is not None and not thread.is_alive()
    assert not path.with_name("t.db-wal").exists()
    assert spans_in_the_file_alone(path) == 10


@pytest.fixture
def checkpointed(path: Path) -> Iterator[SqliteSpanStore]:
    """A store on ``path`` whose first trace (10 spans) has reached the database file."""
    store = SqliteSpanStore(path)
    try:
        store.accept(trace(1))
        assert wait_until(lambda: spans_in_the_file_alone(path) == 10)
        yield store
    finally:
        store.close()


def test_a_forked_child_checkpoints_its_own_writes(
    path: Path, checkpointed: SqliteSpanStore
) -> None:
    # gunicorn --preload: the store is opened in the parent; threads do not survive a fork, so
    # the child needs a checkpoint thread of its own, or its log grows until the reset
    store = checkpointed
    # the parent stops checkpointing (a gunicorn master writes nothing): otherwise its own
    # thread, woken by its links refresher, copies the child's writes too
    store._checkpoints.close(10)

    def child_writes_reach_the_file() -> bool:
        store.accept(trace(2))
        return wait_until(lambda: spans_in_the_file_alone(path) == 20)

    assert in_child(child_writes_reach_the_file) == 0, "the child's writes stayed in the log"


def test_a_forked_childs_writes_run_no_checkpoint_themselves(
    path: Path, checkpointed: SqliteSpanStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the child's writer is a connection of its own: without the setting, SQLite checkpoints
    # in its commits again
    store = checkpointed
    monkeypatch.setattr(BackgroundCheckpoints, "wake", lambda self: None)

    def child_writes_stay_in_the_log() -> bool:
        for number in range(1, 41):
            store.accept([s for n in range(10) for s in trace(number * 10 + n)])
        return spans_in_the_file_alone(path) == 10

    assert in_child(child_writes_stay_in_the_log) == 0, "a commit of the child checkpointed"


# -- the checkpointer on its own, on a plain SQLite file ---------------------------------------


def writer_of(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA wal_autocheckpoint = 0")
    db.execute("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
    return db


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
def writer(path: Path) -> Iterator[sqlite3.Connection]:
    """The file's writer, with a page committed to the log (closed after the checkpointer)."""
    db = writer_of(path)
    db.execute("INSERT INTO blobs VALUES (randomblob(4000))")
    yield db
    db.close()


def frames_in_log(path: Path) -> int:
    """Frames of the log in use (a PASSIVE checkpoint reports them; it copies nothing new
    once the log is copied)."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
    finally:
        db.close()


class Holds:
    """A ``hold_writes`` for tests: a lock the test's writer takes too; counts its uses."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    @contextmanager
    def __call__(self) -> Iterator[bool]:
        with self.lock:
            self.count += 1
            yield True


def test_a_long_log_is_caught_up_with_writes_held_so_that_it_starts_over(
    path: Path, writer: sqlite3.Connection
) -> None:
    # under steady writes a PASSIVE checkpoint never ends with the whole log copied, and SQLite
    # starts the log over only when it is: here a commit lands during each pass not holding
    # writes, and only the held one catches up. (A pass leaves a commit that landed during it
    # uncopied; so does one that a read begun before it keeps from copying, ending after.)
    writer.execute(
        "INSERT INTO blobs WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
        " WHERE i < 1500) SELECT randomblob(4000) FROM n"
    )
    holds = Holds()

    class CommitDuringPasses(sqlite3.Connection):
        passes = 0

        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if "wal_checkpoint" not in sql:
                return super().execute(sql, *args)
            CommitDuringPasses.passes += 1
            if CommitDuringPasses.passes > 2:  # the pass holding writes
                return super().execute(sql, *args)
            reader = sqlite3.connect(path, isolation_level=None)
            try:
                reader.execute("BEGIN")
                reader.execute("SELECT count(*) FROM blobs").fetchone()
                with holds.lock:
                    writer.execute("INSERT INTO blobs VALUES (randomblob(4000))")
                return super().execute(sql, *args)
            finally:
                reader.close()

    checkpoints = BackgroundCheckpoints(
        path,
        lambda: sqlite3.connect(path, factory=CommitDuringPasses, check_same_thread=False),
        holds,
    )
    try:
        checkpoints.wake()
        assert wait_until(lambda: checkpoints.checkpoints == 1)
        assert holds.count == 1
        writer.execute("INSERT INTO blobs VALUES (1)")  # starts the log over
        assert frames_in_log(path) < 10  # without the held pass: all 1,500 pages and more
        assert CommitDuringPasses.passes == 3
    finally:
        checkpoints.close(10)


def test_a_short_log_is_checkpointed_without_holding_writes(
    path: Path, writer: sqlite3.Connection
) -> None:
    holds = Holds()
    checkpoints = BackgroundCheckpoints(
        path, lambda: sqlite3.connect(path, check_same_thread=False), holds
    )
    try:
        checkpoints.wake()
        assert wait_until(lambda: checkpoints.checkpoints == 1)
        assert holds.count == 0
        writer.execute("INSERT INTO blobs VALUES (1)")
        assert frames_in_log(path) < 10
    finally:
        checkpoints.close(10)


def test_failed_checkpoints_are_logged_once_and_the_next_one_copies_the_log(
    path: Path, writer: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def connect() -> sqlite3.Connection:
        attempts.append(1)
        if len(attempts) <= 3:
            raise sqlite3.OperationalError("unable to open database file")
        return sqlite3.connect(path, check_same_thread=False)

    checkpoints = BackgroundCheckpoints(path, connect, Holds(), interval=0.01)
    try:
        with caplog.at_level(logging.INFO, "tomograph.collector"):
            for attempt in range(1, 4):
                checkpoints.wake()
                assert wait_until(lambda n=attempt: len(attempts) == n)
            checkpoints.wake()
            assert wait_until(lambda: checkpoints.checkpoints == 1)
        messages = [record.getMessage() for record in caplog.records]
        assert messages == [
            "checkpoint of the span database failed: unable to open database file",
            "checkpoints of the span database work again",
        ]
        writer.execute("INSERT INTO blobs VALUES (1)")
        assert frames_in_log(path) < 10
    finally:
        checkpoints.close(10)


def test_a_checkpoint_thread_that_died_is_started_again(
    path: Path, writer: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    died: list[type[BaseException] | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_type))
    attempts: list[int] = []

    def connect() -> sqlite3.Connection:
        attempts.append(1)
        if len(attempts) == 1:
            raise MemoryError  # not an sqlite3.Error: it ends the thread
        return sqlite3.connect(path, check_same_thread=False)

    checkpoints = BackgroundCheckpoints(path, connect, Holds(), interval=0.01)
    try:
        checkpoints.wake()
        first = checkpoints._thread
        assert first is not None
        first.join(10)
        assert not first.is_alive()
        assert died == [MemoryError]
        checkpoints.wake()
        assert wait_until(lambda: checkpoints.checkpoints == 1)
        assert checkpoints._thread is not first
    finally:
        checkpoints.close(10)


def test_wakes_after_close_start_nothing(path: Path) -> None:
    checkpoints = BackgroundCheckpoints(
        path, lambda: sqlite3.connect(path, check_same_thread=False), Holds()
    )
    checkpoints.close(10)
    checkpoints.wake()
    assert checkpoints._thread is None


_READ_AND_CLOSE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("SELECT count(*) FROM blobs").fetchone()
db.close()
"""


def test_syncing_the_file_keeps_the_locks_sqlite_holds_on_it(
    path: Path, writer: sqlite3.Connection
) -> None:
    # closing any descriptor of a file drops all this process's POSIX locks on it: without the
    # shared lock of our open connections, another process closing its connection would take
    # itself for the last one, and checkpoint and delete the log under us
    checkpoints = BackgroundCheckpoints(
        path, lambda: sqlite3.connect(path, check_same_thread=False), Holds()
    )
    try:
        checkpoints._sync_file()
        assert checkpoints._fd >= 0  # found SQLite's own descriptor of the file
        other = subprocess.run(
            [sys.executable, "-c", _READ_AND_CLOSE, str(path)],
            check=True,
        )
        assert other.returncode == 0
        assert path.with_name("t.db-wal").exists()
        assert writer.execute("SELECT count(*) FROM blobs").fetchone()[0] == 1
    finally:
        checkpoints.close(10)
