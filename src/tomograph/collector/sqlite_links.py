"""Dependency links kept up to date in the SQLite store, so ``/dependencies`` reads sums.

Computing links means arranging each trace's spans as a tree (:mod:`.dependencies`): over a
day of a busy collector that was a scan of every span, a minute long. Here each trace's links
are computed once per change and stored:

* ``links_pending`` names the traces that received spans since their links were computed; a
  write adds its traces there in its own transaction (one upsert per trace, nothing else);
* :meth:`TraceLinks.read_pending` and :meth:`TraceLinks.apply` compute those traces' links off
  the write path (a background thread, and a query first brings them up to date) and store
  them in the trace's row of ``traces``: ``links`` packed in one text (:func:`pack_links`),
  ``links_ts`` the trace's timestamp they were computed at (the sums hold them there; the
  trace's ``ts`` may have moved since, while it is pending);
* a trace that had no spans before a write is not marked: all its spans are in that write, so
  its links are computed from them before the write (:func:`links_of`, the same computation
  from the same columns), written in its new row of ``traces`` and added to the sums in that
  transaction (:meth:`TraceLinks.add`);
* ``link_minutes`` keeps their sums per minute of trace timestamp, moved by the differences;
  ``link_hours`` keeps them per hour, for the hours before the one ``link_hours_upto`` names
  (none for that hour or later). A write moves the sums of later hours in ``link_minutes``
  only: spans arrive with timestamps of the current hour, and one upsert per trace and service
  pair is what ingest then pays (the second, of the hour, cost about 3,500 instructions a span).
  Sums of earlier hours (late spans, retention, recomputed traces) move in both tables. The
  background rolls closed hours up (:meth:`TraceLinks.roll_up`): their sums summed from
  ``link_minutes`` into ``link_hours``, and the mark moved past them, in one transaction.

A window counts its whole hours before the mark from ``link_hours``, the whole minutes left
from ``link_minutes`` and what is left of those (under a minute at each edge) from the rows of
``traces`` by ``links_ts``: the same traces as the full computation (those whose timestamp is
in the window), whatever order and batches their spans came in. A day reads about 24 + 2 x 60
sums per service pair (plus the minutes of the hours not rolled up yet).

Schema 4 kept the links in a table of their own, a row per trace and service pair with an
index by timestamp: written in the trace's row instead, with an index entry per trace that has
links, they cost about 15,000 instructions a span less to ingest (issue 14).

Each pending trace carries the sequence number of its latest write. Links are computed from one
read snapshot that includes that write; the trace leaves ``links_pending`` only if no write
came since, so a concurrent write is never lost, only computed again.
"""

from __future__ import annotations

import itertools
import json
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _json_string
from typing import TypeVar

from tomograph.collector.dependencies import LinkCounts, LinkRow, trace_links
from tomograph.collector.storage import DependencyLink

__all__ = [
    "HOUR_US",
    "LINKS_BY_TS",
    "LINK_OBJECTS",
    "LINK_SCHEMA",
    "ROLLUP_SCHEMA",
    "PendingTrace",
    "TraceLinks",
    "links_of",
    "pack_links",
    "trace_columns",
    "unpack_links",
]

#: The columns of ``traces`` that hold its stored links (added to a file of version 1 to 4).
TRACE_LINK_COLUMNS = (("links_ts", "INTEGER"), ("links", "TEXT"))
#: The traces with stored links by their timestamp (the edges of a window read them).
LINKS_BY_TS = (
    "CREATE INDEX IF NOT EXISTS traces_by_links_ts ON traces(links_ts) WHERE links_ts IS NOT NULL"
)
#: The tables of LINK_SCHEMA and ROLLUP_SCHEMA, and LINKS_BY_TS.
LINK_OBJECTS = {
    "traces_by_links_ts",
    "link_hours",
    "link_minutes",
    "links_pending",
    "link_hours_upto",
}
#: One row: ``link_hours`` holds the sums of the hours before ``hour`` (hours since the epoch),
#: nothing of later ones (schema 6).
ROLLUP_SCHEMA = "CREATE TABLE IF NOT EXISTS link_hours_upto (hour INTEGER NOT NULL)"
LINK_SCHEMA = """
CREATE TABLE IF NOT EXISTS link_hours (
    bucket INTEGER NOT NULL,
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (bucket, parent, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS link_minutes (
    bucket INTEGER NOT NULL,
    parent TEXT NOT NULL,
    child TEXT NOT NULL,
    calls INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (bucket, parent, child)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links_pending (
    trace_low INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL
);
"""

