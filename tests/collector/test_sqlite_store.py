"""What is particular to the SQLite span store: its file.

The contract it shares with the PostgreSQL store is in test_store_contract.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.collector import decoded, make_span

from tomograph.collector.sqlite_store import SqliteSpanStore

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
