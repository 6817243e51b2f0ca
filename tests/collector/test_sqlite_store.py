"""What is particular to the SQLite span store: its file.

The contract it shares with the PostgreSQL store is in test_store_contract.py.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.collector import decoded, make_span, now_us

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


def test_the_index_of_names_of_an_earlier_version_2_file_is_rebuilt_with_the_kind(
    tmp_path: Path,
) -> None:
    # version 2 files written before operations were split by kind: their index lacks it,
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
    assert db.execute("PRAGMA user_version").fetchone() == (2,)  # older versions still read it
    db.close()
