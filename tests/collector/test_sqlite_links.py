"""Stored dependency links: the same answer as computing every trace of the window afresh."""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.collector import decoded, make_span, now_us
from tests.support.forked import in_child
from tests.support.stored_links import full_computation

from tomograph.collector import sqlite_links, sqlite_store
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import DependencyLink, QueryTimeout, SpanDict

MINUTE_MS = 60_000
#: Span timestamps of the generated traces fall in these minutes (µs).
BASE_US = 1_700_000_000_000_000 // (MINUTE_MS * 1000) * (MINUTE_MS * 1000)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteSpanStore]:
    """A store at ``tmp_path / "t.db"`` whose background links pass never runs: the test
    calls ``store._refresh_links()`` where it wants one."""
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)
    opened = SqliteSpanStore(tmp_path / "t.db")
    yield opened
    opened.close()


def pending(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM links_pending").fetchone()[0])
    finally:
        db.close()


# -- generated traces: RPCs with shared spans, messaging, local spans, errors, ids reused ------

SERVICES = ["web", "api", "db", "queue", ""]
IDS = [f"{n:016x}" for n in range(1, 9)]
KINDS = [None, "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]


@st.composite
def spans_of_trace(draw: st.DrawFn, trace_id: str) -> list[dict[str, Any]]:
    spans = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(KINDS))
        span = make_span(
            trace_id,
            draw(st.sampled_from(IDS)),
            parent_id=draw(st.none() | st.sampled_from(IDS)),
            service=draw(st.sampled_from(SERVICES)),
            remote=draw(st.none() | st.sampled_from(SERVICES[:-1])),
            kind=kind,
            timestamp=draw(st.none() | st.integers(0, 5 * MINUTE_MS * 1000).map(BASE_US.__add__)),
            tags={"error": "boom"} if draw(st.booleans()) else None,
        )
        if draw(st.booleans()):  # any kind: Zipkin unshares a CLIENT
            span["shared"] = True
        spans.append(span)
    return spans


@st.composite
def batches(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Spans of a few traces (some 128-bit ids share their low half), in shuffled batches."""
    lows = [f"{n:016x}" for n in draw(st.lists(st.integers(1, 6), min_size=1, max_size=5))]
    trace_ids = [draw(st.sampled_from(["", "1" * 16, "2" * 16])) + low for low in lows]
    spans = [span for trace_id in trace_ids for span in draw(spans_of_trace(trace_id))]
    order = draw(st.permutations(range(len(spans))))
    cuts = sorted(draw(st.lists(st.integers(0, len(spans)), max_size=4)))
    shuffled = [spans[i] for i in order]
    edges = [0, *cuts, len(spans)]
    return [shuffled[a:b] for a, b in itertools.pairwise(edges) if b > a]


WINDOWS = st.tuples(
    st.integers(-MINUTE_MS, 7 * MINUTE_MS).map((BASE_US // 1000).__add__),  # end, ms
    st.integers(1, 8 * MINUTE_MS),  # lookback, ms (also partial minutes)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.lists(WINDOWS, min_size=1, max_size=3))
def test_links_equal_the_full_computation_after_every_batch(
    batches: list[list[dict[str, Any]]], windows: list[tuple[int, int]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.db"
        store = SqliteSpanStore(path, max_age=None)
        try:
            for batch in batches:
                store.accept(decoded(batch))
                # the day around the spans, and windows cutting minutes anywhere
                for end_ts, lookback in [(BASE_US // 1000 + 43_200_000, 86_400_000), *windows]:
                    expected = full_computation(path, end_ts, lookback)
                    assert store.dependencies(end_ts, lookback) == expected
        finally:
            store.close()


def rpc(trace_no: int, client: str, server: str, ts: int, error: bool = False) -> list[SpanDict]:
    trace_id = f"{trace_no + 1:032x}"
    return [
        make_span(trace_id, "1" * 16, service=client, kind="SERVER", timestamp=ts),
        make_span(
            trace_id,
            "2" * 16,
            parent_id="1" * 16,
            service=client,
            remote=server,
            kind="CLIENT",
            timestamp=ts + 1,
            tags={"error": "timeout"} if error else None,
        ),
        {
            **make_span(trace_id, "2" * 16, parent_id="1" * 16, service=server, kind="SERVER"),
            "shared": True,
            "timestamp": ts + 2,
        },
    ]


def accept_per_service(store: SqliteSpanStore, traces: list[list[SpanDict]]) -> None:
    """Write each RPC trace as its services report it: the client's spans, then the server's.

    The second write reaches traces already stored, so their links wait to be computed (a
    trace whose spans all come in one write gets its links in that write).
    """
    store.accept(decoded([span for trace in traces for span in trace[:2]]))
    store.accept(decoded([span for trace in traces for span in trace[2:]]))


def test_a_trace_reported_by_each_service_separately_counts_one_call(tmp_path: Path) -> None:
    store = SqliteSpanStore(tmp_path / "t.db")
    try:
        client_half, server_half = [], []
        start = now_us()
        for n in range(20):
            spans = rpc(n, "web", "api", start + n, error=n % 4 == 0)
            client_half += spans[:2]
            server_half += spans[2:]
        store.accept(decoded(server_half))  # the server's batch first, the client's later
        end_ms = start // 1000 + 1000
        assert store.dependencies(end_ms, 60_000) == []  # servers alone: no caller known yet
        store.accept(decoded(client_half))
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "web", "child": "api", "callCount": 20, "errorCount": 5}
        ]
    finally:
        store.close()


def test_retention_takes_deleted_traces_out_of_the_links(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=60.0)
    try:
        start = now_us()
        store.accept(decoded([s for n in range(10) for s in rpc(n, "web", "api", start)]))
        store.dependencies(start // 1000 + 1000, 60_000)  # links stored for the first traces
        between = now_us()
        store.accept(decoded([s for n in range(10, 13) for s in rpc(n, "web", "db", start)]))
        # a span more for an old trace: it was received again, retention keeps it
        store.accept(decoded(rpc(0, "web", "api", start)[:1]))
        result = store.enforce_retention(now_us=between + 60_000_000)
        assert result.traces_deleted == 9
        end_ms = start // 1000 + 1000
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0},
            {"parent": "web", "child": "db", "callCount": 3, "errorCount": 0},
        ]
        assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    finally:
        store.close()


def test_size_retention_takes_deleted_traces_out_of_the_links(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None, max_bytes=200_000)
    try:
        start = now_us()
        for chunk in range(20):
            spans = [s for n in range(50) for s in rpc(chunk * 50 + n, "web", "api", start + n)]
            store.accept(decoded(spans))
            if chunk % 5 == 0:
                store.dependencies(start // 1000 + 1000, 60_000)
        assert store.enforce_retention().traces_deleted > 0
        end_ms = start // 1000 + 1000
        [link] = store.dependencies(end_ms, 60_000)
        assert link == full_computation(path, end_ms, 60_000)[0]
        assert 0 < link["callCount"] < 1000
    finally:
        store.close()


def as_version_1(path: Path) -> None:
    """Turn a database into what the first schema version wrote: no links, a narrower index."""
    db = sqlite3.connect(path)
    try:
        for table in ("link_hours", "link_minutes", "links_pending", "link_hours_upto"):
            db.execute(f"DROP TABLE {table}")
        db.execute("DROP INDEX traces_by_links_ts")
        for column in ("links_ts", "links"):
            db.execute(f"ALTER TABLE traces DROP COLUMN {column}")
        db.execute("DROP INDEX spans_by_name")
        db.execute("CREATE INDEX spans_by_name ON spans(service, name, ts)")
        db.execute("PRAGMA user_version = 1")
        db.commit()
    finally:
        db.close()


def test_a_version_1_database_gets_the_links_of_its_traces(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    start = now_us()
    store = SqliteSpanStore(path)
    store.accept(decoded([s for n in range(30) for s in rpc(n, "web", "api", start, n < 3)]))
    store.close()
    as_version_1(path)
    end_ms = start // 1000 + 1000
    expected = full_computation(path, end_ms, 60_000)
    assert expected == [{"parent": "web", "child": "api", "callCount": 30, "errorCount": 3}]

    store = SqliteSpanStore(path)
    try:
        assert store.dependencies(end_ms, 60_000) == expected
        # spans arriving later for the old traces, and new traces, count as before
        store.accept(decoded([s for n in range(30, 35) for s in rpc(n, "web", "db", start)]))
        assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)
    # the index of span names was rebuilt to cover what operations and searches read
    columns = [row[2] for row in db.execute("PRAGMA index_info(spans_by_name)")]
    assert columns == ["service", "name", "ts", "duration", "error", "trace_low", "kind"]
    db.close()


def test_links_not_computed_before_a_restart_are_computed_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.db"
    start = now_us()
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)
    store = SqliteSpanStore(path)
    accept_per_service(store, [rpc(n, "web", "api", start) for n in range(5)])
    store.close()  # before the background refresh ran
    assert pending(path) == 5
    monkeypatch.undo()
    store = SqliteSpanStore(path)
    try:
        store.accept(decoded(rpc(9, "web", "api", start)))
        assert store.dependencies(start // 1000 + 1000, 60_000) == [
            {"parent": "web", "child": "api", "callCount": 6, "errorCount": 0}
        ]
    finally:
        store.close()


def test_links_are_computed_in_the_background_without_a_query(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:
        store.accept(decoded(rpc(1, "web", "api", now_us())))
        deadline = time.monotonic() + 20
        while pending(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending(path) == 0
    finally:
        store.close()


def test_storing_computed_links_leaves_the_data_version_as_it_was(
    tmp_path: Path, store: SqliteSpanStore
) -> None:
    # Answers cached for a data version (/dependencies) stay valid: the links of traces already
    # written change no answer, so the background pass must not make them look stale.
    path = tmp_path / "t.db"
    start = now_us()
    accept_per_service(store, [rpc(1, "web", "api", start)])
    written = store.data_version()
    assert pending(path) == 1
    store._refresh_links()  # what the background pass does
    assert pending(path) == 0
    assert store.data_version() == written
    assert store.dependencies(start // 1000 + 1000, 60_000) == [
        {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0}
    ]
    store.accept(decoded(rpc(2, "web", "api", start)))
    assert store.data_version() > written


def test_links_stay_exact_while_batches_arrive_during_their_computation(tmp_path: Path) -> None:
    # Spans of the same traces keep arriving from two writers while two readers ask: a write
    # landing between reading a trace and storing its links must not be lost.
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, readers=2)
    start = now_us()
    traces = [
        rpc(n, f"svc-{n % 3}", f"svc-{(n + 1) % 3}", start + n, n % 5 == 0) for n in range(60)
    ]
    halves = [[s for t in traces for s in t[:2]], [s for t in traces for s in t[2:]]]
    errors: list[BaseException] = []
    writing = threading.Event()
    writing.set()

    def write(spans: list[SpanDict], seed: int) -> None:
        rng = random.Random(seed)
        rng.shuffle(spans)
        try:
            for at in range(0, len(spans), 7):
                store.accept(decoded(spans[at : at + 7]))
        except BaseException as error:
            errors.append(error)

    def ask() -> None:
        try:
            while writing.is_set():
                store.dependencies(start // 1000 + 1000, 60_000)
        except BaseException as error:
            errors.append(error)

    writers = [threading.Thread(target=write, args=(half, n)) for n, half in enumerate(halves)]
    askers = [threading.Thread(target=ask) for _ in range(2)]
    try:
        for thread in writers + askers:
            thread.start()
        for thread in writers:
            thread.join()
        writing.clear()
        for thread in askers:
            thread.join()
        assert errors == []
        end_ms = start // 1000 + 1000
        expected = full_computation(path, end_ms, 60_000)
        assert sum(link["callCount"] for link in expected) == 60
        assert store.dependencies(end_ms, 60_000) == expected
    finally:
        store.close()


@pytest.mark.parametrize("lookback_ms", [1, 59_999, 60_000, 60_001, 3 * 60_000 + 17])
def test_windows_cutting_minutes_count_exactly_the_traces_inside(
    tmp_path: Path, lookback_ms: int
) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None)
    try:
        # one trace every 7 seconds over five minutes, some exactly on a minute's edge
        stamps = [BASE_US + n * 7_000_000 for n in range(43)] + [BASE_US + 120_000_000 - 1]
        store.accept(decoded([s for n, ts in enumerate(stamps) for s in rpc(n, "web", "api", ts)]))
        for end_ms in range(BASE_US // 1000, BASE_US // 1000 + 300_000, 9_999):
            assert store.dependencies(end_ms, lookback_ms) == full_computation(
                path, end_ms, lookback_ms
            )
    finally:
        store.close()


def test_a_query_catching_up_on_many_traces_stops_at_the_query_timeout_and_keeps_its_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)  # no help from the background
    monkeypatch.setattr(sqlite_links, "ROUND_TRACES", 1)  # many short rounds
    links_of = sqlite_links.links_of

    def slow_links_of(spans: list[Any]) -> Any:
        time.sleep(0.05)  # each round stays within the timeout, all of them do not
        return links_of(spans)

    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, query_timeout=0.3)
    try:
        start = now_us()
        accept_per_service(store, [rpc(n, "web", "api", start) for n in range(40)])
        monkeypatch.setattr(sqlite_links, "links_of", slow_links_of)
        end_ms = start // 1000 + 1000
        with pytest.raises(QueryTimeout):
            store.dependencies(end_ms, 60_000)
        assert 0 < pending(path) < 40  # the rounds done are kept
        answer: list[DependencyLink] = []
        for _ in range(40):  # each try goes further
            try:
                answer = store.dependencies(end_ms, 60_000)
                break
            except QueryTimeout:
                continue
        assert answer == [{"parent": "web", "child": "api", "callCount": 40, "errorCount": 0}]
    finally:
        store.close()


def test_spans_written_while_their_trace_is_linked_are_linked_next_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)  # the passes are the test's
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    start = now_us()
    client_half = rpc(1, "web", "api", start)[:2]
    # the server names itself otherwise than the client did: the link changes when it arrives
    server_half = rpc(1, "web", "payments", start)[2:]
    read_pending = sqlite_links.TraceLinks.read_pending

    def read_then_write(links: sqlite_links.TraceLinks, *args: Any, **kwargs: Any) -> Any:
        computed = read_pending(links, *args, **kwargs)
        if computed and server_half:
            store.accept(decoded([server_half.pop()]))  # after the read, before the links land
        return computed

    monkeypatch.setattr(sqlite_links.TraceLinks, "read_pending", read_then_write)
    try:
        for span in client_half:  # the second write makes the trace pending
            store.accept(decoded([span]))
        end_ms = start // 1000 + 1000
        # what the background pass does; the server's span lands between its read and its write,
        # so the trace stays pending and its next round links it again
        store._refresh_links()
        assert not server_half
        assert pending(path) == 0
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "web", "child": "payments", "callCount": 1, "errorCount": 0}
        ]
        assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    finally:
        store.close()


HOUR_MS = 3_600_000


@pytest.mark.parametrize(
    "lookback_ms", [1, HOUR_MS - 1, HOUR_MS, HOUR_MS + 1, 2 * HOUR_MS + 17_003, 6 * HOUR_MS]
)
def test_windows_cutting_hours_count_exactly_the_traces_inside(
    tmp_path: Path, lookback_ms: int
) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None)
    try:
        hour_us = HOUR_MS * 1000
        base = BASE_US // hour_us * hour_us
        # a trace every 7 minutes over five hours, and some on the edges of hours and minutes
        stamps = [base + n * 420_000_000 for n in range(43)]
        stamps += [base + hour_us - 1, base + 2 * hour_us, base + 3 * hour_us + 60_000_000 - 1]
        store.accept(
            decoded(
                [
                    s
                    for n, ts in enumerate(stamps)
                    for s in rpc(n, f"svc-{n % 3}", f"svc-{(n + 1) % 3}", ts, n % 4 == 0)
                ]
            )
        )
        for end_ms in range(base // 1000 - HOUR_MS, base // 1000 + 6 * HOUR_MS, 1_020_017):
            assert store.dependencies(end_ms, lookback_ms) == full_computation(
                path, end_ms, lookback_ms
            )
    finally:
        store.close()


def test_a_forked_child_computes_the_links_of_its_writes_in_the_background(
    tmp_path: Path,
) -> None:
    # gunicorn --preload: the store is opened in the parent, which lives on, and used in the
    # child; threads do not survive a fork, so the child needs a refresher of its own
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:

        def child_links_get_computed() -> bool:
            store.accept(decoded(rpc(1, "web", "api", now_us())))
            deadline = time.monotonic() + 20
            while pending(path) and time.monotonic() < deadline:
                time.sleep(0.05)
            return pending(path) == 0

        assert in_child(child_links_get_computed) == 0, "the child's links stayed pending"
    finally:
        store.close()
    assert pending(path) == 0


def test_the_background_computes_a_round_longer_than_the_query_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the query timeout bounds what a client waits for; a round of the background refresher
    # stopped by it would start over every pass and never store anything
    links_of = sqlite_links.links_of

    def slow_links_of(spans: list[Any]) -> Any:
        time.sleep(0.05)  # 20 traces in one round: four times the timeout
        return links_of(spans)

    monkeypatch.setattr(sqlite_links, "links_of", slow_links_of)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, query_timeout=0.25)
    try:
        start = now_us()
        store.accept(decoded([s for n in range(20) for s in rpc(n, "web", "api", start)]))
        deadline = time.monotonic() + 30
        while pending(path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending(path) == 0
    finally:
        store.close()


def test_a_child_forked_while_the_parent_writes_can_write_and_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # gunicorn forks workers whenever it likes, while the parent's refresher may be in a write
    # transaction: the child must not inherit that lock held (nobody would ever release it).
    # The fork waits for the write lock (see test_sqlite_store_fork), here in vain: not long.
    monkeypatch.setattr(sqlite_store, "_FORK_WAIT", 0.2)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    release = threading.Event()
    holding = threading.Event()

    def hold_the_write_lock() -> None:
        with store._write_lock, store._links_lock:
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        assert holding.wait(30)

        def child_writes_and_answers() -> bool:
            start = now_us()
            store.accept(decoded(rpc(1, "web", "api", start)))
            links = store.dependencies(start // 1000 + 1000, 60_000)
            return [link["callCount"] for link in links] == [1]

        # (a child that hung on a lock held in its parent at the fork is killed and fails)
        assert in_child(child_writes_and_answers, timeout=30) == 0
        assert any("is still writing" in r.getMessage() for r in caplog.records)
    finally:
        release.set()
        holder.join()
        store.close()


def test_dependencies_answer_while_the_writer_holds_its_lock(tmp_path: Path) -> None:
    # readers never wait for the writer: a query counting traces whose links are not stored
    # yet computes them from its own snapshot instead of storing them (which needs the lock)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    release = threading.Event()
    holding = threading.Event()
    answers: list[list[DependencyLink]] = []

    def hold_the_write_lock() -> None:
        with store._write_lock, store._links_lock:
            holding.set()
            release.wait(60)

    try:
        start = now_us()
        accept_per_service(store, [rpc(n, "web", "api", start) for n in range(3)])
        holder = threading.Thread(target=hold_the_write_lock)
        holder.start()
        assert holding.wait(30)
        assert pending(path) == 3  # the background pass cannot store them now
        asker = threading.Thread(
            target=lambda: answers.append(store.dependencies(start // 1000 + 1000, 60_000))
        )
        asker.start()
        asker.join(30)
        answered = not asker.is_alive()
        release.set()
        holder.join()
        asker.join()
        assert answered, "/dependencies waited for the writer's lock"
        assert answers == [[{"parent": "web", "child": "api", "callCount": 3, "errorCount": 0}]]
    finally:
        release.set()
        store.close()


def test_dependencies_count_stored_and_pending_links_of_one_snapshot(
    tmp_path: Path, store: SqliteSpanStore
) -> None:
    # links stored for a trace, then spans that change them: the answer takes the stored
    # links out of the sums and counts the new ones, once
    path = tmp_path / "t.db"
    start = now_us()
    client_half = rpc(1, "web", "api", start)[:2]
    server_half = rpc(1, "web", "payments", start)[2:]
    store.accept(decoded(client_half + rpc(2, "web", "db", start, error=True)))
    store._refresh_links()
    assert pending(path) == 0
    store.accept(decoded(server_half))  # the server names itself otherwise
    accept_per_service(store, [rpc(3, "api", "db", start - 120_000_000)])  # out of the window
    assert pending(path) == 2
    end_ms = start // 1000 + 1000
    for _ in range(2):  # nothing is stored by asking
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "web", "child": "db", "callCount": 1, "errorCount": 1},
            {"parent": "web", "child": "payments", "callCount": 1, "errorCount": 0},
        ]
    assert pending(path) == 2
    assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    assert store.dependencies(end_ms, 600_000) == full_computation(path, end_ms, 600_000)


def stored_links(path: Path) -> list[tuple[int, str, str, int, int, int]]:
    """The links the traces' rows keep, a (trace, parent, child, ts, calls, errors) per trace
    and service pair: what is stored, not what a query would compute."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT trace_low, links_ts, links FROM traces WHERE links IS NOT NULL"
        ).fetchall()
    finally:
        db.close()
    return sorted(
        (low, parent, child, ts, calls, errors)
        for low, ts, packed in rows
        for parent, child, calls, errors in json.loads(packed)
    )


def test_a_trace_written_in_one_batch_gets_its_links_in_that_write(
    tmp_path: Path, store: SqliteSpanStore
) -> None:
    # no pending mark and no second transaction reading the spans back: the links of a trace
    # the file had no spans of are stored with them
    path = tmp_path / "t.db"
    start = now_us()
    store.accept(decoded(rpc(1, "web", "api", start) + rpc(2, "web", "db", start, True)))
    assert pending(path) == 0
    assert stored_links(path) == [
        (2, "web", "api", start, 1, 0),
        (3, "web", "db", start, 1, 1),
    ]
    end_ms = start // 1000 + 1000
    assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)