#: The length of the buckets of link_hours and link_minutes (µs of trace time).
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
#: The tables of sums, coarsest first, with the length of their buckets.
_SUMS = (("link_hours", HOUR_US), ("link_minutes", MINUTE_US))
#: How many hours one roll-up transaction sums at most (it holds the write lock meanwhile).
ROLLUP_HOURS = 24
#: Traces computed per round: a round's write holds the write lock for about 10-30 ms.
ROUND_TRACES = 500
_IN_CHUNK = 500
_FIRST = operator.itemgetter(0)
#: After every minute a sum can be kept for (the first minute moved, when none is).
_NO_MINUTE = 2**63
_Key = TypeVar("_Key")


@dataclass(frozen=True)
class PendingTrace:
    """A trace's links as computed from one snapshot, and the write they include."""

    trace_low: int
    seq: int
    ts: int | None  # the trace's timestamp (µs); None: no span has one
    links: LinkCounts  # (parent, child) -> [calls, errors]


def links_of(spans: Sequence[LinkRow]) -> LinkCounts:
    """(parent, child) -> [calls, errors] of one trace's spans, in the order of
    ``spans_by_trace`` (trace, digest)."""
    return trace_links(spans)


def pack_links(links: LinkCounts) -> str:
    """One trace's links as the text ``traces.links`` keeps: a JSON array of
    ``[parent, child, calls, errors]`` (JSON: a service name may hold any character).

    Written out here, the text :class:`json.JSONEncoder` makes with the separators ``,`` and
    ``:`` (the names escaped by the function it uses, the counts being ints): without the list
    of lists it encodes and the encoder it builds per call, at about a third less cost (a
    trace's links are packed in the write of its spans).

    >>> pack_links({("web", "db"): [2, 1]})
    '[["web","db",2,1]]'
    """
    return (
        "["
        + ",".join(
            [
                f"[{_json_string(parent)},{_json_string(child)},{calls},{errors}]"
                for (parent, child), (calls, errors) in links.items()
            ]
        )
        + "]"
    )


def unpack_links(packed: str) -> list[tuple[str, str, int, int]]:
    """The ``(parent, child, calls, errors)`` of a text of :func:`pack_links`.

    >>> unpack_links('[["web","db",2,1]]')
    [('web', 'db', 2, 1)]
    """
    return [(parent, child, calls, errors) for parent, child, calls, errors in json.loads(packed)]


