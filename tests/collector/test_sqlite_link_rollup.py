"""The hours of dependency links rolled up from their minutes in the background: every window
answers as computed afresh from the spans, before, during and after roll-ups, whatever hour the
traces, late spans, recomputed links and deletions land in."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from tests.collector.test_sqlite_links import rpc
from tests.support.collector import decoded
from tests.support.stored_links import full_computation

from tomograph.collector import sqlite_store
from tomograph.collector.sqlite_links import TraceLinks
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import SpanDict

HOUR_MS = 3_600_000
HOUR_US = HOUR_MS * 1000
MINUTE_US = 60_000_000
#: The first of the hours the traces' timestamps fall in (µs).
BASE_HOUR_US = 1_700_000_000_000_000 // HOUR_US * HOUR_US
BASE_HOUR = BASE_HOUR_US // HOUR_US
LOOKBACKS_MS = [1, 59_999, 60_001, HOUR_MS - 1, HOUR_MS + 1, 2 * HOUR_MS + 17_003, 8 * HOUR_MS]


class Clock:
    """The store's wall clock (when spans are received, which hours are closed)."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock the test sets; no background pass (the test rolls up and links itself)."""
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)
    fake = Clock(BASE_HOUR_US)
    monkeypatch.setattr(sqlite_store, "_now_us", fake)
    return fake


def mark(path: Path) -> int:
    with sqlite3.connect(path) as db:
        [(hour,)] = db.execute("SELECT hour FROM link_hours_upto").fetchall()
    db.close()
    return int(hour)