def test_spans_arriving_after_their_trace_was_linked_change_its_links(
    tmp_path: Path, store: SqliteSpanStore
) -> None:
    path = tmp_path / "t.db"
    start = now_us()
    end_ms = start // 1000 + 1000
    store.accept(decoded(rpc(1, "web", "api", start)[:2]))  # linked in its write
    assert pending(path) == 0
    assert store.dependencies(end_ms, 60_000) == [
        {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0}
    ]
    # the server names itself otherwise, and calls the database: late, in another batch
    late = rpc(1, "web", "payments", start)[2:]
    late.append(
        make_span(
            f"{2:032x}",
            "3" * 16,
            parent_id="2" * 16,
            service="payments",
            remote="db",
            kind="CLIENT",
            timestamp=start + 3,
        )
    )
    store.accept(decoded(late))
    assert pending(path) == 1
    expected = [
        {"parent": "payments", "child": "db", "callCount": 1, "errorCount": 0},
        {"parent": "web", "child": "payments", "callCount": 1, "errorCount": 0},
    ]
    assert store.dependencies(end_ms, 60_000) == expected  # computed by the query
    store._refresh_links()
    assert pending(path) == 0
    assert store.dependencies(end_ms, 60_000) == expected  # stored
    assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)


def test_a_trace_spread_over_many_batches_counts_as_if_written_at_once(tmp_path: Path) -> None:
    # each span of a chain of services comes in its own batch, among other traces' spans,
    # its root last (the trace's timestamp moves then)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:
        start = now_us()
        trace_id = "ab" * 16
        # servers of svc-0..3, each with a client span calling the next service
        chain = [
            make_span(
                trace_id,
                f"{n + 1:016x}",
                parent_id=f"{n:016x}" if n else None,
                service=f"svc-{n // 2}",
                remote=f"svc-{n // 2 + 1}" if n % 2 else None,
                kind="CLIENT" if n % 2 else "SERVER",
                timestamp=start + 1_000 * n,
                tags={"error": "x"} if n == 5 else None,
            )
            for n in range(8)
        ]
        end_ms = start // 1000 + 1000
        for n, span in enumerate(reversed(chain)):
            store.accept(decoded([span, *rpc(100 + n, "web", "api", start + n)]))
            assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
        expected = [
            {"parent": "svc-0", "child": "svc-1", "callCount": 1, "errorCount": 0},
            {"parent": "svc-1", "child": "svc-2", "callCount": 1, "errorCount": 0},
            {"parent": "svc-2", "child": "svc-3", "callCount": 1, "errorCount": 1},
            {"parent": "svc-3", "child": "svc-4", "callCount": 1, "errorCount": 0},
            {"parent": "web", "child": "api", "callCount": 8, "errorCount": 0},
        ]
        assert store.dependencies(end_ms, 60_000) == expected
        store._refresh_links()
        assert pending(path) == 0
        assert store.dependencies(end_ms, 60_000) == expected  # as stored
    finally:
        store.close()


