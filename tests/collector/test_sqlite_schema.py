"""The SQLite store's schema versions: files of version 3 opened by today's store, files of a
newer version refused, term rows and the terms listed per trace kept in step."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.collector import decoded, make_span, now_us

from tomograph.collector import sqlite_store
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import QueryRequest, StoreOpenError

REPO = Path(__file__).resolve().parents[2]

#: The tables of schema version 3, as that version created them (written out here, not taken
#: from the store: the file must look as the old code left it).
SCHEMA_3 = """
CREATE TABLE spans (
    row_id INTEGER PRIMARY KEY,
    trace_low INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_id TEXT,
    kind TEXT,
    shared INTEGER NOT NULL,
    name TEXT NOT NULL,
    service TEXT NOT NULL,
    remote_service TEXT NOT NULL,
    ts INTEGER,
    duration INTEGER,
    error INTEGER NOT NULL,
    digest BLOB NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX spans_by_trace ON spans(trace_low, digest);
CREATE INDEX spans_by_name ON spans(service, name, ts, duration, error, trace_low, kind);
CREATE INDEX spans_by_duration ON spans(duration);
CREATE TABLE span_terms (
    trace_low INTEGER NOT NULL,
    term TEXT NOT NULL,
    value TEXT NOT NULL,
    service TEXT NOT NULL,
    PRIMARY KEY (trace_low, term, value, service)
) WITHOUT ROWID;
CREATE INDEX terms_by_value ON span_terms(term, value);
CREATE TABLE traces (
    trace_low INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    ts INTEGER,
    root_ts INTEGER,
    received INTEGER NOT NULL
);
CREATE INDEX traces_by_ts ON traces(ts);
CREATE INDEX traces_by_received ON traces(received);
CREATE TABLE span_names (
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (service, kind, name)
) WITHOUT ROWID;
CREATE TABLE trace_links (
    trace_low INTEGER NOT NULL,
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    ts INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (trace_low, parent, child)
) WITHOUT ROWID;
CREATE INDEX trace_links_by_ts ON trace_links(ts, parent, child, calls, errors);
CREATE TABLE link_hours (
    bucket INTEGER NOT NULL, parent TEXT NOT NULL, child TEXT NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, PRIMARY KEY (bucket, parent, child)
) WITHOUT ROWID;
CREATE TABLE link_minutes (
    bucket INTEGER NOT NULL, parent TEXT NOT NULL, child TEXT NOT NULL,
    calls INTEGER NOT NULL, errors INTEGER NOT NULL, PRIMARY KEY (bucket, parent, child)
) WITHOUT ROWID;
CREATE TABLE links_pending (trace_low INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
PRAGMA user_version = 3;
"""

#: Tag keys, values and services with the characters the term lists use as separators and
#: escape, and words made of their pieces (which must not match).
KEYS = ["http.method", "a\x1eb", "a", "b", "\x1b1", "\x1f", "error"]
VALUES = ["GET", "x\x1fy", "x", "", "\x1b", "v" * 300]
SERVICES = ["web", "s\x1ez", "s", "api"]


def low_of(trace_id: str) -> int:
    low = int(trace_id[-16:], 16)
    return low - (1 << 64) if low >= 1 << 63 else low


def version_3_spans(traces: int, now: int) -> list[dict[str, Any]]:
    spans = []
    for n in range(traces):
        trace_id = f"{n + 1:016x}" * 2
        for m in range(3):
            tags = {KEYS[(n + m * 3) % len(KEYS)]: VALUES[(n * 5 + m) % len(VALUES)]}
            if (n + m) % 4 == 0:
                tags[KEYS[(n + 1) % len(KEYS)]] = VALUES[n % len(VALUES)]
            spans.append(
                make_span(
                    trace_id,
                    f"{m + 1:016x}",
                    parent_id=None if m == 0 else f"{1:016x}",
                    service=SERVICES[(n + m) % len(SERVICES)],
                    name=f"op{m}",
                    timestamp=now - n * 1_000_000 + m,
                    duration=10 + m,
                    tags=tags,
                    annotations=[(now, KEYS[(n + m) % len(KEYS)])] if m == 1 else None,
                )
            )
    return spans


def write_version_3(path: Path, spans: list[dict[str, Any]]) -> None:
    """The file schema version 3 wrote for ``spans``: its rows and terms as it made them."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA_3)
    db.execute("BEGIN")
    for span in spans:
        low = low_of(span["traceId"])
        service = span["localEndpoint"]["serviceName"]
        body = json.dumps(span, separators=(",", ":")).encode()
        db.execute(
            "INSERT INTO spans (trace_low, trace_id, span_id, parent_id, kind, shared, name,"
            " service, remote_service, ts, duration, error, digest, body)"
            " VALUES (?, ?, ?, ?, ?, 0, ?, ?, '', ?, ?, 0, ?, CAST(? AS TEXT))",
            (
                low,
                span["traceId"],
                span["id"],
                span.get("parentId"),
                span.get("kind"),
                span["name"],
                service,
                span["timestamp"],
                span["duration"],
                hashlib.blake2b(body, digest_size=12).digest(),
                body,
            ),
        )
        terms = [(key, value if len(value) <= 256 else "") for key, value in span["tags"].items()]
        terms += [(annotation["value"], "") for annotation in span.get("annotations", ())]
        db.executemany(
            "INSERT OR IGNORE INTO span_terms VALUES (?, ?, ?, ?)",
            [(low, term, value, service) for term, value in terms],
        )
        db.execute(
            "INSERT INTO traces VALUES (?, ?, ?, ?, ?) ON CONFLICT (trace_low) DO UPDATE SET"
            " ts = min(traces.ts, excluded.ts), root_ts = coalesce(traces.root_ts,"
            " excluded.root_ts)",
            (
                low,
                span["traceId"],
                span["timestamp"],
                None if span.get("parentId") else span["timestamp"],
                now_us(),
            ),
        )
        db.execute(
            "INSERT OR IGNORE INTO span_names VALUES (?, 'span', ?)", (service, span["name"])
        )
    db.execute("COMMIT")
    db.close()


def has_term(span: dict[str, Any], key: str, value: str, service: str | None) -> bool:
    """Whether ``span`` matches one term of annotationQuery (read from the span itself)."""
    if service is not None and span["localEndpoint"]["serviceName"] != service:
        return False
    tags = span.get("tags", {})
    if value:  # values longer than the store indexes are found by their key only
        return tags.get(key) == value and len(value) <= sqlite_store.MAX_INDEXED_VALUE
    annotations = [annotation["value"] for annotation in span.get("annotations", ())]
    return key in tags or key in annotations


def assert_every_search_answers_what_the_spans_say(
    store: SqliteSpanStore, spans: list[dict[str, Any]], now: int
) -> None:
    searched = 0
    for key in KEYS:
        for value in [*VALUES, ""]:
            for service in [None, *SERVICES]:
                expected = {
                    span["traceId"] for span in spans if has_term(span, key, value, service)
                }
                request = QueryRequest(
                    service_name=service,
                    annotation_query={key: value},
                    end_ts=now // 1000 + 1000,
                    lookback=86_400_000,
                    limit=10_000,
                )
                for probe, term_row_cost in ((2000, 1.0), (0, 0.0), (0, 1e18), (2000, 1e18)):
                    sqlite_store._PROBE_TRACES, sqlite_store._TERM_ROW_COST = probe, term_row_cost
                    assert set(store.find_trace_ids(request)) == expected, (key, value, service)
                searched += bool(expected)
    assert searched > 50  # most searches find something


@pytest.fixture
def plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lets a test set the search plan's knobs; each is put back afterwards."""
    monkeypatch.setattr(sqlite_store, "_PROBE_TRACES", sqlite_store._PROBE_TRACES)
    monkeypatch.setattr(sqlite_store, "_TERM_ROW_COST", sqlite_store._TERM_ROW_COST)
    monkeypatch.setattr(sqlite_store, "_RARE_NAME_SPANS", 0)


@pytest.mark.parametrize("version", [3, 0])
def test_a_version_3_file_keeps_every_span_findable_by_tag_and_annotation(
    tmp_path: Path, plans: None, version: int
) -> None:
    now = now_us()
    spans = version_3_spans(40, now)
    path = tmp_path / "t.db"
    write_version_3(path, spans)
    if version == 0:  # as a crash between its tables and its version left a file of version 1
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA user_version = 0")
        db.close()
    store = SqliteSpanStore(path, max_age=None)
    try:
        assert store.span_count() == len(spans)
        assert_every_search_answers_what_the_spans_say(store, spans, now)
        # new spans join the migrated ones, in their old traces and in new ones
        late = make_span(spans[0]["traceId"], "9" * 16, service="late", tags={"a": "x"})
        more = [*version_3_spans(45, now)[len(spans) :], late]
        store.accept(decoded(more))
        assert_every_search_answers_what_the_spans_say(store, spans + more, now)
        assert store.tag_values("http.method") == sorted(
            {span["tags"]["http.method"] for span in spans + more if "http.method" in span["tags"]}
            - {"", "v" * 300}
        )
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        objects = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "terms_by_value" not in objects
        assert "span_terms_3" not in objects
    db.close()


def test_retention_deletes_every_term_of_a_migrated_file_and_of_new_spans(
    tmp_path: Path,
) -> None:
    now = now_us()
    spans = version_3_spans(30, now)
    path = tmp_path / "t.db"
    write_version_3(path, spans)
    store = SqliteSpanStore(path, max_age=3600)
    try:
        store.accept(decoded(version_3_spans(60, now)[len(spans) :]))
        with sqlite3.connect(path) as db:
            terms = db.execute("SELECT count(*) FROM span_terms").fetchone()[0]
        db.close()
        assert terms > 100
        result = store.enforce_retention(now_us() + 7200 * 1_000_000)
        assert result.traces_deleted == 60
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        left = [db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES]
    db.close()
    assert left == [0] * len(TABLES)


TABLES = ("spans", "span_terms", "trace_terms", "traces")


def test_retention_keeps_the_terms_of_the_traces_it_keeps(
    tmp_path: Path, plans: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = now_us()
    spans = version_3_spans(20, now)
    store = SqliteSpanStore(tmp_path / "t.db", max_age=3600)
    try:
        store.accept(decoded(spans[:30]))
        # the traces written next are received an hour later: retention then keeps them
        monkeypatch.setattr(sqlite_store, "_now_us", lambda: now + 3600 * 1_000_000)
        kept = decoded(spans[30:])
        store.accept(kept)
        store.enforce_retention(now + 3660 * 1_000_000)
        assert store.span_count() == len(kept)
        assert_every_search_answers_what_the_spans_say(store, kept, now)
    finally:
        store.close()


def test_a_file_of_a_newer_schema_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SqliteSpanStore(path)
    store.accept(decoded([make_span("a" * 32, "1" * 16)]))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {sqlite_store._SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreOpenError, match=r"unknown schema version 5 .*newer tomograph"):
        SqliteSpanStore(path)
    assert path.read_bytes() == before


OPEN_AND_SEARCH = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tomograph.collector.sqlite_store import SqliteSpanStore
    from tomograph.collector.storage import QueryRequest
    path, go = Path(sys.argv[1]), Path(sys.argv[2])
    while not go.exists():  # both start migrating as close together as they can
        time.sleep(0.001)
    store = SqliteSpanStore(path, max_age=None)
    request = QueryRequest(annotation_query={"http.method": "GET"}, end_ts=int(sys.argv[3]),
                           lookback=86_400_000, limit=100_000)
    print(store.span_count(), len(store.find_trace_ids(request)))
    store.close()
    """
)


def test_two_collectors_opening_a_version_3_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    now = now_us()
    spans = version_3_spans(3000, now)
    path = tmp_path / "t.db"
    write_version_3(path, spans)
    go = tmp_path / "go"
    end_ts = str(now // 1000 + 1000)
    collectors = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AND_SEARCH, str(path), str(go), end_ts],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    with_get = {span["traceId"] for span in spans if span["tags"].get("http.method") == "GET"}
    for collector in collectors:
        out, err = collector.communicate(timeout=120)
        assert collector.returncode == 0, err
        assert out.split() == [str(len(spans)), str(len(with_get))]
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA user_version").fetchone() == (4,)
        # one list per trace: the second collector found the file migrated
        assert db.execute("SELECT count(*) FROM trace_terms").fetchone() == (3000,)
    db.close()


_text = st.text(st.sampled_from("ab\x1b\x1e\x1f01é"), max_size=6)


@given(st.lists(st.tuples(_text, _text, _text), max_size=8))
def test_a_term_list_gives_back_the_terms_it_lists(terms: list[tuple[str, str, str]]) -> None:
    rows = [(term, value, 7, service) for service, term, value in terms]
    assert list(sqlite_store._listed_terms(sqlite_store._term_list(rows))) == terms


@given(_text)
def test_sql_escapes_a_text_as_the_term_lists_do(text: str) -> None:
    db = sqlite3.connect(":memory:")
    [(escaped,)] = db.execute(f"SELECT {sqlite_store._sql_escaped('?')}", (text,)).fetchall()
    db.close()
    assert escaped == text.translate(sqlite_store._ESCAPED)
    assert "\x1e" not in escaped and "\x1f" not in escaped


def test_a_collector_opening_a_file_another_is_upgrading_waits_for_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.db"
    SqliteSpanStore(path, max_age=None).close()
    # another collector upgrading the file holds its write lock far longer than a write does
    upgrading = sqlite3.connect(path, isolation_level=None)
    upgrading.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(sqlite_store, "_BUSY_WAIT_MS", 50)  # the usual wait, shortened
    opened: list[SqliteSpanStore] = []
    failed: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(SqliteSpanStore(path, max_age=None))
        except BaseException as error:  # reported to the test below
            failed.append(error)

    caplog.set_level(logging.WARNING, logger="tomograph.collector")
    opener = threading.Thread(target=open_store)
    opener.start()
    deadline = time.monotonic() + 60
    while "write lock" not in caplog.text and opener.is_alive():
        assert time.monotonic() < deadline, "the opening collector neither waited nor said so"
        time.sleep(0.01)
    assert opener.is_alive() and not failed, failed  # still waiting, past the usual wait
    upgrading.execute("COMMIT")
    upgrading.close()
    opener.join(timeout=60)
    assert not failed, failed
    [store] = opened
    try:
        assert store.span_count() == 0
    finally:
        store.close()
    assert str(path) in caplog.text