def assert_hours_sum_their_minutes(path: Path) -> None:
    """link_hours holds, for each hour before the mark, exactly the sums of its minutes (a
    minute rolled up twice or not at all shows here), and nothing from the mark on."""
    with sqlite3.connect(path) as db:
        [(upto,)] = db.execute("SELECT hour FROM link_hours_upto").fetchall()
        hours = db.execute(
            "SELECT bucket, parent, child, calls, errors FROM link_hours ORDER BY 1, 2, 3"
        ).fetchall()
        minutes = db.execute("SELECT bucket, parent, child, calls, errors FROM link_minutes")
        summed: dict[tuple[int, str, str], list[int]] = {}
        for minute, parent, child, calls, errors in minutes:
            if minute // 60 < upto:
                counts = summed.setdefault((minute // 60, parent, child), [0, 0])
                counts[0] += calls
                counts[1] += errors
    db.close()
    assert hours == [(*key, calls, errors) for key, (calls, errors) in sorted(summed.items())]


def assert_windows_exact(store: SqliteSpanStore, path: Path) -> None:
    """Windows ending every 17 minutes or so over the hours of the traces, cutting hours and
    minutes anywhere, answer as computed afresh."""
    for end_ms in range(
        BASE_HOUR_US // 1000 - HOUR_MS, BASE_HOUR_US // 1000 + 9 * HOUR_MS, 1_020_017
    ):
        for lookback in LOOKBACKS_MS:
            assert store.dependencies(end_ms, lookback) == full_computation(path, end_ms, lookback)


def traces_in(rng: random.Random, first: int, hours: range, count: int) -> list[list[SpanDict]]:
    """``count`` RPC traces numbered from ``first`` at random times of ``hours`` (after the
    base hour), some on the edges of hours and minutes."""
    traces = []
    for n in range(first, first + count):
        hour = BASE_HOUR_US + rng.choice(hours) * HOUR_US
        ts = rng.choice(
            [
                hour,
                hour + HOUR_US - 1,
                hour + rng.randrange(60) * MINUTE_US - 1,
                hour + rng.randrange(HOUR_US),
            ]
        )
        services = rng.sample(["web", "api", "db", "queue"], 2)
        traces.append(rpc(n, *services, ts, error=rng.random() < 0.3))
    return traces


def write(store: SqliteSpanStore, traces: list[list[SpanDict]], split: bool) -> None:
    """Each trace in one write, or (``split``) its client's spans then its server's: the
    second write makes the trace pending, its links computed again."""
    if split:
        store.accept(decoded([span for trace in traces for span in trace[:2]]))
        store.accept(decoded([span for trace in traces for span in trace[2:]]))
    else:
        store.accept(decoded([span for trace in traces for span in trace]))


@pytest.mark.parametrize("seed", range(3))
def test_windows_stay_exact_through_roll_ups_late_spans_recomputes_and_retention(
    tmp_path: Path, clock: Clock, seed: int
) -> None:
    rng = random.Random(seed)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=3600.0)
    try:
        # hours 0 to 3 of the traces, and hour 6 (not closed yet when deletion comes)
        clock.now = BASE_HOUR_US + 3 * HOUR_US + 20 * MINUTE_US
        old = traces_in(rng, 0, range(4), 30) + traces_in(rng, 30, range(6, 7), 5)
        write(store, old[:20], split=False)
        write(store, old[20:], split=True)  # pending, computed by the queries
        assert_windows_exact(store, path)
        store._refresh_links()
        store._roll_up_links()  # hour 3 closed 20 minutes ago, not 10: hours 0 to 2
        assert mark(path) == BASE_HOUR + 3
        assert_hours_sum_their_minutes(path)
        assert_windows_exact(store, path)

        # an hour later: late traces into the rolled hours, others after the mark, and the
        # second halves of traces split over two writes, some in rolled hours
        clock.now += HOUR_US
        late = traces_in(rng, 100, range(3), 10)
        later = traces_in(rng, 110, range(3, 6), 10)
        split = traces_in(rng, 120, range(6), 12)
        store.accept(decoded([span for trace in split for span in trace[:2]]))
        write(store, late + later, split=False)
        store._roll_up_links()  # between the writes of the split traces: hour 3
        assert mark(path) == BASE_HOUR + 4
        store.accept(decoded([span for trace in split for span in trace[2:]]))
        assert_windows_exact(store, path)  # pending recomputed by the queries
        store._refresh_links()  # and stored: their old sums move in both tables
        assert_hours_sum_their_minutes(path)
        assert_windows_exact(store, path)

        # retention deletes the first writes' traces, in rolled hours and in hour 6
        clock.now += HOUR_US
        store._roll_up_links()
        assert mark(path) == BASE_HOUR + 5
        deleted = store.enforce_retention(clock.now)  # received over an hour ago
        assert deleted.traces_deleted == len(old)
        assert_hours_sum_their_minutes(path)
        assert_windows_exact(store, path)
    finally:
        store.close()
    reopened = SqliteSpanStore(path, max_age=None)
    try:
        assert_windows_exact(reopened, path)
        clock.now += 24 * HOUR_US
        reopened._roll_up_links()  # all hours of the traces
        assert mark(path) == (clock.now - 10 * MINUTE_US) // HOUR_US
        assert_hours_sum_their_minutes(path)
        assert_windows_exact(reopened, path)
    finally:
        reopened.close()


def test_a_first_roll_up_reaching_far_back_goes_a_day_per_transaction(
    tmp_path: Path, clock: Clock
) -> None:
    # traces over three days: the roll-up skips the empty hours before them, and stops each
    # transaction after a day of hours that have sums
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None)
    try:
        rng = random.Random(5)
        traces = traces_in(rng, 0, range(0, 72, 5), 40)
        write(store, traces, split=False)
        clock.now = BASE_HOUR_US + 100 * HOUR_US
        transactions = []
        roll_up = TraceLinks.roll_up

        def counted(links: TraceLinks, db: sqlite3.Connection, before_hour: int) -> bool:
            transactions.append(before_hour)
            return roll_up(links, db, before_hour)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(TraceLinks, "roll_up", counted)
            store._roll_up_links()
        assert mark(path) == BASE_HOUR + 99
        assert len(transactions) == 4  # a day from hours 0, 25, 50 on, the empty rest at once
        assert_hours_sum_their_minutes(path)
        for end_ms in range(
            BASE_HOUR_US // 1000, BASE_HOUR_US // 1000 + 75 * HOUR_MS, 7 * HOUR_MS + 1
        ):
            for lookback in (HOUR_MS + 1, 30 * HOUR_MS - 1):
                assert store.dependencies(end_ms, lookback) == full_computation(
                    path, end_ms, lookback
                )
    finally:
        store.close()