def test_a_trace_in_two_batches_of_one_group_commit_is_linked_from_both(
    tmp_path: Path, store: SqliteSpanStore
) -> None:
    # batches waiting together are written in one transaction: the second finds the trace the
    # first created there, and marks it instead of storing links of half a trace
    path = tmp_path / "t.db"
    start = now_us()
    spans = rpc(1, "web", "api", start)
    halves = [decoded(spans[:2]), decoded(spans[2:])]
    group = [sqlite_store._prepare_rows(half, start) for half in halves]
    assert store._write_group(group) == [2, 1]
    assert pending(path) == 1
    end_ms = start // 1000 + 1000
    assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    store._refresh_links()
    assert store.dependencies(end_ms, 60_000) == [
        {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0}
    ]


def test_a_span_repeated_in_one_batch_is_linked_once(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:
        start = now_us()
        spans = rpc(1, "web", "api", start)
        store.accept(decoded(spans + spans[1:2] + spans))  # a client's retry, resent twice
        end_ms = start // 1000 + 1000
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0}
        ]
        assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    finally:
        store.close()


def test_links_stored_with_their_spans_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    start = now_us()
    end_ms = start // 1000 + 1000
    store = SqliteSpanStore(path)
    store.accept(decoded([s for n in range(4) for s in rpc(n, "web", "api", start)]))
    accept_per_service(store, [rpc(n, "api", "db", start) for n in range(4, 6)])
    store.close()
    store = SqliteSpanStore(path)
    try:
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "api", "child": "db", "callCount": 2, "errorCount": 0},
            {"parent": "web", "child": "api", "callCount": 4, "errorCount": 0},
        ]
        assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    finally:
        store.close()


