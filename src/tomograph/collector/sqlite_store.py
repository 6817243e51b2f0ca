"""The collector's default :class:`~tomograph.collector.storage.SpanStore`: one SQLite file.

Layout: ``spans`` holds each span's indexed fields and its normalized JSON (returned as is, so
reading a trace never re-encodes it); ``span_terms`` indexes tag keys/values and annotation values
for ``annotationQuery``, and ``trace_terms`` lists each trace's terms (what the probe of a bare
word and retention read); ``traces`` keeps one row per trace (grouped by the low 64 bits of its id)
with Zipkin's trace timestamp, for time-ordered search; ``span_names`` feeds the name lists;
dependency links are kept per trace and per minute (:mod:`tomograph.collector.sqlite_links`).

Writes go through one connection under a lock: uploads prepare their rows on their own threads
and hand them to one writer thread, which commits all that is waiting in one transaction (group
commit; WAL, so readers never wait); reads borrow a connection from a bounded pool
(:mod:`tomograph.collector.sqlite_readers`).
SQL only ever receives bound parameters.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import math
import operator
import os
import re
import sqlite3
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Collection, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from tomograph._cache import BoundedCache
from tomograph.collector import sqlite_links
from tomograph.collector.group_commit import GroupWriter
from tomograph.collector.span_fields import (
    local_service,
    remote_service,
    trace_id_low,
)
from tomograph.collector.sqlite_links import (
    HOUR_US,
    LINK_OBJECTS,
    LINKS_BY_TS,
    PendingTrace,
    TraceLinks,
)
from tomograph.collector.sqlite_readers import Reader, ReaderPool
from tomograph.collector.storage import (
    DependencyLink,
    OperationSamples,
    OperationStats,
    QueryRequest,
    QueryTimeout,
    RetentionResult,
    SpanDict,
    StoreClosed,
    StoreOpenError,
    StoreUnavailable,
    operation_samples_answer,
    operation_stats,
)
from tomograph.collector.stored_spans import json_array, stored_json_each, traces_json
from tomograph.collector.wal_checkpoints import BackgroundCheckpoints
from tomograph.encoding.normalize import normalize_trace_id

__all__ = ["SqliteSpanStore"]

log = logging.getLogger("tomograph.collector")

#: 1: spans, terms, traces, names; 2: stored dependency links (built when a 1 is opened) and
#: spans_by_name covering the reads of operations and of name searches; 3: span bodies written
#: as plain JSON text (those of older versions stay deflated blobs: see _BODY); 4: span_terms
#: keyed by term first (one B-tree, no second index), each trace's terms listed in trace_terms;
#: 5: each trace's links packed in its row of traces, not a row per trace and service pair in
#: trace_links (see sqlite_links); 6: link_hours holds only the hours before the mark of
#: link_hours_upto, later hours are summed in link_minutes alone (see sqlite_links).
_SCHEMA_VERSION = 6
# how long a connection waits for another's write lock; opening a file another collector is
# upgrading waits far longer (see SqliteSpanStore._begin_opening)
_BUSY_WAIT_MS = 30_000
_OPEN_WAIT_MS = 30 * 60_000
#: The tables and indexes of _SCHEMA and of the links; a file holding anything else belongs to
#: another program.
_SCHEMA_OBJECTS = LINK_OBJECTS | {
    "trace_links",  # versions 2 to 4
    "trace_links_by_ts",
    "spans",
    "spans_by_trace",
    "spans_by_name",
    "spans_by_duration",
    "span_terms",
    "terms_by_value",  # version 3
    "trace_terms",
    "trace_terms_by_trace",
    "traces",
    "traces_by_ts",
    "traces_by_received",
    "span_names",
    # statistics of SQLite's own (PRAGMA optimize at close runs ANALYZE on tables it queried)
    "sqlite_stat1",
    "sqlite_stat4",
}
#: Covers what operations and name searches read: no row lookup per span.
_SPANS_BY_NAME_COLUMNS = ("service", "name", "ts", "duration", "error", "trace_low", "kind")
_SPANS_BY_NAME = (
    f"CREATE INDEX IF NOT EXISTS spans_by_name ON spans({', '.join(_SPANS_BY_NAME_COLUMNS)})"
)
#: One row per trace, term, value and service: a term search reads a range of it, and the probe
#: of a trace for a term and value is one seek.
_SPAN_TERMS = """
CREATE TABLE IF NOT EXISTS span_terms (
    term TEXT NOT NULL,
    value TEXT NOT NULL,
    trace_low INTEGER NOT NULL,
    service TEXT NOT NULL,
    PRIMARY KEY (term, value, trace_low, service)
) WITHOUT ROWID"""
#: The terms each batch gave each trace, as one text (see _term_list): span_terms has no order
#: by trace, so the probe of a trace for a bare word (a tag key of any value, or an annotation)
#: and retention, which deletes a trace's terms, read them here. A row per trace and batch
#: costs less than the second index of span_terms it replaces (a row per term).
_TRACE_TERMS = """
CREATE TABLE IF NOT EXISTS trace_terms (trace_low INTEGER NOT NULL, terms TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS trace_terms_by_trace ON trace_terms(trace_low)"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS spans (
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
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_trace ON spans(trace_low, digest);
{_SPANS_BY_NAME};
CREATE INDEX IF NOT EXISTS spans_by_duration ON spans(duration);
{_SPAN_TERMS};
{_TRACE_TERMS};
CREATE TABLE IF NOT EXISTS traces (
    trace_low INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    ts INTEGER,
    root_ts INTEGER,
    received INTEGER NOT NULL,
    links_ts INTEGER, -- the trace's stored dependency links (see sqlite_links)
    links TEXT
);
CREATE INDEX IF NOT EXISTS traces_by_ts ON traces(ts);
CREATE INDEX IF NOT EXISTS traces_by_received ON traces(received);
CREATE TABLE IF NOT EXISTS span_names (
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (service, kind, name)
) WITHOUT ROWID;
"""

# The body is bound as bytes and stored as TEXT: its type is what tells it from the deflated
# bodies of version 2 files (see _BODY).
_INSERT_SPAN = """
INSERT OR IGNORE INTO spans (trace_low, trace_id, span_id, parent_id, kind, shared, name, service,
    remote_service, ts, duration, error, digest, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT))
"""
_INSERT_TERM = "INSERT OR IGNORE INTO span_terms VALUES (?, ?, ?, ?)"
_INSERT_TERM_LIST = "INSERT INTO trace_terms VALUES (?, ?)"
#: A span's stored JSON as bytes, and whether it is deflated (1) or plain (0).
_BODY = "CAST(body AS BLOB), typeof(body) = 'blob'"
_UPSERT_TRACE = """
INSERT INTO traces (trace_low, trace_id, ts, root_ts, received, links_ts, links)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_low) DO UPDATE SET
    trace_id = CASE WHEN length(excluded.trace_id) > length(traces.trace_id)
                    THEN excluded.trace_id ELSE traces.trace_id END,
    ts = CASE WHEN traces.root_ts IS NOT NULL THEN traces.ts
              WHEN excluded.root_ts IS NOT NULL THEN excluded.root_ts
              ELSE min(coalesce(traces.ts, excluded.ts), coalesce(excluded.ts, traces.ts)) END,
    root_ts = coalesce(traces.root_ts, excluded.root_ts),
    received = max(traces.received, excluded.received)