def test_a_read_in_progress_keeps_its_answer_through_a_roll_up(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None)
    try:
        write(store, traces_in(random.Random(1), 0, range(3), 30), split=False)
        clock.now = BASE_HOUR_US + 5 * HOUR_US
        end_ms, lookback = BASE_HOUR_US // 1000 + 3 * HOUR_MS - 1, 3 * HOUR_MS - 1
        start_us, end_us = (end_ms - lookback) * 1000, end_ms * 1000  # hours 0 and 1 whole
        expected = full_computation(path, end_ms, lookback)
        assert expected
        with store._readers.reading() as reader, reader.snapshot():
            assert TraceLinks.window(reader.db, start_us, end_us) == expected
            store._roll_up_links()  # commits while the read's snapshot is open
            assert mark(path) == BASE_HOUR + 4
            # the read sees the hours before the roll-up and the mark before it, together
            assert TraceLinks.window(reader.db, start_us, end_us) == expected
        assert store.dependencies(end_ms, lookback) == expected
    finally:
        store.close()


def as_version_5(path: Path) -> None:
    """Turn a file into what schema 5 left: link_hours holding the sums of every hour (those
    of its minutes), no mark."""
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE link_hours_upto")
        db.execute("DELETE FROM link_hours")
        db.execute(
            "INSERT INTO link_hours SELECT bucket / 60, parent, child, sum(calls), sum(errors)"
            " FROM link_minutes GROUP BY bucket / 60, parent, child"
        )
        db.execute("PRAGMA user_version = 5")
    db.close()


def test_a_version_5_file_keeps_its_hours_up_to_the_current_one(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "t.db"
    rng = random.Random(3)
    store = SqliteSpanStore(path, max_age=None)
    try:
        write(store, traces_in(rng, 0, range(8), 40), split=False)
    finally:
        store.close()
    as_version_5(path)
    clock.now = BASE_HOUR_US + 4 * HOUR_US + 30 * MINUTE_US  # hours 4 to 7 not closed yet
    upgraded = SqliteSpanStore(path, max_age=None)
    try:
        assert mark(path) == BASE_HOUR + 4
        assert_hours_sum_their_minutes(path)  # hours 4 to 7 left link_hours
        assert_windows_exact(upgraded, path)
        write(upgraded, traces_in(rng, 100, range(8), 20), split=True)
        upgraded._refresh_links()
        clock.now += 3 * HOUR_US
        upgraded._roll_up_links()
        assert mark(path) == BASE_HOUR + 7
        assert_hours_sum_their_minutes(path)
        assert_windows_exact(upgraded, path)
    finally:
        upgraded.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)
    db.close()


def test_a_new_file_starts_with_nothing_rolled_up(tmp_path: Path, clock: Clock) -> None:
    store = SqliteSpanStore(tmp_path / "t.db")
    store.close()
    assert mark(tmp_path / "t.db") == 0


def test_a_roll_up_replaces_hours_a_writer_unaware_of_the_mark_summed(
    tmp_path: Path, clock: Clock
) -> None:
    # an older tomograph still running on the upgraded file sums every hour in link_hours
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None)
    try:
        write(store, traces_in(random.Random(2), 0, range(3), 20), split=False)
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO link_hours VALUES (?, 'web', 'api', 5, 1)", (BASE_HOUR + 1,))
            db.execute("INSERT INTO link_hours VALUES (?, 'x', 'y', 5, 1)", (BASE_HOUR + 2,))
        db.close()
        clock.now = BASE_HOUR_US + 3 * HOUR_US + 20 * MINUTE_US
        store._roll_up_links()
        assert mark(path) == BASE_HOUR + 3
        assert_hours_sum_their_minutes(path)
        assert_windows_exact(store, path)
    finally:
        store.close()
