"""The SQLite store's schema versions: files of versions 3 and 4 opened by today's store, files
of a newer version refused, term rows and the terms listed per trace kept in step."""

from __future__ import annotations

import hashlib
import json
import logging
import random
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
from tests.support import zipkin_dependency_rules as zipkin_rules
from tests.support.collector import decoded, make_span, now_us
from tests.support.stored_links import full_computation

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
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)
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
    with pytest.raises(StoreOpenError, match=r"unknown schema version 7 .*newer tomograph"):
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
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)
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


# -- version 4: a row of trace_links per trace and service pair --------------------------------

#: The tables of schema version 4, as that version created them.
SCHEMA_4 = """
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
    term TEXT NOT NULL,
    value TEXT NOT NULL,
    trace_low INTEGER NOT NULL,
    service TEXT NOT NULL,
    PRIMARY KEY (term, value, trace_low, service)
) WITHOUT ROWID;
CREATE TABLE trace_terms (trace_low INTEGER NOT NULL, terms TEXT NOT NULL);
CREATE INDEX trace_terms_by_trace ON trace_terms(trace_low);
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
PRAGMA user_version = 4;
"""

HOUR_US, MINUTE_US = 3_600_000_000, 60_000_000
LINK_SERVICES = ["web", "api", "db", "queue", "pay\u00e9", 'q"\\', ""]


def version_4_traces(rng: random.Random, count: int, start: int) -> list[list[dict[str, Any]]]:
    """Traces of RPCs, messages, shared and local spans, errors and repeated ids, timestamps
    spread over three hours (some spans without one)."""
    ids = [f"{n:016x}" for n in range(1, 7)]
    kinds = [None, "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]
    traces = []
    for n in range(count):
        spans = []
        for _ in range(rng.randint(1, 7)):
            span = make_span(
                f"{n + 1:032x}",
                rng.choice(ids),
                parent_id=rng.choice([None, *ids]),
                service=rng.choice(LINK_SERVICES),
                remote=rng.choice([None, *LINK_SERVICES[:-1]]),
                kind=rng.choice(kinds),
                timestamp=start + rng.randrange(3 * HOUR_US),
                tags={"error": "boom"} if rng.random() < 0.3 else None,
                shared=rng.random() < 0.3,
            )
            if rng.random() < 0.1:
                del span["timestamp"]
            spans.append(span)
        traces.append(spans)
    return traces


def span_row(span: dict[str, Any]) -> tuple[Any, ...]:
    """A span's row in ``spans`` as version 4 wrote it (services "" when absent)."""
    body = json.dumps(span, separators=(",", ":")).encode()
    return (
        low_of(span["traceId"]),
        span["traceId"],
        span["id"],
        span.get("parentId"),
        span.get("kind"),
        1 if span.get("shared") else 0,
        span["name"],
        span["localEndpoint"]["serviceName"],
        span.get("remoteEndpoint", {}).get("serviceName", ""),
        span.get("timestamp"),
        span["duration"],
        1 if "error" in span.get("tags", {}) else 0,
        hashlib.blake2b(body, digest_size=12).digest(),
        body,
    )


def trace_ts(spans: list[dict[str, Any]]) -> int | None:
    """Zipkin's trace timestamp: the root's, else the earliest."""
    roots = [s["timestamp"] for s in spans if "timestamp" in s and "parentId" not in s]
    stamps = [s["timestamp"] for s in spans if "timestamp" in s]
    return roots[0] if roots else min(stamps, default=None)


def reference_links(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], list[int]]:
    """A trace's links by the reference rules, from its span rows in the store's order."""
    rows = sorted(rows, key=lambda row: row[12])  # spans_by_trace: trace, digest
    return zipkin_rules.trace_links(
        [
            zipkin_rules.LinkSpan(
                row[2], row[3], row[4], bool(row[5]), row[7] or None, row[8] or None, bool(row[11])
            )
            for row in rows
        ]
    )


