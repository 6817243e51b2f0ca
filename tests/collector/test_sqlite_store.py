"""What is particular to the SQLite span store: its file.

The contract it shares with the PostgreSQL store is in test_store_contract.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.collector import decoded, make_span, now_us
from tests.support.stored_links import full_computation

from tomograph.collector import sqlite_store
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import QueryRequest

T1 = "a" * 16 + "0000000000000001"


def test_retention_by_size_deletes_the_oldest_traces_and_shrinks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path, max_age=None, max_bytes=None)
    try:
        padding = "x" * 200
        for batch in range(40):
            store.accept(
                decoded(
                    [
                        make_span(
                            f"{batch * 100 + i + 1:032x}",
                            "1" * 16,
                            name=f"op{batch}",
                            tags={"payload": padding},
                        )
                        for i in range(100)
                    ]
                )
            )
        full = store.size_bytes()
        store.max_bytes = full // 4
        result = store.enforce_retention()
        assert result.traces_deleted > 0
        assert store.size_bytes() <= full // 4
        assert path.stat().st_size <= full // 4 + 64 * 1024  # pages went back to the file system
        # the newest traces are kept, the oldest went first
        assert store.get_trace(f"{39 * 100 + 100:032x}") is not None
        assert store.get_trace(f"{1:032x}") is None
    finally:
        store.close()


def test_a_file_left_without_its_schema_version_reopens(tmp_path: Path) -> None:
    # Earlier versions set the version after the schema's transaction: a crash in between
    # left tomograph's own tables with version 0, which is not another program's database.
    first = SqliteSpanStore(tmp_path / "t.db")
    first.accept(decoded([make_span(T1, "1" * 16)]))
    first.close()
    with sqlite3.connect(tmp_path / "t.db") as db:
        db.execute("PRAGMA user_version = 0")
    second = SqliteSpanStore(tmp_path / "t.db")
    try:
        assert len(second.get_trace(T1) or []) == 1
    finally:
        second.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteSpanStore]:
    opened = SqliteSpanStore(tmp_path / "t.db")
    yield opened
    opened.close()


def window(**criteria: object) -> QueryRequest:
    return dataclasses.replace(
        QueryRequest(end_ts=now_us() // 1000 + 1000, lookback=3_600_000), **criteria
    )


@pytest.mark.parametrize("probe", [1, 3, 4, 5, 12])
def test_search_finds_the_newest_matches_whatever_the_probe_reaches(
    store: SqliteSpanStore, monkeypatch: pytest.MonkeyPatch, probe: int
) -> None:
    monkeypatch.setattr(sqlite_store, "_PROBE_TRACES", probe)
    now = now_us()
    # twelve traces, two at each time; the even ones are errors
    store.accept(
        decoded(
            [
                make_span(
                    f"{'a' * 16}{n + 1:016x}",
                    "1" * 16,
                    service="web",
                    timestamp=now - 1_000_000 * (n // 2),
                    tags={"error": ""} if n % 2 == 0 else None,
                )
                for n in range(12)
            ]
        )
    )
    newest_errors = [f"{'a' * 16}{n + 1:016x}" for n in (0, 2, 4)]
    assert store.find_trace_ids(window(annotation_query={"error": ""}, limit=3)) == newest_errors
    every = store.find_trace_ids(window(service_name="web", limit=12))
    assert sorted(every) == sorted(f"{'a' * 16}{n + 1:016x}" for n in range(12))
    assert store.find_trace_ids(window(service_name="nobody", limit=3)) == []


#: (first probe, cost of a term row, rare name) forcing each path of a search.
SEARCH_PLANS = [(2000, 1.0, 5000), (3, 1.0, 0), (0, 0.0, 0), (0, 1e18, 0), (3, 0.0, 0)]
_spans = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),  # service
        st.dictionaries(st.sampled_from(["k", "e"]), st.sampled_from(["1", "2"]), max_size=2),
        st.booleans(),  # annotated "w"
    ),
    min_size=1,
    max_size=3,
)
_traces = st.lists(st.tuples(st.sampled_from([0, 1, 2, 3, 7200]), _spans), max_size=14)
_terms = st.dictionaries(st.sampled_from(["k", "e", "w"]), st.sampled_from(["", "1", "2"]))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    traces=_traces,
    terms=_terms.filter(bool),
    service=st.sampled_from([None, "a", "b"]),
    limit=st.integers(1, 5),
)
def test_every_search_plan_answers_what_the_spans_say(
    tmp_path_factory: pytest.TempPathFactory,
    traces: list[tuple[int, list[tuple[str, dict[str, str], bool]]]],
    terms: dict[str, str],
    service: str | None,
    limit: int,
) -> None:
    """Terms, services, times with ties and old matches, limits: each plan finds the newest
    matching traces a brute-force reading of the stored spans finds, in the same order."""
    now = now_us()
    spans = []
    expected = []
    for n, (seconds_ago, members) in enumerate(traces):
        trace_id = f"{'a' * 16}{n + 1:016x}"
        timestamp = now - seconds_ago * 1_000_000
        for m, (span_service, tags, annotated) in enumerate(members):
            spans.append(
                make_span(
                    trace_id,
                    f"{m + 1:016x}",
                    parent_id=None if m == 0 else f"{1:016x}",
                    service=span_service,
                    timestamp=timestamp + m,
                    tags=tags,
                    annotations=[(timestamp, "w")] if annotated else None,
                )
            )

        def has(key: str, value: str, members: list[tuple[str, dict[str, str], bool]]) -> bool:
            """Whether a span of the service has the term (a tag, or the annotation "w")."""
            return any(
                (service is None or span_service == service)
                and (
                    tags.get(key) == value
                    if value
                    else key in tags or (key, annotated) == ("w", True)
                )
                for span_service, tags, annotated in members
            )

        in_window = seconds_ago < 3600
        if in_window and all(has(key, value, members) for key, value in terms.items()):
            expected.append((timestamp, n + 1, trace_id))
    answer = [trace_id for _, _, trace_id in sorted(expected, reverse=True)[:limit]]
    store = SqliteSpanStore(tmp_path_factory.mktemp("plans") / "t.db", max_age=None)
    try:
        if spans:
            store.accept(decoded(spans))
        query = window(annotation_query=terms, service_name=service, limit=limit)
        for probe, term_row_cost, rare_name in SEARCH_PLANS:
            sqlite_store._PROBE_TRACES = probe
            sqlite_store._TERM_ROW_COST = term_row_cost
            sqlite_store._RARE_NAME_SPANS = rare_name
            assert store.find_trace_ids(query) == answer, (probe, term_row_cost)
    finally:
        store.close()
        sqlite_store._PROBE_TRACES, sqlite_store._TERM_ROW_COST = SEARCH_PLANS[0][:2]
        sqlite_store._RARE_NAME_SPANS = SEARCH_PLANS[0][2]


def test_the_index_of_names_of_an_earlier_file_is_rebuilt_with_the_kind(
    tmp_path: Path,
) -> None:
    # files written before operations were split by kind: their index lacks it,
    # and operations would read each span's row for its kind
    path = tmp_path / "t.db"
    now = now_us()
    SqliteSpanStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP INDEX spans_by_name")
    db.execute("CREATE INDEX spans_by_name ON spans(service, name, ts, duration, error, trace_low)")
    db.commit()
    db.close()
    store = SqliteSpanStore(path)
    try:
        store.accept(decoded([make_span("a" * 32, "1" * 16, kind="SERVER", timestamp=now)]))
        [stats] = store.operations("svc", now // 1000 + 1, 60_000)
        assert (stats["kind"], stats["count"]) == ("SERVER", 1)
    finally:
        store.close()
    db = sqlite3.connect(path)
    columns = [row[2] for row in db.execute("PRAGMA index_info(spans_by_name)")]
    assert columns == ["service", "name", "ts", "duration", "error", "trace_low", "kind"]
    assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)


DATA = Path(__file__).parent / "data"


def test_a_version_2_file_is_migrated_and_every_span_is_found_as_it_was(tmp_path: Path) -> None:
    # sqlite_v2.db was written by the store of schema version 2 (deflated span bodies), and
    # sqlite_v2_answers.json holds what that store answered for it (see data/make_sqlite_v2.py)
    path = tmp_path / "t.db"
    shutil.copy(DATA / "sqlite_v2.db", path)
    expected = json.loads((DATA / "sqlite_v2_answers.json").read_text())
    store = SqliteSpanStore(path, max_age=None)
    try:
        for trace_id, spans in expected["traces"].items():
            assert json.loads(store.get_trace_json(trace_id) or b"null") == spans
            assert store.get_trace(trace_id) == spans
        everything = [span for spans in expected["traces"].values() for span in spans]
        assert store.span_count() == len(everything) == 120
        for label, request in SEARCHES.items():
            found = store.find_trace_ids(QueryRequest(**request, **expected["window"]))
            assert found == expected["searches"][label]
        names = {service: store.span_names(service) for service in store.service_names()}
        assert names == expected["span_names"]
        # its links, kept a row per trace and service pair, are read from one row per trace
        for end_ms, lookback in [(1_700_000_043_200, 86_400_000), (1_700_000_012_500, 7_000)]:
            links = store.dependencies(end_ms, lookback)
            assert links == full_computation(path, end_ms, lookback) != []
        # a span stored again is recognized as a duplicate; a new one joins its old trace
        old_trace, old_spans = next(iter(expected["traces"].items()))
        assert store.accept(decoded(old_spans)) == 0
        added = make_span(old_trace, "f" * 16, parent_id=old_spans[0]["id"], service="late")
        assert store.accept(decoded([added])) == 1
        assert len(store.get_trace(old_trace) or []) == len(old_spans) + 1
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)
        # old bodies stay as they were written; new ones are plain JSON
        kinds = dict(db.execute("SELECT typeof(body), count(*) FROM spans GROUP BY 1").fetchall())
        assert kinds == {"blob": 120, "text": 1}
    db.close()


#: The searches whose version 2 answers sqlite_v2_answers.json holds.
SEARCHES: dict[str, dict[str, object]] = {
    "web-1": {"service_name": "web-1"},
    "error": {"annotation_query": {"error": ""}},
    "api-1 sql": {"service_name": "api-1", "annotation_query": {"sql": ""}},
    "db query": {"service_name": "db", "span_name": "query ünïcödé 2"},
}


def test_a_new_file_stores_span_bodies_as_plain_json(tmp_path: Path) -> None:
    store = SqliteSpanStore(tmp_path / "t.db")
    span = make_span(T1, "1" * 16, tags={"k": "ü" * 50})
    try:
        store.accept(decoded([span]))
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "t.db") as db:
        [(kind, body)] = db.execute("SELECT typeof(body), body FROM spans").fetchall()
    db.close()
    assert kind == "text"
    assert json.loads(body)["tags"] == {"k": "ü" * 50}


#: Tables as the store's statements name them (aliases included).
TABLES = {"spans", "s", "span_terms", "x", "traces", "t", "span_names"}
TABLES |= {"link_hours", "link_minutes", "trace_terms", "k"}


@pytest.mark.parametrize("plan", ["probe", "intersect", "rare name", "rarest term"])
def test_every_search_reads_through_an_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plan: str
) -> None:
    if plan != "rare name":
        monkeypatch.setattr(sqlite_store, "_RARE_NAME_SPANS", 0)
    if plan in ("intersect", "rarest term"):
        monkeypatch.setattr(sqlite_store, "_PROBE_TRACES", 0)
    # terms go on from their rows (free) or by probing the rest of the window (dear)
    monkeypatch.setattr(sqlite_store, "_TERM_ROW_COST", 0.0 if plan == "rarest term" else 1e18)
    statements: list[str] = []
    connect_reader = SqliteSpanStore._connect_reader

    def traced(store: SqliteSpanStore) -> sqlite3.Connection:
        db = connect_reader(store)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(SqliteSpanStore, "_connect_reader", traced)
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)  # links pending for the query
    store = SqliteSpanStore(tmp_path / "t.db")
    try:
        now = now_us()
        spans = decoded(
            [
                make_span(
                    f"{n + 1:032x}",
                    "1" * 16,
                    service=f"s{n % 3}",
                    name=f"op{n % 5}",
                    timestamp=now - n,
                    duration=n,
                    tags={"k": str(n % 2)},
                )
                for n in range(50)
            ]
        )
        store.accept(spans)
        store.accept(spans)  # a retry reaches stored traces: their links wait for the query
        for criteria in (
            {"service_name": "s1", "span_name": "op2"},
            {"service_name": "s1", "span_name": "op2", "annotation_query": {"k": "1"}},
            {"service_name": "s1", "min_duration": 10},
            {"min_duration": 10, "max_duration": 20},
            {"annotation_query": {"k": ""}},
            {"service_name": "s1", "remote_service_name": "s2"},
        ):
            store.find_trace_ids(window(limit=100, **criteria))
        store.operations("s1", now // 1000 + 1000, 3_600_000)
        store.dependencies(now // 1000 + 1000, 3_600_000)  # links of pending traces too
        store.get_trace_json(f"{1:032x}")
        store.tag_values("k")
        store.span_names("s1")
    finally:
        store.close()
    assert any("links FROM traces WHERE trace_low IN" in sql for sql in statements)
    # the plans of a rare name and of a rare term walk its rows, then their traces
    crossed = any("CROSS JOIN traces" in sql for sql in statements)
    assert crossed == (plan in ("rare name", "rarest term"))
    with sqlite3.connect(tmp_path / "t.db") as db:
        for statement in statements:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            for row in db.execute("EXPLAIN QUERY PLAN " + statement):
                words = row[3].split()
                if words[0] == "SCAN" and words[1] in TABLES:
                    assert "USING" in words, f"{row[3]} in {statement}"
    db.close()


def count_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter of the hundreds of SQLite VM steps the store's readers make from now on, for
    this thread (the store's background thread reads the links of new traces meanwhile)."""
    steps = [0]
    connect_reader = SqliteSpanStore._connect_reader
    caller = threading.get_ident()

    def counted(store: SqliteSpanStore) -> sqlite3.Connection:
        db = connect_reader(store)

        def step() -> int:
            if threading.get_ident() == caller:
                steps[0] += 1
            return 0

        db.set_progress_handler(step, 100)
        return db

    monkeypatch.setattr(SqliteSpanStore, "_connect_reader", counted)
    return steps