def _chunks(values: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _marks(count: int) -> str:
    return ",".join("?" * count)


class TraceLinks:
    """The stored links of a SQLite span store (the tables of :data:`LINK_SCHEMA`).

    Every method takes the connection to use: the store decides which one and in which
    transaction. ``next_seq`` continues the sequence found in the file (see :meth:`last_seq`).
    """

    def __init__(self, next_seq: int) -> None:
        self._seq = itertools.count(next_seq)
        self.last_seq = next_seq - 1  # the number of the latest mark
        # the mark of link_hours_upto as last seen here: another connection may have moved it
        # since, so it only tells when a roll-up may be due
        self.known_upto = 0

    @staticmethod
    def stored_seq(db: sqlite3.Connection) -> int:
        """The largest sequence number pending in the file (0 if none)."""
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM links_pending").fetchone()[0])

    @staticmethod
    def create(db: sqlite3.Connection, existing_traces: bool) -> None:
        """Create the tables; with ``existing_traces``, every stored trace becomes pending."""
        for statement in LINK_SCHEMA.split(";"):
            if statement.strip():
                db.execute(statement)
        if existing_traces:
            db.execute("INSERT OR IGNORE INTO links_pending SELECT trace_low, 0 FROM traces")

    @staticmethod
    def move_to_traces(db: sqlite3.Connection) -> None:
        """Give ``traces`` the columns of its links, filled from the ``trace_links`` of schema 2
        to 4 (a row per trace and service pair), which goes; inside the caller's transaction,
        the sums stay as they are.

        The rows of one trace were all written with its timestamp at the time (in one swap of
        its links), so one timestamp per trace loses nothing.
        """
        for column, kind in TRACE_LINK_COLUMNS:
            db.execute(f"ALTER TABLE traces ADD COLUMN {column} {kind}")
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'trace_links'").fetchone():
            old = db.execute(
                "SELECT trace_low, ts, parent, child, calls, errors FROM trace_links"
                " ORDER BY trace_low"
            )

            def packed() -> Iterator[tuple[int, str, int]]:
                for low, group in itertools.groupby(old, key=_FIRST):
                    rows = list(group)
                    links = {(row[2], row[3]): [row[4], row[5]] for row in rows}
                    yield rows[0][1], pack_links(links), low

            db.executemany(
                "UPDATE traces SET links_ts = ?, links = ? WHERE trace_low = ?", packed()
            )
            db.execute("DROP TABLE trace_links")  # and its index

    @staticmethod
    def start_rollup(db: sqlite3.Connection, hour: int) -> None:
        """Create ``link_hours_upto`` with its mark at ``hour`` (inside the caller's
        transaction), for a file whose ``link_minutes`` holds every sum: the sums of ``hour``
        and later leave ``link_hours``, where they are no longer kept."""
        db.execute(ROLLUP_SCHEMA)
        db.execute("DELETE FROM link_hours WHERE bucket >= ?", (hour,))
        db.execute("DELETE FROM link_hours_upto")
        db.execute("INSERT INTO link_hours_upto VALUES (?)", (hour,))

    def roll_up(self, db: sqlite3.Connection, before_hour: int) -> bool:
        """In a write transaction: sum the hours from the mark to ``before_hour`` (at most
        :data:`ROLLUP_HOURS` of them that have sums) from ``link_minutes`` into ``link_hours``
        and move the mark past them; whether hours before ``before_hour`` are left to roll up.

        The mark never goes back: hours only close. The hours rolled up hold nothing in
        ``link_hours`` until now (writes moved their sums in ``link_minutes`` only); what a
        writer that did not know the mark (an older tomograph still running on the file) left
        there is replaced, not added to.
        """
        upto = _rolled_up(db)
        if before_hour <= upto:
            self.known_upto = upto
            return False
        # skip at once the hours without sums (the first roll-up of a new file starts at 0)
        [(first,)] = db.execute(
            "SELECT min(bucket) FROM link_minutes WHERE bucket >= ?", (upto * 60,)
        ).fetchall()
        end = before_hour if first is None else min(before_hour, first // 60 + ROLLUP_HOURS)
        db.execute("DELETE FROM link_hours WHERE bucket >= ? AND bucket < ?", (upto, end))
        if first is not None and first < end * 60:
            # buckets from the mark on are >= 0 (the mark starts at 0 or later): / floors
            db.execute(
                "INSERT INTO link_hours SELECT bucket / 60, parent, child, sum(calls),"
                " sum(errors) FROM link_minutes WHERE bucket >= ? AND bucket < ?"
                " GROUP BY bucket / 60, parent, child",
                (upto * 60, end * 60),
            )
        db.execute("UPDATE link_hours_upto SET hour = ?", (end,))
        self.known_upto = end
        return end < before_hour

    def mark(self, db: sqlite3.Connection, trace_lows: Iterable[int]) -> None:
        """In a write's transaction: the traces it wrote need their links computed again."""
        seq = next(self._seq)
        db.executemany(
            "INSERT INTO links_pending VALUES (?, ?)"
            " ON CONFLICT (trace_low) DO UPDATE SET seq = excluded.seq",
            [(low, seq) for low in trace_lows],
        )
        self.last_seq = seq

    def add(self, db: sqlite3.Connection, computed: Sequence[PendingTrace]) -> None:
        """In a write's transaction: add to the sums the links of traces it wrote the first
        spans of, which it wrote in their new rows of ``traces`` (see :func:`trace_columns`).

        Each trace must have had no spans before the write, so no stored links either; its
        links are those of the spans in the write (``seq`` is not read).
        """
        self._move_sums(db, [], computed)

    def forget(self, db: sqlite3.Connection, trace_lows: Sequence[int]) -> None:
        """In a deletion's transaction, before the traces' rows are deleted: take their links
        out of every sum."""
        self._move_sums(db, trace_lows, [])
        for chunk in _chunks(trace_lows):
            db.execute(
                f"DELETE FROM links_pending WHERE trace_low IN ({_marks(len(chunk))})", chunk
            )

    def read_pending(
        self,
        db: sqlite3.Connection,
        up_to: int | None = None,
        limit: int | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> list[PendingTrace]:
        """Up to ``limit`` (:data:`ROUND_TRACES`) pending traces marked at ``up_to`` or before.

        One statement, so one snapshot: the spans read include every write the seq stands for.
        ``check`` is called before each trace's tree is built (it raises to stop the read).
        """
        rows = db.execute(
            "SELECT p.trace_low, p.seq, t.ts, s.span_id, s.parent_id, s.kind, s.shared,"
            " s.service, s.remote_service, s.error"
            " FROM (SELECT trace_low, seq FROM links_pending WHERE seq <= ? LIMIT ?) p"
            " LEFT JOIN traces t ON t.trace_low = p.trace_low"
            " LEFT JOIN spans s ON s.trace_low = p.trace_low"
            " ORDER BY p.trace_low",
            (self.last_seq if up_to is None else up_to, limit or ROUND_TRACES),
        )
        pending: list[PendingTrace] = []
        current: tuple[int, int, int | None] | None = None
        spans: list[LinkRow] = []

        def close() -> None:
            if current is not None:
                check()
                low, seq, ts = current
                links = links_of(spans) if ts is not None else {}
                pending.append(PendingTrace(low, seq, ts, links))

        for low, seq, trace_ts, *span_row in rows:
            if current is None or low != current[0]:
                close()
                current, spans = (low, seq, trace_ts), []
            if span_row[0] is not None:
                spans.append(span_row)
        close()
        return pending

    def apply(self, db: sqlite3.Connection, computed: Sequence[PendingTrace]) -> None:
        """In a write transaction: store links computed by :meth:`read_pending`.

        Traces deleted since are skipped (their links would come back); a trace that received
        spans since stays pending, to be computed again.
        """
        lows = [trace.trace_low for trace in computed]
        alive: set[int] = set()
        for chunk in _chunks(lows):
            alive.update(
                row[0]
                for row in db.execute(
                    f"SELECT trace_low FROM traces WHERE trace_low IN ({_marks(len(chunk))})",
                    chunk,
                )
            )
        kept = [trace for trace in computed if trace.trace_low in alive]
        self._move_sums(db, [trace.trace_low for trace in kept], kept)
        db.executemany(
            "UPDATE traces SET links_ts = ?, links = ? WHERE trace_low = ?",
            [(*trace_columns(trace), trace.trace_low) for trace in kept],
        )
        db.executemany(
            "DELETE FROM links_pending WHERE trace_low = ? AND seq = ?",
            [(trace.trace_low, trace.seq) for trace in computed],
        )

    def _move_sums(
        self, db: sqlite3.Connection, trace_lows: Sequence[int], new: Sequence[PendingTrace]
    ) -> None:
        """Move the sums from the stored links of ``trace_lows`` to the links ``new``: in
        ``link_minutes``, and in ``link_hours`` for hours rolled up already."""
        minutes: dict[tuple[int, str, str], list[int]] = {}  # (minute, parent, child) -> change
        earliest = _NO_MINUTE  # the first minute moved
        for ts, packed in _stored_links(db, trace_lows):
            minute = ts // MINUTE_US
            earliest = min(earliest, minute)
            for parent, child, calls, errors in unpack_links(packed):
                _add_counts(minutes, (minute, parent, child), -calls, -errors)
        for trace in new:
            if trace.ts is None:
                continue  # a trace without a timestamp is in no window
            minute = trace.ts // MINUTE_US
            earliest = min(earliest, minute)
            for (parent, child), (calls, errors) in trace.links.items():
                _add_counts(minutes, (minute, parent, child), calls, errors)
        if not minutes:
            return
        _move_table(db, "link_minutes", minutes)
        upto = _rolled_up(db) * 60  # the first minute not rolled up
        if earliest >= upto:
            return  # the usual write: spans of the current hour
        hours: dict[tuple[int, str, str], list[int]] = {}
        for (minute, parent, child), (calls, errors) in minutes.items():
            if minute < upto:
                _add_counts(hours, (minute // 60, parent, child), calls, errors)
        _move_table(db, "link_hours", hours)

    @staticmethod
    def window(db: sqlite3.Connection, start_us: int, end_us: int) -> list[DependencyLink]:
        """Links of the traces whose timestamp is in [start_us, end_us], sorted (stored links).

        The caller holds one read transaction over the call: sums and rows are read apart."""
        return _link_list(_window_sums(db, start_us, end_us))

    @staticmethod
    def pending_at_most(db: sqlite3.Connection, count: int) -> bool:
        """Whether ``count`` traces or fewer wait for their links."""
        [(pending,)] = db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM links_pending LIMIT ?)", (count + 1,)
        ).fetchall()
        return bool(pending <= count)

    def window_now(
        self,
        db: sqlite3.Connection,
        start_us: int,
        end_us: int,
        check: Callable[[], None] = lambda: None,
    ) -> list[DependencyLink]:
        """Links of the window as if every pending trace's links were stored already.

        The stored sums, less what pending traces stored before, plus their links computed
        now; nothing is written, so no lock of the writer is waited for. The caller holds one
        read transaction over the call (a snapshot) and has seen that few traces are pending
        (:meth:`pending_at_most`): their trees are built here, and again by the background.
        """
        sums = _window_sums(db, start_us, end_us)
        computed = self.read_pending(db, _EVERY_SEQ, _EVERY_TRACE, check)
        for ts, packed in _stored_links(db, [trace.trace_low for trace in computed]):
            if start_us <= ts <= end_us:
                for parent, child, calls, errors in unpack_links(packed):
                    _add_counts(sums, (parent, child), -calls, -errors)
        for trace in computed:
            if trace.ts is not None and start_us <= trace.ts <= end_us:
                for pair, (calls, errors) in trace.links.items():
                    _add_counts(sums, pair, calls, errors)
        return _link_list(sums)


def _add_counts(sums: dict[_Key, list[int]], key: _Key, calls: int, errors: int) -> None:
    """Add ``calls`` and ``errors`` to the ``[calls, errors]`` of ``key`` (from none)."""
    counts = sums.get(key)
    if counts is None:
        sums[key] = [calls, errors]
    else:
        counts[0] += calls
        counts[1] += errors


def _rolled_up(db: sqlite3.Connection) -> int:
    """The mark of ``link_hours_upto``: link_hours holds the hours before it."""
    [(hour,)] = db.execute("SELECT hour FROM link_hours_upto").fetchall()
    return int(hour)


def _move_table(
    db: sqlite3.Connection, table: str, changes: dict[tuple[int, str, str], list[int]]
) -> None:
    """Add ``changes`` ((bucket, parent, child) -> [calls, errors]) to a table of sums; the
    sums left without calls go."""
    db.executemany(
        f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?) ON CONFLICT (bucket, parent, child)"
        " DO UPDATE SET calls = calls + excluded.calls, errors = errors + excluded.errors",
        [(*key, calls, errors) for key, (calls, errors) in changes.items() if calls or errors],
    )
    gone = [key for key, (calls, _) in changes.items() if calls < 0]
    if gone:  # only when traces lose links: never on ingest of new traces
        db.executemany(
            f"DELETE FROM {table} WHERE bucket = ? AND parent = ? AND child = ? AND calls <= 0",
            gone,
        )


def trace_columns(trace: PendingTrace) -> tuple[int | None, str | None]:
    """The ``links_ts`` and ``links`` of a trace's row: both None when it has no links to
    store (none, or no timestamp: then it is in no window)."""
    if trace.ts is None or not trace.links:
        return None, None
    return trace.ts, pack_links(trace.links)


def _stored_links(db: sqlite3.Connection, trace_lows: Sequence[int]) -> Iterator[tuple[int, str]]:
    """The ``(links_ts, links)`` stored for those of ``trace_lows`` that have links."""
    for chunk in _chunks(trace_lows):
        yield from db.execute(
            "SELECT links_ts, links FROM traces"
            f" WHERE trace_low IN ({_marks(len(chunk))}) AND links IS NOT NULL",
            chunk,
        )


#: Every sequence number and every pending trace (read_pending's bounds when all are wanted).
_EVERY_SEQ = _EVERY_TRACE = 2**63 - 1


def _window_sums(
    db: sqlite3.Connection, start_us: int, end_us: int
) -> dict[tuple[str, str], list[int]]:
    """(parent, child) -> [calls, errors] of the stored links of traces in [start_us, end_us]
    (in the caller's read transaction)."""
    parts: list[str] = []
    params: list[int] = []
    edges: list[tuple[int, int]] = []  # less than a bucket of the finest table, read per trace
    # the last bucket each table holds: link_hours the hours rolled up, link_minutes all
    last_kept = (_rolled_up(db) - 1, None)

    def cover(start: int, end: int, level: int) -> None:
        """Sum [start, end] from the coarsest table whose whole buckets fit, then finer."""
        if start > end:
            return
        if level == len(_SUMS):
            edges.append((start, end))
            return
        table, length = _SUMS[level]
        first, last = -(-start // length), (end + 1) // length - 1
        kept = last_kept[level]
        if kept is not None:
            last = min(last, kept)
        if first > last:
            cover(start, end, level + 1)
            return
        parts.append(
            f"SELECT parent, child, calls, errors FROM {table} WHERE bucket BETWEEN ? AND ?"
        )
        params.extend((first, last))
        cover(start, first * length - 1, level + 1)
        cover((last + 1) * length, end, level + 1)

    cover(start_us, end_us, 0)
    sums: dict[tuple[str, str], list[int]] = {}
    if parts:
        sql = (
            "SELECT parent, child, sum(calls), sum(errors) FROM ("
            + " UNION ALL ".join(parts)
            + ") GROUP BY parent, child"
        )
        for parent, child, calls, errors in db.execute(sql, params):
            sums[(parent, child)] = [calls, errors]
    for start, end in edges:
        for (packed,) in db.execute(
            "SELECT links FROM traces WHERE links_ts BETWEEN ? AND ?", (start, end)
        ):
            for parent, child, calls, errors in unpack_links(packed):
                _add_counts(sums, (parent, child), calls, errors)
    return sums


def _link_list(sums: dict[tuple[str, str], list[int]]) -> list[DependencyLink]:
    """The links with calls, sorted by parent and child."""
    return [
        DependencyLink(parent=parent, child=child, callCount=calls, errorCount=errors)
        for (parent, child), (calls, errors) in sorted(sums.items())
        if calls > 0
    ]