def write_version_4(path: Path, traces: list[list[dict[str, Any]]], received: int) -> None:
    """The file schema version 4 left for ``traces``: spans, traces (received a minute apart)
    and links a row per trace and service pair, with their hour and minute sums.

    Every third trace received its last spans after its links were computed from the first
    ones: those links stay stored, and the trace is pending, as version 4 left such a trace
    until its links were computed again. Every fifth has no stored links, only the mark.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(SCHEMA_4)
    db.execute("BEGIN")
    sums: dict[tuple[str, int, str, str], list[int]] = {}
    for n, spans in enumerate(traces):
        low = low_of(spans[0]["traceId"])
        rows = [span_row(span) for span in spans]
        db.executemany(
            "INSERT OR IGNORE INTO spans (trace_low, trace_id, span_id, parent_id, kind, shared,"
            " name, service, remote_service, ts, duration, error, digest, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT))",
            rows,
        )
        roots = [s["timestamp"] for s in spans if "timestamp" in s and "parentId" not in s]
        db.execute(
            "INSERT INTO traces VALUES (?, ?, ?, ?, ?)",
            (
                low,
                spans[0]["traceId"],
                trace_ts(spans),
                roots[0] if roots else None,
                received + n * MINUTE_US,
            ),
        )
        linked = spans if n % 3 else spans[: len(spans) // 2 + 1]
        if n % 3 == 0 or n % 5 == 0:
            db.execute("INSERT INTO links_pending VALUES (?, ?)", (low, n))
        ts = trace_ts(linked)
        if n % 5 == 0 or ts is None:
            continue
        links = reference_links([span_row(span) for span in linked])
        for (parent, child), (calls, errors) in links.items():
            db.execute(
                "INSERT INTO trace_links VALUES (?, ?, ?, ?, ?, ?)",
                (low, parent, child, ts, calls, errors),
            )
            for table, length in (("link_hours", HOUR_US), ("link_minutes", MINUTE_US)):
                counts = sums.setdefault((table, ts // length, parent, child), [0, 0])
                counts[0] += calls
                counts[1] += errors
    for (table, bucket, parent, child), (calls, errors) in sums.items():
        db.execute(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)", (bucket, parent, child, calls, errors)
        )
    db.execute("COMMIT")
    db.close()


def link_windows(rng: random.Random, start: int) -> list[tuple[int, int]]:
    """(end ms, lookback ms): the whole day, and windows cutting hours and minutes anywhere."""
    windows = [(start // 1000 + 12 * HOUR_US // 1000, 24 * HOUR_US // 1000)]
    for _ in range(12):
        end = start // 1000 + rng.randrange(-HOUR_US // 1000, 4 * HOUR_US // 1000)
        windows.append((end, rng.randrange(1, 3 * HOUR_US // 1000)))
    return windows


@pytest.mark.parametrize("seed", range(4))
def test_a_version_4_file_answers_dependencies_as_computed_from_its_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)  # pending: computed by queries
    rng = random.Random(seed)
    start = (now_us() // HOUR_US - 4) * HOUR_US + rng.randrange(HOUR_US)
    traces = version_4_traces(rng, 60, start)
    path = tmp_path / "t.db"
    received = now_us() - 2 * HOUR_US
    write_version_4(path, traces, received)
    windows = link_windows(rng, start)
    store = SqliteSpanStore(path, max_age=3600.0)
    try:
        for end_ms, lookback in windows:  # pending traces computed in the read, not stored
            assert store.dependencies(end_ms, lookback) == full_computation(path, end_ms, lookback)
        store._refresh_links()
        for end_ms, lookback in windows:
            assert store.dependencies(end_ms, lookback) == full_computation(path, end_ms, lookback)
        # new spans join old traces and make new ones; retention deletes the oldest half
        more = version_4_traces(rng, 80, start)
        store.accept(decoded([span for spans in more[20:50] for span in spans]))
        deleted = store.enforce_retention(received + 30 * MINUTE_US + 3600 * 1_000_000)
        assert deleted.traces_deleted == 20  # the first 30 received, less 10 received again
        store.accept(decoded([span for spans in more[70:] for span in spans]))
        for end_ms, lookback in windows:
            assert store.dependencies(end_ms, lookback) == full_computation(path, end_ms, lookback)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (sqlite_store._SCHEMA_VERSION,)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        objects = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert "trace_links" not in objects
    db.close()