"""
# The links given with a trace are those of a trace new to the file: a trace the file has
# keeps its stored links (the write marks it, to be linked again from all its spans).

# Schema version 2 stored span bodies deflated with a preset dictionary of Zipkin's JSON field
# names: a span of a few hundred bytes shrank by half, but deflating it cost about a fifth of
# all the work of ingesting it. Version 3 stores them as they are; the bodies written by version
# 2 are read with this dictionary (it is part of that format: it can never change).
_ZDICT = (
    b'"annotations":[{"timestamp":,"value":"}],"tags":{"http.method":"GET","http.status_code":'
    b'"200","http.url":"http://","http.route":"/","error":"","otel.scope.name":"'
    b'"otel.status_code":"ERROR","localEndpoint":{"serviceName":"","ipv4":"","ipv6":"","port":'
    b'},"remoteEndpoint":{"serviceName":"{"traceId":"","parentId":"","id":"","kind":"CLIENT",'
    b'"SERVER","name":"","timestamp":,"duration":'
)


# A trace's term list: each term as US service RS term RS value, the fields escaped so that
# neither separator occurs inside one. A search for ``RS term RS`` then finds a term of any
# value and service, and ``US service RS term RS`` one of that service: a substring search
# (SQLite's instr) instead of a second index of span_terms ordered by trace.
_US, _RS, _ESC = "\x1f", "\x1e", "\x1b"
_ESCAPED = str.maketrans({_ESC: _ESC + "0", _RS: _ESC + "1", _US: _ESC + "2"})
_UNESCAPED = {"0": _ESC, "1": _RS, "2": _US}
_ESCAPE_SEQUENCE = re.compile(_ESC + "(.)", re.DOTALL)


def _sql_escaped(expression: str) -> str:
    """SQL escaping ``expression`` (a text) as :data:`_ESCAPED` does."""
    for char, code in ((_ESC, 27), (_RS, 30), (_US, 31)):
        escape = _ESCAPED[ord(char)]
        assert isinstance(escape, str)
        expression = f"replace({expression}, char({code}), char(27) || '{escape[1]}')"
    return expression


def _term_list(terms: Collection[tuple[str, str, int, str]]) -> str:
    """The term list (see above) of span_terms rows (term, value, trace, service)."""
    text = "".join([f"{_US}{service}{_RS}{term}{_RS}{value}" for term, value, _, service in terms])
    # a field holding a separator or the escape (rare: control characters) escapes them all
    if text.count(_US) == len(terms) and text.count(_RS) == 2 * len(terms) and _ESC not in text:
        return text
    return "".join(
        f"{_US}{service.translate(_ESCAPED)}{_RS}{term.translate(_ESCAPED)}{_RS}"
        + value.translate(_ESCAPED)
        for term, value, _, service in terms
    )


def _unescaped(field: str) -> str:
    if _ESC not in field:
        return field
    return _ESCAPE_SEQUENCE.sub(lambda escape: _UNESCAPED[escape[1]], field)


def _listed_terms(text: str) -> Iterator[tuple[str, str, str]]:
    """(service, term, value) of each term of a term list."""
    escaped = _ESC in text
    for entry in text.split(_US)[1:]:
        service, term, value = entry.split(_RS)
        if escaped:
            service, term, value = _unescaped(service), _unescaped(term), _unescaped(value)
        yield service, term, value


def _inflate(stored: bytes) -> bytes:
    """A body as schema version 2 stored it (raw deflate with :data:`_ZDICT`), inflated."""
    return zlib.decompressobj(-15, _ZDICT).decompress(stored)


#: The largest answer of a search or traceMany, in bytes of JSON (whole traces only).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: Tag values longer than this are not indexed for search (their key still is), as in Zipkin.
MAX_INDEXED_VALUE = 256
_DELETE_CHUNK = 500
#: A write-ahead log longer than this is emptied at the next pause in reads (see
#: :meth:`SqliteSpanStore._request_wal_reset`); SQLite's own checkpoints keep it near 4 MB
#: while reads leave it room.
_WAL_RESET_BYTES = 64 * 1024 * 1024


def _index_columns(db: sqlite3.Connection, index: str) -> tuple[str, ...]:
    return tuple(row[2] for row in db.execute(f"PRAGMA index_info({index})"))


def _table_columns(db: sqlite3.Connection, table: str) -> tuple[str, ...]:
    return tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))


def _now_us() -> int:
    return time.time_ns() // 1000


_P = ParamSpec("_P")
_R = TypeVar("_R")
#: How long :meth:`SqliteSpanStore.close` waits for interrupted reads to stop.
_CLOSE_WAIT = 2.0
#: How long a fork waits, at most, for the writes and reads in progress (see _hold_for_fork).
_FORK_WAIT = 10.0
#: How often (seconds) the links of traces that received spans are brought up to date, off the
#: write path; ``/dependencies`` brings the rest up to date before it answers, so this bounds
#: what it computes itself (at 10,000 spans/s, a quarter second is about 250 traces).
_LINK_INTERVAL = 0.25
#: /dependencies computes the links of up to this many rounds of the background
#: (sqlite_links.ROUND_TRACES traces each) itself, without storing them: storing would wait
#: for the writer.
_LINK_ROUNDS_IN_READ = 4
#: The background rolls an hour's sums of links up once it closed this long ago (µs): spans
#: still arriving for it after that move the sums of both tables (see sqlite_links).
_ROLLUP_DELAY_US = 10 * 60_000_000
#: How many of the traces written last a store remembers, so as not to compute links on the
#: uploading thread for a trace whose spans will be linked again anyway (about 6 MB).
_WRITTEN_TRACES = 65_536
#: How many span_names rows a store remembers as stored before it starts over.
_STORED_NAMES = 65_536


def _reading(
    method: Callable[Concatenate[SqliteSpanStore, Reader, _P], _R],
) -> Callable[Concatenate[SqliteSpanStore, _P], _R]:
    """Lend the method a pooled reader connection for the length of the call."""

    @functools.wraps(method)
    def read(store: SqliteSpanStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with store._readers.reading() as reader:
            return method(store, reader, *args, **kwargs)

    return read


class SqliteSpanStore:
    """Spans in one SQLite file, searchable the way Zipkin's API expects.

    ``max_age`` (seconds) and ``max_bytes`` bound what :meth:`enforce_retention` keeps; None
    keeps everything. Age counts from when a trace last received a span.
    ``max_response_bytes`` bounds one :meth:`get_trace_json` or :meth:`get_traces_json`
    answer (a trace, a search or traceMany).
    ``readers`` connections at most serve reads (more concurrent reads wait for one), and
    ``query_timeout`` (seconds, None for no limit) stops a read that runs longer, waiting
    for a connection included, with :class:`~tomograph.collector.storage.QueryTimeout`.
    A database that cannot be opened raises
    :class:`~tomograph.collector.storage.StoreOpenError` saying why.

    >>> import tempfile, os
    >>> folder = tempfile.TemporaryDirectory()
    >>> store = SqliteSpanStore(os.path.join(folder.name, "traces.db"))
    >>> from tomograph.encoding.normalize import span_dict
    >>> store.accept([span_dict("a" * 16, "b" * 16, name="GET", timestamp=1_700_000_000_000_000,
    ...                         duration=5, local_endpoint={"serviceName": "Web"})])
    1
    >>> store.service_names()
    ['web']
    >>> store.close()
    >>> folder.cleanup()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_age: float | None = 7 * 86400.0,
        max_bytes: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        readers: int = 4,
        query_timeout: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_response_bytes = max_response_bytes
        self.query_timeout = query_timeout
        self._write_lock = threading.Lock()
        self._closed = False
        self._stopping = False  # set by interrupt_reads: the server is stopping
        self._version = 0  # grows with every write transaction (under the write lock)
        self._group_writer: GroupWriter[_Rows, int] = GroupWriter(
            self._write_group, "tomograph-span-writer"
        )
        self._wal = self.path.with_name(self.path.name + "-wal")
        self._checkpoints = BackgroundCheckpoints(self.path, self._connect, self._writes_held)
        self._readers = ReaderPool(
            self._connect_reader, readers, query_timeout, on_idle=self._reset_wal
        )
        self._inherited: list[object] = []  # a forked child's unused copies of the parent's
        # registered for the fork hook before opening, which reads and may upgrade the file:
        # a fork waits for the write lock held meanwhile
        with _FORKING:  # no fork is holding the stores: this one joins them at once
            self._write_lock.acquire()
            _OPEN_STORES.add(self)
        try:
            self._writer = self._open()
            self._links = TraceLinks(TraceLinks.stored_seq(self._writer) + 1)
        except BaseException as error:
            _OPEN_STORES.discard(self)
            if isinstance(error, (OSError, sqlite3.Error)):
                raise StoreOpenError(_open_error(self.path, error)) from error
            raise
        finally:
            self._write_lock.release()
        self._links_lock = threading.Lock()  # one refresh of the links at a time
        self._links_stop = threading.Event()
        self._links_start_lock = threading.Lock()
        self._links_pid = 0
        # a guess only: a trace found here is marked for its links even if it was deleted since
        self._written_traces: BoundedCache[int, None] = BoundedCache(_WRITTEN_TRACES)
        # span_names rows known to be in the file (see _unstored_names)
        self._stored_names: set[tuple[str, str, str]] = set()
        # the names written in the open transaction: remembered once it commits, under the
        # write lock (after it, retention may have deleted them already)
        self._names_written: list[list[tuple[str, str, str]]] = []
        self._names_version: int | None = None  # the writer's data_version they were known at
        try:
            self._start_links_refresher()
        except BaseException:  # out of threads: no store, and nothing left open
            _OPEN_STORES.discard(self)
            self._writer.close()
            raise

    def _after_fork_in_child(self) -> None:
        """Fresh locks and connections for a forked child (gunicorn forks workers any time).

        A lock one of the parent's threads held at the fork would stay held for ever here, and
        SQLite connections must not be used across a fork. The parent's connections are kept
        unused: closing them here could release what the parent holds on the file.
        """
        if self._closed or not hasattr(self, "_links"):
            return  # closed, or being opened by a thread of the parent (none of the child's)
        self._inherited.append((self._writer, self._readers, self._checkpoints))
        self._checkpoints = BackgroundCheckpoints(self.path, self._connect, self._writes_held)
        self._stored_names, self._names_version = set(), None  # known to another connection
        self._names_written = []
        self._write_lock = threading.Lock()
        self._links_lock = threading.Lock()
        self._links_start_lock = threading.Lock()
        self._links_stop = threading.Event()
        self._group_writer = GroupWriter(self._write_group, "tomograph-span-writer")
        self._readers = ReaderPool(
            self._connect_reader,
            self._readers.size,
            self.query_timeout,
            on_idle=self._reset_wal,
        )
        self._writer = self._connect()
        self._writer.execute("PRAGMA wal_autocheckpoint = 0")  # see BackgroundCheckpoints

    def _start_links_refresher(self) -> None:
        """Start the thread that computes pending links, once per process.

        Threads do not survive a fork: a child using a store its parent opened (gunicorn
        ``--preload``) starts its own with its first write, else its links would wait for a query.
        """
        with self._links_start_lock:
            if self._links_pid == os.getpid():
                return
            thread = threading.Thread(
                target=self._refresh_links_periodically,
                name="tomograph collector dependency links",
                daemon=True,
            )
            thread.start()  # out of threads, this raises: the next write tries again
            self._links_thread, self._links_pid = thread, os.getpid()

    # -- connections -------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_dir():
            raise IsADirectoryError(21, "Is a directory", str(self.path))
        writer = self._connect()
        try:
            self._check_schema(writer)  # before anything is written to somebody else's file
            self._begin_opening(writer)
            try:
                version = self._check_schema(writer)  # again, now that we hold the lock
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            writer.execute(statement)
                if version and _index_columns(writer, "spans_by_name") != _SPANS_BY_NAME_COLUMNS:
                    # version 1 read each span's row after the index (a random page each), and
                    # files of version 2 before operations were split by kind read the kind so;
                    # the same version: an older tomograph still reads a file with this index
                    writer.execute("DROP INDEX spans_by_name")
                    writer.execute(_SPANS_BY_NAME)
                if version < 2:
                    # a file of version 1 has traces without links: all of them are pending
                    TraceLinks.create(writer, existing_traces=version == 1)
                # version 2 -> 3: nothing to rewrite (its deflated bodies are read as they are)
                # by its columns, not the version: a file of version 1 left at version 0 by a
                # crash (see _check_schema) has the old table, which CREATE IF NOT EXISTS kept
                if _table_columns(writer, "span_terms")[0] == "trace_low":
                    _migrate_terms(writer)
                if "links" not in _table_columns(writer, "traces"):  # versions 1 to 4
                    TraceLinks.move_to_traces(writer)
                writer.execute(LINKS_BY_TS)  # on the columns of links, which _SCHEMA may lack
                if version < 6:
                    # nothing rolled up in a new file; an older one keeps its hours up to now
                    # (link_minutes holds every sum, link_hours those of every hour)
                    TraceLinks.start_rollup(writer, 0 if version == 0 else _now_us() // HOUR_US)
                if version < _SCHEMA_VERSION:
                    # in the same transaction: a crash never leaves tables without a version
                    writer.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            except BaseException:
                writer.execute("ROLLBACK")
                raise
            writer.execute("COMMIT")
            writer.execute(f"PRAGMA busy_timeout = {_BUSY_WAIT_MS}")
            # checkpoints run on their own thread (see BackgroundCheckpoints); an upgrade above
            # still had SQLite's own, or its log would have grown by every page it rewrote
            writer.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            writer.close()
            raise
        return writer

    def _begin_opening(self, writer: sqlite3.Connection) -> None:
        """Take the write lock to create or upgrade the file, waiting out another's upgrade.

        Upgrading a large file holds the lock for minutes (a million spans: about 100 s), far
        longer than a write ever does: a collector started next to one that is upgrading waits
        for it, saying so, instead of stopping on "database is locked" after the usual wait.
        """
        try:
            _lock_for_opening(writer)
            return
        except sqlite3.OperationalError as error:
            if not _is_locked(error):
                raise
        log.warning(
            "%s: another process holds the database's write lock (a collector upgrading it?);"
            " waiting up to %d minutes for it",
            self.path,
            _OPEN_WAIT_MS // 60_000,
        )
        writer.execute(f"PRAGMA busy_timeout = {_OPEN_WAIT_MS}")
        _lock_for_opening(writer)

    def _check_schema(self, db: sqlite3.Connection) -> int:
        """The file's schema version: 0 for a new file; StoreOpenError if it is not ours."""
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if version == 0 and not tables <= _SCHEMA_OBJECTS:
            raise StoreOpenError(
                f"{self.path} is a SQLite database of another program"
                " (tomograph's own database has none of its tables)"
            )
        if not 0 <= version <= _SCHEMA_VERSION:
            raise StoreOpenError(
                f"{self.path}: unknown schema version {version} (written by a newer tomograph?)"
            )
        return version

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        db.execute(f"PRAGMA busy_timeout = {_BUSY_WAIT_MS}")
        db.execute("PRAGMA cache_size = -32000")
        return db

    def _connect_reader(self) -> sqlite3.Connection:
        db = self._connect()
        db.execute("PRAGMA query_only = ON")
        # a reader waits for a lock only while another process recovers the WAL; an interrupt
        # does not end that wait, so keep it shorter than any sensible query timeout
        db.execute("PRAGMA busy_timeout = 2000")
        return db

    @contextmanager
    def _writes_held(self) -> Iterator[bool]:
        """The write lock held; whether the store is still open (see BackgroundCheckpoints)."""
        with self._write_lock:
            yield not self._closed

    @contextmanager
    def _transaction(self, *, changes_answers: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction under the write lock; one that ``changes_answers`` of queries
        moves :meth:`data_version` on (storing computed links changes none)."""
        with self._write_lock:
            if self._closed:
                raise StoreClosed("the span store is closed")
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    self._names_written.clear()
                    # SQLite may have rolled back already (it does on SQLITE_FULL): a second
                    # ROLLBACK would fail and hide why
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as error:
                unavailable = _unavailable(error)
                if unavailable is None:
                    raise
                raise unavailable from error
            if changes_answers:
                self._version += 1
            # Committed: what follows is housekeeping. An error here must not reach the writer
            # as a failed write, or it would tell its callers that stored spans were not (and
            # write them again one by one, counting them as duplicates).
            try:
                written, self._names_written = self._names_written, []
                for names in written:
                    self._stored_names.update(names)
                self._after_commit()
            except Exception:
                log.exception("housekeeping after a committed write failed")

    def _after_commit(self) -> None:
        """Have the log checkpointed; empty it if grown too long (called under the write lock)."""
        self._checkpoints.wake()
        try:
            wal_bytes = os.stat(self._wal).st_size
        except OSError:
            wal_bytes = 0
        if wal_bytes > _WAL_RESET_BYTES:
            self._request_wal_reset()

    def _request_wal_reset(self) -> None:
        """Empty the write-ahead log as soon as no read uses it (called under the write lock).

        Reads overlapping without a pause keep SQLite from ever restarting the log, which
        then grows by every write; so new reads wait for those in progress to end.
        """
        if self._readers.pause():  # no read in progress: now, else when the last one ends
            try:
                self._truncate_wal()
            finally:
                self._readers.resume()

    def _reset_wal(self) -> None:
        with self._write_lock:
            if not self._closed:
                self._truncate_wal()

    def _truncate_wal(self) -> None:
        db = self._writer
        # another program reading the file could keep the checkpoint waiting: not for long
        db.execute("PRAGMA busy_timeout = 200")
        try:
            with self._checkpoints.paused():  # SQLite refuses a checkpoint while one runs
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass  # the log stays long until the next try; no data is at stake
        finally:
            db.execute("PRAGMA busy_timeout = 30000")

    def data_version(self) -> int:
        """A number that grows with every write: while it is unchanged, so are all answers."""
        return self._version

    def interrupt_reads(self) -> None:
        """Stop the reads in progress (they raise StoreClosed) and refuse new reads.

        Writes go on until :meth:`close`; a retention pass stops after its current chunk.
        """
        self._stopping = True
        self._readers.interrupt()

    def close(self) -> None:
        """Interrupt reads, let the writes already handed over finish, close every connection.

        Further calls raise :class:`~tomograph.collector.storage.StoreClosed`.
        """
        self.interrupt_reads()
        self._links_stop.set()
        self._group_writer.close()  # the batches handed over are written first
        self._checkpoints.close(_CLOSE_WAIT)
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._writer.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._writer.close()
            # the file's last connection to close checkpoints it: under the lock, as the fork
            # hook waits for it (see _hold_for_fork); closed, the store needs no hook
            self._readers.close(_CLOSE_WAIT)
            _OPEN_STORES.discard(self)
        self._links_thread.join(_CLOSE_WAIT)

    # -- writes -----------------------------------------------------------------------------

    def accept(self, spans: Sequence[SpanDict]) -> int:
        """Store ``spans`` in one transaction; returns how many were new.

        The spans are stored as they are: normalized span dicts, as the decoders of
        :mod:`tomograph.encoding` return them.

        Exact duplicates (a retried batch) are stored once. Nothing is written if anything fails.
        The rows are prepared on the calling thread; the writer thread commits them together
        with the batches of other threads waiting at the same time (group commit), and this
        returns once they are committed.
        """
        if self._closed:
            raise StoreClosed("the span store is closed")
        if self._links_pid != os.getpid():
            self._start_links_refresher()
        rows = _prepare_rows(spans, _now_us(), self._written_traces)
        return self._group_writer.submit(rows)

    def _write_group(self, batches: Sequence[_Rows]) -> list[int | BaseException]:
        """Store the batches in one transaction; how many spans of each were new.

        A batch that cannot be stored fails alone: the others are then written one by one.
        """
        try:
            with self._transaction() as db:
                results: list[int | BaseException] = [
                    self._write_batch(db, rows) for rows in batches
                ]
            return results
        except (StoreUnavailable, StoreClosed) as error:
            # the whole store is affected: each caller gets its own copy to raise
            return [_copy_error(error) for _ in batches]
        except Exception as error:
            if len(batches) == 1:
                return [error]
        results = []
        for rows in batches:
            try:
                with self._transaction() as db:
                    results.append(self._write_batch(db, rows))
            except Exception as error:
                results.append(error)
        return results

    def _write_batch(self, db: sqlite3.Connection, rows: _Rows) -> int:
        """Insert one prepared batch and bring its traces' links up to date (one transaction).

        A trace the file had no spans of gets the links computed from the batch's rows; one
        it had (or whose links were not computed: see :func:`_prepare_rows`) is marked, to be
        computed again from all its spans off the write path.
        """
        lows = [trace[0] for trace in rows.traces]
        stored = _stored_traces(db, lows)
        inserted = _write_rows(db, rows, self._unstored_names(db, rows.names))
        self._names_written.append(rows.names)
        linked = [trace for trace in rows.links if trace.trace_low not in stored]
        linked_lows = {trace.trace_low for trace in linked}
        self._links.mark(db, [low for low in lows if low not in linked_lows])
        self._links.add(db, linked)
        for low in lows:
            self._written_traces[low] = None
        return inserted

    # -- reads ------------------------------------------------------------------------------

    def _trace_rows(self, reader: Reader, trace_id: str, budget: int | None = None) -> list[bytes]:
        """The stored JSON of the trace's spans, in time order.

        With a ``budget``, stops before the span that would take their total past it (the
        first span is always kept): a trace may be far larger than one answer should be.
        """
        trace_id = normalize_trace_id(trace_id)
        low = trace_id_low(trace_id)
        if len(trace_id) == 16:  # a 64-bit id matches any trace with those low bits
            rows = reader.execute(
                f"SELECT {_BODY} FROM spans WHERE trace_low = ? ORDER BY ts, row_id", (low,)
            )
        else:  # a 128-bit id matches itself, and spans reported with only its low half;
            # filtered in SQL, so traces sharing the low half cost no transfer of their bodies
            rows = reader.execute(
                f"SELECT {_BODY} FROM spans WHERE trace_low = ? AND trace_id IN (?, ?)"
                " ORDER BY ts, row_id",
                (low, trace_id, trace_id[16:]),
            )
        bodies: list[bytes] = []
        size = 0
        for stored, deflated in rows:
            body = _inflate(stored) if deflated else stored
            size += len(body) + 1
            if budget is not None and bodies and size > budget:
                break
            bodies.append(body)
        return bodies

    @_reading
    def get_trace_json(self, reader: Reader, trace_id: str) -> bytes | None:
        """The trace's spans as a JSON array, or None if no span has this id.

        A 64-bit id finds 128-bit traces with the same low half, and a 128-bit id finds spans
        reported with only the low half (Zipkin's lenient trace-id matching). The answer stops
        at ``max_response_bytes``: the latest spans of a larger trace are left out.
        """
        bodies = self._trace_rows(reader, trace_id, self.max_response_bytes)
        return json_array(bodies) if bodies else None

    @_reading
    def get_trace(self, reader: Reader, trace_id: str) -> list[SpanDict] | None:
        """The trace's spans as dicts, or None (see :meth:`get_trace_json`)."""
        bodies = self._trace_rows(reader, trace_id)
        return [json.loads(body) for body in bodies] if bodies else None

    @_reading
    def get_traces_json(self, reader: Reader, trace_ids: Sequence[str]) -> bytes:
        """The traces found among ``trace_ids``, as a JSON list of traces (unknown ids skipped).

        The answer holds at most ``max_response_bytes`` (a first trace larger than that is cut
        as :meth:`get_trace_json` cuts it), so a search for thousands of large traces stays
        bounded in memory; the ids come newest first, so the oldest are left out.
        """
        return traces_json(
            trace_ids,
            lambda trace_id, budget: self._trace_rows(reader, trace_id, budget),
            self.max_response_bytes,
        )

    @_reading
    def find_trace_ids(self, reader: Reader, request: QueryRequest) -> list[str]:
        """Ids of the traces matching ``request`` (Zipkin semantics), newest first.

        Several plans, because criteria differ wildly in how many spans they match. First the
        newest traces of the window are probed one by one (cheap when matches are common),
        unless a term of ``annotation_query`` has few rows (see _RARE_TERM_ROWS); if
        that does not fill ``limit``, the rest of the window is searched from whichever is
        smaller: the rows of the rarest term of ``annotation_query`` (each trace checked against
        the other criteria), or the window's traces (probed on). Without a term, each
        criterion's matching traces are collected through its index and intersected. A service
        and span name with few spans is searched from those spans.
        """
        window = [(request.end_ts - request.lookback) * 1000, request.end_ts * 1000]
        criteria = _criteria(request)
        if not criteria:
            sql = "SELECT trace_id FROM traces WHERE ts BETWEEN ? AND ? ORDER BY ts DESC LIMIT ?"
            return [row[0] for row in reader.execute(sql, [*window, request.limit])]
        if _is_rare_name(reader, request):
            return self._find_by_rare_name(reader, request, window, criteria)
        # a term with few rows (a request id, a user): reading them all costs less than the
        # probe, which would mostly look for the term in vain
        rare = min(_RARE_TERM_ROWS, _PROBE_TRACES)
        rare_term = _rarest_term(reader, request, criteria, rare)
        if rare_term is not None and rare_term[0] * _TERM_ROW_COST < rare:
            return self._find_from(reader, *_split(criteria, rare_term[1]), window, request.limit)
        # The probe walks traces_by_ts newest first and stops at ``limit`` matches. Its reach
        # is the time of the _PROBE_TRACES-th newest trace: as a subquery with LIMIT, SQLite
        # checked every one of those traces before sorting (200 ms instead of 0.2).
        oldest = reader.execute(
            "SELECT ts FROM traces WHERE ts BETWEEN ? AND ? ORDER BY ts DESC LIMIT 1 OFFSET ?",
            [*window, _PROBE_TRACES - 1],
        ).fetchone()
        reach = window[0] if oldest is None else max(window[0], oldest[0])
        probe_sql = (
            "SELECT t.trace_id FROM traces t WHERE t.ts BETWEEN ? AND ? AND "
            + " AND ".join(_exists(table, where) for table, where, _ in criteria)
            + " ORDER BY t.ts DESC LIMIT ?"
        )
        params: list[Any] = [reach, window[1]]
        for _, _, values in criteria:
            params.extend(values)
        found = (
            [row[0] for row in reader.execute(probe_sql, [*params, request.limit])]
            if _PROBE_TRACES > 0
            else []
        )
        if len(found) >= request.limit:
            return found
        # the probe checked every trace from ``reach`` on: what is left is older
        probed_from = reach if _PROBE_TRACES > 0 else window[1] + 1
        left = [window[0], probed_from - 1]
        # A term's rows are not ordered by time: reading them all costs as many rows as the term
        # ever had, however narrow the window. Start from whichever is smaller: the rarest
        # term's rows or the traces left in the window, both counted up to a cap growing
        # until one is below it (so counting costs about what the smaller costs to read).
        cap = _FIRST_COUNT_CAP
        while True:
            left_count = _count(reader, "traces WHERE ts BETWEEN ? AND ?", left, cap)
            # a term with as many rows as the window has traces is not where to start
            rare_term = _rarest_term(reader, request, criteria, left_count) if left_count else None
            if rare_term is None or min(left_count, rare_term[0]) < cap:
                break
            if cap >= _WINDOW_COUNT_CAP:
                break
            cap *= 4
        if not left_count:
            return found
        limit = request.limit - len(found)
        if rare_term is not None:
            if rare_term[0] * _TERM_ROW_COST < left_count:
                return found + self._find_from(reader, *_split(criteria, rare_term[1]), left, limit)
            params = list(left)
            for _, _, values in criteria:
                params.extend(values)
            return found + [row[0] for row in reader.execute(probe_sql, [*params, limit])]
        intersect_sql = (
            "SELECT t.trace_id FROM traces t WHERE t.ts BETWEEN ? AND ? AND "
            + " AND ".join(_in(table, where) for table, where, _ in criteria)
            + " ORDER BY t.ts DESC, t.trace_low DESC LIMIT ?"
        )
        params = list(left)
        for _, _, values in criteria:
            params.extend(values)
        return found + [row[0] for row in reader.execute(intersect_sql, [*params, limit])]

    def _find_by_rare_name(
        self,
        reader: Reader,
        request: QueryRequest,
        window: list[int],
        criteria: list[_Criterion],
    ) -> list[str]:
        """The third plan, for a service and span name with few spans: the traces of those
        spans (read from spans_by_name), each checked against the other criteria."""
        name_criterion, *others = criteria  # _criteria puts the span name first
        return self._find_from(reader, name_criterion, others, window, request.limit)

    def _find_from(
        self,
        reader: Reader,
        driver: _Criterion,
        others: list[_Criterion],
        window: list[int],
        limit: int,
    ) -> list[str]:
        """The newest ``limit`` traces of the window among those of the ``driver`` criterion's
        rows (read through its index), each checked against the ``others``."""
        table, where, values = driver
        source = "spans s" if table == "spans" else "span_terms x"
        # CROSS JOIN keeps the driver's rows as the outer loop: left to itself, SQLite walks
        # the window's traces by time and probes each (the plan this one exists to avoid)
        sql = (
            f"SELECT t.trace_id FROM (SELECT DISTINCT {_ALIAS[table]}.trace_low FROM {source}"
            f" WHERE {where}) m CROSS JOIN traces t"
            " ON t.trace_low = m.trace_low WHERE t.ts BETWEEN ? AND ?"
            + "".join(" AND " + _exists(table, where) for table, where, _ in others)
            # the order the probe walks traces_by_ts in, ties included
            + " ORDER BY t.ts DESC, t.trace_low DESC LIMIT ?"
        )
        params: list[Any] = [*values, *window]
        for _, _, other_values in others:
            params.extend(other_values)
        return [row[0] for row in reader.execute(sql, [*params, limit])]

    @_reading
    def _names(self, reader: Reader, kind: str, service: str | None) -> list[str]:
        if service is None:
            sql = "SELECT DISTINCT service FROM span_names WHERE kind = ? ORDER BY service"
            rows = reader.execute(sql, (kind,))
        else:
            sql = "SELECT name FROM span_names WHERE kind = ? AND service = ? ORDER BY name"
            rows = reader.execute(sql, (kind, service))
        return [row[0] for row in rows if row[0]]

    def service_names(self) -> list[str]:
        """Local service names, sorted."""
        return self._names("span", None)

    def span_names(self, service_name: str) -> list[str]:
        """Span names recorded by ``service_name``, sorted."""
        return self._names("span", service_name.lower())

    def remote_service_names(self, service_name: str) -> list[str]:
        """Remote service names called by ``service_name``, sorted."""
        return self._names("remote", service_name.lower())

    @_reading
    def tag_values(self, reader: Reader, key: str, limit: int = 1000) -> list[str]:
        """Distinct values seen for tag ``key`` (indexed values only), sorted."""
        # one index seek per distinct value: DISTINCT read every row of the key, one per trace
        # (a second at a million spans for http.method)
        rows = reader.execute(
            "WITH RECURSIVE v(value) AS ("
            " SELECT min(value) FROM span_terms WHERE term = ?1 AND value > ''"
            " UNION ALL SELECT (SELECT min(value) FROM span_terms WHERE term = ?1"
            "  AND value > v.value) FROM v WHERE v.value IS NOT NULL LIMIT ?2"
            ") SELECT value FROM v WHERE value IS NOT NULL",
            (key, limit),
        )
        return [row[0] for row in rows]

    def dependencies(self, end_ts: int, lookback: int) -> list[DependencyLink]:
        """Links between services in traces whose timestamp is in the window (epoch ms).

        Sums of stored links, with the links of traces written since computed from the same
        snapshot: the answer counts every span written before the call, and waits for no write.
        A backlog of traces without links (more than :data:`_LINK_ROUNDS_IN_READ` rounds: a file
        written by an older schema) is computed and stored first, so that the work is done once.
        """
        started = time.monotonic()
        start_us, end_us = (end_ts - lookback) * 1000, end_ts * 1000
        with self._readers.reading() as reader, reader.snapshot():
            in_read = _LINK_ROUNDS_IN_READ * sqlite_links.ROUND_TRACES
            if TraceLinks.pending_at_most(reader.db, in_read):
                return self._links.window_now(reader.db, start_us, end_us, reader.check)
        self._refresh_links(self._links.last_seq, started)
        with self._readers.reading() as reader, reader.snapshot():  # sums and rows read together
            return TraceLinks.window(reader.db, start_us, end_us)

    def _refresh_links(self, up_to: int | None = None, started: float | None = None) -> None:
        """Compute the links of pending traces (marked at ``up_to`` or before), round by round.

        Each round reads spans with a pooled reader (the lock of writes is not held while the
        trees are built), then stores the links in one short write transaction. A query that
        ``started`` then stops with QueryTimeout after the query timeout; its rounds are kept.
        """
        while True:
            if (
                started is not None
                and self.query_timeout is not None
                and time.monotonic() - started >= self.query_timeout
            ):
                raise QueryTimeout(self._readers.timeout_message)
            with self._links_lock:
                # the background's rounds are not bound by the query timeout: stopped there, a
                # round longer than it would start over every pass and never be stored
                with self._readers.reading(bounded=started is not None) as reader:
                    computed = self._links.read_pending(reader.db, up_to, check=reader.check)
                if not computed:
                    return
                # the links of traces already written: /dependencies answers the same before
                # (it computes them itself), so answers cached for the data version still hold
                with self._transaction(changes_answers=False) as db:
                    self._links.apply(db, computed)

    def _roll_up_links(self, now_us: int | None = None) -> None:
        """Roll the sums of the hours closed :data:`_ROLLUP_DELAY_US` ago up into link_hours,
        a day of them per transaction (see :meth:`TraceLinks.roll_up`)."""
        now_us = _now_us() if now_us is None else now_us
        before_hour = (now_us - _ROLLUP_DELAY_US) // HOUR_US
        more = before_hour > self._links.known_upto
        while more:
            # reads answer the same before and after: cached answers still hold
            with self._transaction(changes_answers=False) as db:
                more = self._links.roll_up(db, before_hour)

    def _refresh_links_periodically(self) -> None:
        while not self._links_stop.wait(_LINK_INTERVAL):
            try:
                self._refresh_links()
                self._roll_up_links()
            except StoreClosed:
                return
            except Exception:  # the next pass tries again; /dependencies still refreshes
                log.exception("could not bring the stored dependency links up to date")

    @_reading
    def operations(
        self, reader: Reader, service_name: str, end_ts: int, lookback: int
    ) -> list[OperationStats]:
        """Per span name and kind of ``service_name``: count, errors, p50/p90/p99/max (µs)."""
        service = service_name.lower()
        # per span name of the service, its spans of the window through (service, name, ts):
        # with the name left out, every span the service ever sent was read
        names = "(SELECT name FROM span_names WHERE kind = 'span' AND service = ?1)"
        # one row per name and kind, its durations as one text: a row per span cost a Python
        # step and a tuple each, half the CPU of the query (a day of one service at a million
        # spans: 121 -> 68 ms), and each row's step takes the GIL back from ingest's threads
        rows = reader.execute(
            "SELECT name, kind, sum(error), group_concat(duration) FROM spans WHERE service = ?1"
            + (f" AND name IN {names}" if service else "")
            + " AND ts BETWEEN ?2 AND ?3 AND duration IS NOT NULL GROUP BY name, kind"
            " ORDER BY name, coalesce(kind, '')",
            (service, (end_ts - lookback) * 1000, end_ts * 1000),
        )
        return [
            operation_stats(name, kind, sorted(map(int, durations.split(","))), errors)
            for name, kind, errors, durations in rows
        ]

    @_reading
    def operation_samples(
        self,
        reader: Reader,
        service_name: str,
        span_name: str,
        kind: str | None,
        end_ts: int,
        lookback: int,
        limit: int,
    ) -> OperationSamples:
        """Timestamp, duration and error of the newest ``limit`` spans of one operation."""
        # newest first along (service, name, ts) of spans_by_name, which also holds the kind:
        # no span row is read; index entries of the name's other kinds are stepped over (bounded
        # by the window and the query timeout, as /operations is)
        rows = reader.execute(
            "SELECT ts, duration, error, trace_low FROM spans WHERE service = ? AND name = ?"
            " AND ts BETWEEN ? AND ? AND duration IS NOT NULL AND kind IS ?"
            " ORDER BY ts DESC LIMIT ?",
            (
                service_name.lower(),
                span_name.lower(),
                (end_ts - lookback) * 1000,
                end_ts * 1000,
                kind,
                limit + 1,
            ),
        ).fetchall()
        return operation_samples_answer(rows, limit)

    # -- retention --------------------------------------------------------------------------

    @_reading
    def size_bytes(self, reader: Reader) -> int:
        """Bytes in use by the database (pages holding data, not free pages)."""
        [(used,)] = reader.execute(
            "SELECT (p.page_count - f.freelist_count) * s.page_size"
            " FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s"
        ).fetchall()
        return int(used)

    def _delete_traces(self, db: sqlite3.Connection, lows: list[int]) -> int:
        spans = 0
        for start in range(0, len(lows), _DELETE_CHUNK):
            chunk = [(low,) for low in lows[start : start + _DELETE_CHUNK]]
            before = db.total_changes
            db.executemany("DELETE FROM spans WHERE trace_low = ?", chunk)
            spans += db.total_changes - before
            _delete_terms(db, chunk)
            self._links.forget(db, [low for (low,) in chunk])  # reads the traces' rows
            db.executemany("DELETE FROM traces WHERE trace_low = ?", chunk)
        return spans

    def _unstored_names(
        self, db: sqlite3.Connection, names: list[tuple[str, str, str]]
    ) -> list[tuple[str, str, str]]:
        """Those of ``names`` (span_names rows) that the file may not have (under the write lock).

        A batch's names are mostly those of earlier batches, and inserting rows that are there
        already (INSERT OR IGNORE) cost about 9,000 instructions a span of a typical batch. The
        names written are remembered once committed; they are forgotten when retention deletes
        names, and when another connection has written the file since (its retention may have
        deleted some: the writer's data_version tells).
        """
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._names_version or len(self._stored_names) > _STORED_NAMES:
            self._stored_names.clear()
            self._names_version = version
        stored = self._stored_names
        return [name for name in names if name not in stored]

    def _forget_names(self, db: sqlite3.Connection) -> None:
        self._stored_names.clear()  # any of them may be deleted now
        db.execute(
            "DELETE FROM span_names WHERE kind = 'span' AND NOT EXISTS (SELECT 1 FROM spans s"
            " WHERE s.service = span_names.service AND s.name = span_names.name)"
        )
        db.execute(
            "DELETE FROM span_names WHERE kind = 'remote' AND NOT EXISTS (SELECT 1 FROM spans s"
            " WHERE s.service = span_names.service AND s.remote_service = span_names.name)"
        )

    def enforce_retention(self, now_us: int | None = None) -> RetentionResult:
        """Delete traces older than ``max_age``, then the oldest until under ``max_bytes``.

        Freed pages go back to the file system (incremental vacuum), so the file shrinks too.
        """
        now_us = _now_us() if now_us is None else now_us
        traces = spans = 0
        # an age reaching back before 1970 keeps everything (and overflows SQLite's integers)
        if self.max_age is not None and self.max_age * 1e6 < now_us:
            cutoff = now_us - int(self.max_age * 1e6)
            while not self._stopping:  # a stopping server finishes the chunk it is deleting
                with self._transaction() as db:
                    lows = [
                        row[0]
                        for row in db.execute(
                            "SELECT trace_low FROM traces WHERE received < ? LIMIT ?",
                            (cutoff, _DELETE_CHUNK * 4),
                        )
                    ]
                    spans += self._delete_traces(db, lows)
                traces += len(lows)
                if len(lows) < _DELETE_CHUNK * 4:
                    break
        if self.max_bytes is not None and self.size_bytes() > self.max_bytes:
            target = int(self.max_bytes * 0.9)  # headroom, so not every pass has to purge
            for _ in range(50):
                used = self.size_bytes()
                if used <= target:
                    break
                with self._transaction() as db:
                    count = db.execute("SELECT count(*) FROM traces").fetchone()[0]
                    if not count:
                        break
                    excess = math.ceil((used - target) / (used / count))
                    # in chunks: a long transaction would hold up the batches being ingested
                    lows = [
                        row[0]
                        for row in db.execute(
                            "SELECT trace_low FROM traces ORDER BY received, ts LIMIT ?",
                            (min(max(1, excess), _DELETE_CHUNK * 4),),
                        )
                    ]
                    spans += self._delete_traces(db, lows)
                traces += len(lows)
        if traces:
            with self._transaction() as db:
                self._forget_names(db)
            with self._write_lock:
                # the pragma frees one page per step; executescript steps it to the end
                self._writer.executescript("PRAGMA incremental_vacuum;")
                self._request_wal_reset()  # the log holds every deleted page
        return RetentionResult(traces_deleted=traces, spans_deleted=spans)

    @_reading
    def span_count(self, reader: Reader) -> int:
        """How many spans are stored."""
        return int(reader.execute("SELECT count(*) FROM spans").fetchone()[0])


#: The stores open in this process, for the fork hook (weakly: a store that is gone needs nothing).
_OPEN_STORES: weakref.WeakSet[SqliteSpanStore] = weakref.WeakSet()


class _ForkHold:
    """What the thread forking holds of one store, each part recorded as soon as it is taken:
    an exception in the middle (a signal handler's) must not leave any of it held."""

    __slots__ = ("checkpoints", "lock", "readers")

    def __init__(self) -> None:
        self.lock: threading.Lock | None = None
        self.readers: ReaderPool | None = None
        self.checkpoints: BackgroundCheckpoints | None = None

    def release(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.release_after_fork()
        if self.readers is not None:
            self.readers.release_after_fork()
        if self.lock is not None:
            self.lock.release()


#: One fork at a time: a second thread forking meanwhile would release the first one's holds.
#: Stores register under it too, so that none joins while a fork holds the others. Reentrant,
#: because an RLock knows its owner from the moment it is taken (see _release_after_fork).
_FORKING = threading.RLock()
#: The holds of the fork in progress (see _hold_for_fork).
_HELD_FOR_FORK: list[_ForkHold] = []


def _hold_for_fork() -> None:
    """Before a fork: no SQLite lock may be held, by any connection of this process, while
    the process is copied.

    SQLite keeps the locks of a process's connections to a file in one table, which the child
    inherits: a lock held at the fork stays held there for ever, by a connection the child never
    uses again. Forked in the middle of a write, the child could never write; in the middle of a
    read or a checkpoint, it could never start the log over, which then grows without bound. So
    the fork waits for the write (or the opening or closing of a store), the reads and the
    checkpoint in progress, up to _FORK_WAIT for the write and the reads, and none starts until
    it is done.
    """
    _FORKING.acquire()  # released by _release_after_fork, or replaced in the child
    deadline = time.monotonic() + _FORK_WAIT
    for store in list(_OPEN_STORES):
        hold = _ForkHold()
        _HELD_FOR_FORK.append(hold)
        lock = store._write_lock
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            hold.lock = lock
        readers = store._readers
        hold.readers = readers
        reads_ended = readers.hold_for_fork(max(0.0, deadline - time.monotonic()))
        store._checkpoints.hold_for_fork()
        hold.checkpoints = store._checkpoints
        if hold.lock is None or not reads_ended:
            log.warning(
                "forking while the span store %s is still %s after %g s: the child process "
                "may find the store locked for good",
                store.path,
                "writing" if hold.lock is None else "answering a query",
                _FORK_WAIT,
            )


def _release_after_fork() -> None:
    if not _FORKING.acquire(blocking=False):
        return  # another thread is forking (this one's hook failed before it took the lock)
    try:
        while _HELD_FOR_FORK:
            _HELD_FOR_FORK.pop().release()
    finally:
        _FORKING.release()  # the acquire just above
        with suppress(RuntimeError):  # not taken if _hold_for_fork was interrupted first
            _FORKING.release()


def _reopen_in_child() -> None:
    global _FORKING
    _FORKING = threading.RLock()
    _HELD_FOR_FORK.clear()  # the child's stores get locks, readers and checkpointers of their own
    for store in list(_OPEN_STORES):
        try:
            store._after_fork_in_child()
        except Exception:  # the others must still get theirs
            log.exception("could not reopen the span store %s in the forked process", store.path)
            store._closed = True  # its calls raise StoreClosed, never use the parent's writer


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(
        before=_hold_for_fork,
        after_in_parent=_release_after_fork,
        after_in_child=_reopen_in_child,
    )


def _migrate_terms(db: sqlite3.Connection) -> None:
    """Rewrite the terms of a file of version 1 to 3 (keyed by trace, with an index by term and
    value) as version 4 keeps them (inside the caller's transaction: a crash leaves version 3).
    """
    db.execute("ALTER TABLE span_terms RENAME TO span_terms_3")
    db.execute(_SPAN_TERMS)
    # read in the new key's order through the old index: the new B-tree is filled in order
    db.execute(
        "INSERT INTO span_terms SELECT term, value, trace_low, service"
        " FROM span_terms_3 INDEXED BY terms_by_value ORDER BY term, value, trace_low, service"
    )
    for statement in _TRACE_TERMS.split(";"):
        db.execute(statement)
    entry = (
        f"char(31) || {_sql_escaped('service')} || char(30) || {_sql_escaped('term')}"
        f" || char(30) || {_sql_escaped('value')}"
    )
    db.execute(
        f"INSERT INTO trace_terms SELECT trace_low, group_concat({entry}, '')"
        " FROM span_terms_3 GROUP BY trace_low ORDER BY trace_low"
    )
    db.execute("DROP TABLE span_terms_3")  # and its index


def _open_error(path: Path, error: OSError | sqlite3.Error) -> str:
    """Why ``path`` cannot be a span database, in one line for an operator."""
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                return f"cannot create {path}: {folder} is a file, not a folder"
            break
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    if isinstance(error, sqlite3.DatabaseError) and "not a database" in str(error):
        return f"{path} is not a SQLite database (is it the right file?)"
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return f"cannot open {path}: {reason}"


# SQLite's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 5, 6, 13


def _lock_for_opening(writer: sqlite3.Connection) -> None:
    """Set the file's modes and take its write lock (each waits for another's write lock)."""
    writer.execute("PRAGMA auto_vacuum = INCREMENTAL")  # only takes on a new file
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("BEGIN IMMEDIATE")


def _result_code(error: sqlite3.OperationalError) -> int | None:
    """SQLite's primary result code for an error (read from its text before Python 3.11)."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF
    text = str(error)
    if "disk is full" in text:
        return _SQLITE_FULL
    if "locked" in text:
        return _SQLITE_BUSY
    return None


def _is_locked(error: sqlite3.OperationalError) -> bool:
    """Whether an error says another connection holds a lock this one waited for."""
    return _result_code(error) in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _unavailable(error: sqlite3.OperationalError) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` a write error means (full disk, locked database), if any."""
    text = str(error)
    if _result_code(error) == _SQLITE_FULL:
        return StoreUnavailable(f"the span store's disk is full ({text}); nothing was stored")
    if _is_locked(error):
        return StoreUnavailable(f"the span store is busy ({text}); nothing was stored", 5)
    return None


#: How many of the newest traces the first search plan probes before switching plans.
_PROBE_TRACES = 2000
#: A service and span name with fewer spans than this (of any time) is searched from its spans
#: (counting them up to this in spans_by_name costs well under a millisecond): the probe of the
#: newest traces would mostly look for it in vain.
_RARE_NAME_SPANS = 5000


def _is_rare_name(reader: Reader, request: QueryRequest) -> bool:
    """Whether the search names a service and span name with few spans (see _RARE_NAME_SPANS)."""
    if request.service_name is None or request.span_name is None:
        return False
    [(count,)] = reader.execute(
        "SELECT count(*) FROM (SELECT 1 FROM spans WHERE service = ? AND name = ? LIMIT ?)",
        (request.service_name, request.span_name, _RARE_NAME_SPANS),
    ).fetchall()
    return bool(count < _RARE_NAME_SPANS)


#: A search criterion: (table, SQL condition, bound values).
_Criterion = tuple[str, str, list[Any]]


#: Rows counted at most, first and in all, when choosing where a term search goes on: past
#: the last, the window and the term are large whichever way they are read.
_FIRST_COUNT_CAP = 1024
_WINDOW_COUNT_CAP = 262_144
#: A term with fewer rows than this (of any time and service) is searched from its rows before
#: any probe. Counting them costs about 8 SQLite VM steps a row, a probe finding 20 matches of a
#: common term some 15,000: counting up to the probe's 2,000 traces doubled the cost of a
#: search by a common tag.
_RARE_TERM_ROWS = 256
#: What reading one of a term's rows costs, in probes of a trace of the window (each a seek per
#: criterion): a term search starts from the term's rows when they cost less than the probes.
_TERM_ROW_COST = 1.0


def _count(reader: Reader, rows: str, values: Sequence[Any], cap: int) -> int:
    """How many rows ``rows`` (a FROM clause with its WHERE) selects, counted up to ``cap``."""
    [(count,)] = reader.execute(
        f"SELECT count(*) FROM (SELECT 1 FROM {rows} LIMIT ?)", [*values, cap]
    ).fetchall()
    return int(count)


def _rarest_term(
    reader: Reader, request: QueryRequest, criteria: list[_Criterion], cap: int
) -> tuple[int, int] | None:
    """(rows up to ``cap``, index in ``criteria``) of the term of ``annotationQuery`` with the
    fewest rows; None without a term. The rows of every service count: the service is not in
    the term index, so starting from the term reads them all."""
    terms = [index for index, criterion in enumerate(criteria) if criterion[0] in _TERMS]
    counted = []
    # _criteria lists the terms last, in the order of the query
    for index, (key, value) in zip(terms, request.annotation_query.items(), strict=True):
        where, values = _term_condition(key, value)
        counted.append((_count(reader, f"span_terms x WHERE {where}", values, cap), index))
    return min(counted, default=None)


def _split(criteria: list[_Criterion], index: int) -> tuple[_Criterion, list[_Criterion]]:
    """The criterion at ``index``, and the others."""
    return criteria[index], criteria[:index] + criteria[index + 1 :]


#: Criteria on span_terms: a term with a value ("terms"), a bare word ("keys").
_TERMS = ("terms", "keys")
_TABLES = {
    "spans": "spans s INDEXED BY spans_by_trace",
    "terms": "span_terms x",
}
_ALIAS = {"spans": "s", "terms": "x", "keys": "x"}
#: A bare word (of a service) as the probe of a trace finds it: in the trace's term lists.
_KEY, _KEY_OF_SERVICE = "x.term = ?", "x.service = ? AND x.term = ?"
_LISTED = {
    _KEY: f"instr(k.terms, char(30) || {_sql_escaped('?')} || char(30))",
    _KEY_OF_SERVICE: f"instr(k.terms, char(31) || {_sql_escaped('?')} || char(30)"
    f" || {_sql_escaped('?')} || char(30))",
}


def _term_condition(key: str, value: str) -> tuple[str, list[Any]]:
    """The condition on span_terms matching one entry of ``annotationQuery``."""
    if value:
        return "x.term = ? AND x.value = ?", [key, value]
    return "x.term = ?", [key]


def _criteria(request: QueryRequest) -> list[_Criterion]:
    """Each search criterion as (table, SQL condition, bound values), scoped to the service."""
    service = request.service_name
    scope, scope_values = ("s.service = ?", [service]) if service is not None else ("1", [])
    criteria: list[_Criterion] = []
    if request.span_name is not None:
        criteria.append(("spans", f"{scope} AND s.name = ?", [*scope_values, request.span_name]))
    if request.remote_service_name is not None:
        condition = f"{scope} AND s.remote_service = ?"
        criteria.append(("spans", condition, [*scope_values, request.remote_service_name]))
    if request.min_duration is not None:
        if request.max_duration is not None:
            condition = f"{scope} AND s.duration BETWEEN ? AND ?"
            values = [*scope_values, request.min_duration, request.max_duration]
        else:
            condition, values = (
                f"{scope} AND s.duration >= ?",
                [*scope_values, request.min_duration],
            )
        criteria.append(("spans", condition, values))
    for key, value in request.annotation_query.items():
        if not value:  # the probe reads these conditions' values for _LISTED's
            if service is None:
                criteria.append(("keys", _KEY, [key]))
            else:
                criteria.append(("keys", _KEY_OF_SERVICE, [service, key]))
            continue
        condition, values = _term_condition(key, value)
        if service is not None:
            condition += " AND x.service = ?"
            values.append(service)
        criteria.append(("terms", condition, values))
    # every criterion above is scoped to the service (a term row names its span's service):
    # the service alone is a criterion only when there is no other
    if service is not None and not criteria:
        criteria.append(("spans", scope, scope_values))
    return criteria


def _exists(table: str, where: str) -> str:
    if table == "keys":
        return (
            "EXISTS (SELECT 1 FROM trace_terms k WHERE k.trace_low = t.trace_low"
            f" AND {_LISTED[where]})"
        )
    alias = _ALIAS[table]
    return (
        f"EXISTS (SELECT 1 FROM {_TABLES[table]} WHERE {alias}.trace_low = t.trace_low AND {where})"
    )


def _in(table: str, where: str) -> str:
    source = "spans s" if table == "spans" else "span_terms x"
    return f"t.trace_low IN (SELECT {_ALIAS[table]}.trace_low FROM {source} WHERE {where})"


class _Rows(NamedTuple):
    """One batch's rows, ready for the insert statements of :func:`_write_rows`, and the
    dependency links of each of its traces as if the batch held all their spans."""

    spans: list[tuple[Any, ...]]
    terms: list[tuple[str, str, int, str]]
    term_lists: list[tuple[int, str]]
    traces: list[tuple[Any, ...]]
    names: list[tuple[str, str, str]]
    links: list[PendingTrace]


def _prepare_rows(spans: Sequence[SpanDict], received: int, written: Container[int] = ()) -> _Rows:
    """The rows storing ``spans`` (received at ``received`` µs): CPU work for the caller's
    thread, so that the writer only inserts.

    The links of traces in ``written`` (trace lows written recently) are not computed: those
    traces have spans stored already, and are linked again from all of them.
    """
    rows: list[tuple[Any, ...]] = []
    # per trace: a batch's term list is each trace's own, and sorting all the terms by
    # span_terms' key cost more in tuple comparisons (about 10k instructions a span) than
    # inserting them in the order they come saves SQLite
    terms_of: dict[int, set[tuple[str, str, int, str]]] = {}
    traces: dict[int, list[Any]] = {}
    names: set[tuple[str, str, str]] = set()
    lows: dict[str, int] = {}  # a batch holds a few spans of each trace
    # The span_fields helpers written out, and names bound once per batch: a call or a global
    # per field and span cost about 1,400 instructions a span.
    add_row = rows.append
    add_name = names.add
    digest_of = hashlib.blake2b
    longest = MAX_INDEXED_VALUE
    stored, bodies = stored_json_each(spans)
    for span, body in zip(stored, bodies, strict=True):
        get = span.get
        trace_id = span["traceId"]
        low = lows.get(trace_id)
        if low is None:
            low = lows[trace_id] = trace_id_low(trace_id)
            terms = terms_of[low] = set()
        else:
            terms = terms_of[low]
        endpoint = get("localEndpoint")
        service = endpoint.get("serviceName", "") if endpoint else ""
        if service.__class__ is not str:
            service = local_service(span)
        endpoint = get("remoteEndpoint")
        remote = endpoint.get("serviceName", "") if endpoint else ""
        if remote.__class__ is not str:
            remote = remote_service(span)
        name = get("name", "")
        timestamp = get("timestamp")
        parent_id = get("parentId")
        tags = get("tags")
        add_row(
            (
                low,
                trace_id,
                span["id"],
                parent_id,
                get("kind"),
                1 if get("shared") else 0,
                name,
                service,
                remote,
                timestamp,
                get("duration"),
                1 if tags is not None and "error" in tags else 0,  # span_fields.is_error
                digest_of(body, digest_size=12).digest(),
                body,
            )
        )
        # A term is a tag key with its value, or an annotation value with "" (only a bare
        # word matches it); one row per trace, term, value and service suffices.
        if tags:
            add_term = terms.add
            for key, value in tags.items():
                add_term((key, value if len(value) <= longest else "", low, service))
        notes = get("annotations")
        if notes:
            for annotation in notes:
                if len(annotation["value"]) <= longest:
                    terms.add((annotation["value"], "", low, service))
        root_ts = timestamp if timestamp and not parent_id else None
        trace = traces.get(low)
        if trace is None:
            traces[low] = [low, trace_id, timestamp, root_ts, received]
        else:  # fold the batch's spans of one trace into one row, as the upsert would
            if len(trace_id) > len(trace[1]):
                trace[1] = trace_id
            if timestamp and (trace[2] is None or timestamp < trace[2]):
                trace[2] = timestamp
            if trace[3] is None:
                trace[3] = root_ts
        if service:
            add_name((service, "span", name))
            if remote:
                add_name((service, "remote", remote))
    for trace in traces.values():
        if trace[3] is not None:
            trace[2] = trace[3]  # Zipkin's trace timestamp is the root's
    rows.sort(key=_INDEX_ORDER)  # index order: fewer pages touched
    links = _batch_links(rows, traces.values(), written)
    # the links of a trace new to the file go in its row (see _UPSERT_TRACE)
    columns = {trace.trace_low: sqlite_links.trace_columns(trace) for trace in links}
    trace_rows = [(*t, *columns.get(t[0], _NO_LINKS)) for t in traces.values()]
    term_rows = [term for terms in terms_of.values() for term in terms]
    term_lists = [(low, _term_list(terms)) for low, terms in terms_of.items() if terms]
    return _Rows(rows, term_rows, term_lists, trace_rows, sorted(names), links)


#: A span row's place in ``spans_by_trace`` (trace, digest).
_INDEX_ORDER = operator.itemgetter(0, 12)


#: A span row's columns that the linker reads (a :data:`~.dependencies.LinkRow`), and its trace.
_LINK_COLUMNS = operator.itemgetter(2, 3, 4, 5, 7, 8, 11)
_TRACE_LOW = operator.itemgetter(0)


_NO_LINKS = (None, None)


def _batch_links(
    rows: list[tuple[Any, ...]], traces: Iterable[Sequence[Any]], written: Container[int]
) -> list[PendingTrace]:
    """The links of each trace of a batch not in ``written``, from its span rows (sorted by
    trace and digest).

    Exactly what :meth:`TraceLinks.read_pending` computes once the rows are stored, for a trace
    with no other spans: the same columns, in the order of ``spans_by_trace`` (trace, digest).
    Rows with one digest are stored once (``INSERT OR IGNORE``) but not left out here: the
    linker merges a span's copies into one, as Zipkin does, so they link as one span. Done
    here, on the uploading thread, it saves the writer the trace's pending mark and a second
    transaction reading its spans back: about a quarter of the CPU of ingesting a span.
    """
    timestamps = {trace[0]: trace[2] for trace in traces}
    computed: list[PendingTrace] = []
    for low, trace_rows in itertools.groupby(rows, key=_TRACE_LOW):
        if low in written:
            continue
        ts = timestamps[low]
        if ts is None:  # a trace without a timestamp is in no window: no links are stored
            computed.append(PendingTrace(low, 0, None, {}))
            continue
        spans = list(map(_LINK_COLUMNS, trace_rows))
        computed.append(PendingTrace(low, 0, ts, sqlite_links.links_of(spans)))
    return computed


def _delete_terms(db: sqlite3.Connection, lows: list[tuple[int]]) -> None:
    """Delete the span_terms and trace_terms rows of the traces ``lows`` (one-tuples)."""
    marks = ",".join("?" * len(lows))
    listed = db.execute(
        f"SELECT trace_low, terms FROM trace_terms WHERE trace_low IN ({marks})",
        [low for (low,) in lows],
    ).fetchall()
    # one statement per term and value of a trace deletes it for every service (a tag such
    # as http.method=GET is on most services of a trace): each statement costs more than
    # the rows it deletes; unsorted, as tuple comparisons cost more than order saves SQLite
    db.executemany(
        "DELETE FROM span_terms WHERE term = ? AND value = ? AND trace_low = ?",
        {(term, value, low) for low, terms in listed for _, term, value in _listed_terms(terms)},
    )
    db.executemany("DELETE FROM trace_terms WHERE trace_low = ?", lows)


def _stored_traces(db: sqlite3.Connection, lows: Sequence[int]) -> set[int]:
    """Which of the traces ``lows`` have rows (so spans) in the file already."""
    found: set[int] = set()
    for start in range(0, len(lows), _DELETE_CHUNK):
        chunk = lows[start : start + _DELETE_CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            row[0]
            for row in db.execute(
                f"SELECT trace_low FROM traces WHERE trace_low IN ({marks})", chunk
            )
        )
    return found


def _write_rows(
    db: sqlite3.Connection, rows: _Rows, names: list[tuple[str, str, str]] | None = None
) -> int:
    """Insert one prepared batch (inside the caller's transaction); how many spans were new.

    ``names``: those of the batch's span_names rows to insert (all of them by default).
    """
    before = db.total_changes
    db.executemany(_INSERT_SPAN, rows.spans)
    inserted = db.total_changes - before
    db.executemany(_INSERT_TERM, rows.terms)
    db.executemany(_INSERT_TERM_LIST, rows.term_lists)
    db.executemany(_UPSERT_TRACE, rows.traces)
    db.executemany(
        "INSERT OR IGNORE INTO span_names VALUES (?, ?, ?)", rows.names if names is None else names
    )
    return inserted


def _copy_error(error: StoreUnavailable | StoreClosed) -> Exception:
    """A fresh exception like ``error``, for one of the callers sharing a failed commit."""
    if isinstance(error, StoreUnavailable):
        copy: Exception = StoreUnavailable(str(error), error.retry_after)
    else:
        copy = StoreClosed(str(error))
    copy.__cause__ = error.__cause__
    return copy