def test_a_search_for_a_rare_tag_reads_its_rows_not_the_newest_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = count_steps(monkeypatch)
    store = SqliteSpanStore(tmp_path / "t.db", max_age=None)
    try:
        now = now_us()
        store.accept(
            decoded(
                [
                    make_span(
                        f"{n + 1:016x}" * 2,
                        "1" * 16,
                        service="web",
                        timestamp=now - n * 1000,
                        tags={"request.id": "r-7"} if n == 2500 else {"k": "v"},
                    )
                    for n in range(3000)
                ]
            )
        )
        query = window(annotation_query={"request.id": "r-7"})
        steps[0] = 0
        assert store.find_trace_ids(query) == [f"{2501:016x}" * 2]
        from_rows = steps[0]
        monkeypatch.setattr(sqlite_store, "_TERM_ROW_COST", 1e18)  # never from the term's rows
        steps[0] = 0
        assert store.find_trace_ids(query) == [f"{2501:016x}" * 2]
        probing = steps[0]
    finally:
        store.close()
    assert from_rows * 20 < probing, (from_rows, probing)


def test_a_tag_search_reads_no_more_for_matches_outside_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag common long ago but rare in the window costs what the window costs, not what the
    tag's rows of all time cost (SQLite's VM steps, counted: independent of the machine)."""
    monkeypatch.setattr(sqlite_store, "_PROBE_TRACES", 10)  # the window is larger than a probe
    steps = count_steps(monkeypatch)

    def search_steps(old_matches: int) -> tuple[list[str], int]:
        now = now_us()
        store = SqliteSpanStore(tmp_path / f"{old_matches}.db", max_age=None)
        try:
            spans = [
                make_span(
                    f"{n + 1:016x}" * 2,
                    "1" * 16,
                    service="web",
                    timestamp=now - n * 1000,
                    tags={"error": "boom"} if n in (5, 40) else {"k": "v"},
                )
                for n in range(60)
            ] + [
                make_span(
                    "e" * 16 + f"{n + 1000:016x}",
                    "1" * 16,
                    service="web",
                    timestamp=now - 7_200_000_000 - n,
                    tags={"error": "boom"},
                )
                for n in range(old_matches)
            ]
            for start in range(0, len(spans), 1000):
                store.accept(decoded(spans[start : start + 1000]))
            steps[0] = 0
            found = store.find_trace_ids(window(annotation_query={"error": ""}, limit=20))
            return found, steps[0]
        finally:
            store.close()

    few, few_steps = search_steps(100)
    many, many_steps = search_steps(20_000)
    assert few == many == [f"{6:016x}" * 2, f"{41:016x}" * 2]
    assert many_steps < few_steps * 2, (few_steps, many_steps)


class _RetentionOnRelease:
    """A write lock that runs retention once, from the writing thread, right after a write
    lets the lock go: as another thread's retention could run between the two."""

    def __init__(self, store: SqliteSpanStore, at_us: int) -> None:
        self._lock, self._store, self._at_us = store._write_lock, store, at_us
        self.deleted: int | None = None

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)
        if self.deleted is None:
            self.deleted = -1  # once, and not from retention's own transactions
            self.deleted = self._store.enforce_retention(self._at_us).traces_deleted


def test_names_deleted_by_retention_just_after_their_write_come_back_with_new_spans(
    tmp_path: Path,
) -> None:
    store = SqliteSpanStore(tmp_path / "spans.db", max_age=3600)
    try:
        later = now_us() + 2 * 3600 * 1_000_000
        retention = _RetentionOnRelease(store, later)
        store._write_lock = retention  # type: ignore[assignment]
        store.accept(decoded([make_span("1" * 32, "1" * 16, service="web", name="get")]))
        assert retention.deleted == 1  # the span just written was old enough to go at once
        assert store.service_names() == []
        store.accept(decoded([make_span("2" * 32, "2" * 16, service="web", name="get")]))
        assert (store.service_names(), store.span_names("web")) == (["web"], ["get"])
    finally:
        store.close()