def test_a_trace_reported_in_two_batches_is_linked_once_per_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first batch links the trace in its write; the second reaches a trace written moments
    # ago, so its links are left to the background, which reads all the trace's spans once
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)
    linked: list[int] = []
    links_of = sqlite_links.links_of

    def counting_links_of(spans: list[Any]) -> Any:
        linked.append(len(spans))
        return links_of(spans)

    monkeypatch.setattr(sqlite_links, "links_of", counting_links_of)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    try:
        start = now_us()
        accept_per_service(store, [rpc(1, "web", "api", start)])
        assert linked == [2]  # the client's two spans, with their write
        store._refresh_links()
        assert linked == [2, 3]  # the whole trace, once
        assert store.dependencies(start // 1000 + 1000, 60_000) == [
            {"parent": "web", "child": "api", "callCount": 1, "errorCount": 0}
        ]
    finally:
        store.close()


def test_a_trace_deleted_and_written_again_is_linked_from_its_new_spans(tmp_path: Path) -> None:
    # the store remembers the trace as written: its new spans are linked by the background
    # (the trace has no stored spans, no links are computed with the write)
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=60.0)
    try:
        start = now_us()
        end_ms = start // 1000 + 1000
        store.accept(decoded(rpc(1, "web", "api", start)))
        assert store.enforce_retention(now_us=now_us() + 120_000_000).traces_deleted == 1
        assert store.dependencies(end_ms, 60_000) == []
        store.accept(decoded(rpc(1, "web", "db", start)))
        assert store.dependencies(end_ms, 60_000) == [
            {"parent": "web", "child": "db", "callCount": 1, "errorCount": 0}
        ]
        store._refresh_links()
        assert pending(path) == 0
        assert store.dependencies(end_ms, 60_000) == full_computation(path, end_ms, 60_000)
    finally:
        store.close()


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.tuples(st.text(), st.text()),
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1)).map(list),
    )
)
def test_packed_links_are_the_json_text_older_versions_wrote_and_read(
    links: dict[tuple[str, str], list[int]],
) -> None:
    # any service name (quotes, backslashes, control and non-ASCII characters): the text
    # json.dumps makes, which files written before keep, and the links it reads back
    packed = sqlite_links.pack_links(links)
    rows = [[parent, child, calls, errors] for (parent, child), (calls, errors) in links.items()]
    assert packed == json.dumps(rows, separators=(",", ":"))
    assert sqlite_links.unpack_links(packed) == [tuple(row) for row in rows]
