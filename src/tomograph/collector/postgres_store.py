"""A :class:`~tomograph.collector.storage.SpanStore` in PostgreSQL, shared by many collectors.

Several ``tomograph serve --db postgresql://...`` instances behind a load balancer share one
database. Nothing an answer depends on lives in a process:

* writes take no global lock: a batch locks only the rows of its own traces (in trace order, so
  two batches never deadlock), and each instance writes through several connections at once;
* a batch is stored once however often it is retried, on any instance: a span's key is its
  trace and a digest of its JSON, and inserts skip keys that exist;
* dependency links are kept per trace (``tomograph_trace_links``), recomputed inside the
  batch's transaction for each trace it added spans to, while that trace's row is locked, so
  ``/dependencies`` sums links over the window instead of rebuilding every trace in it;
* retention runs on one instance at a time (a PostgreSQL advisory lock; the others skip);
* :meth:`PostgresSpanStore.data_version` grows with this instance's writes and at least once
  a second, so an answer cached by one instance reflects the others' writes within a second.

The schema is created on first start under an advisory lock (instances starting together
wait for the first), and a version row refuses a database written by a newer release.
SQL only ever receives bound parameters. Needs psycopg 3 (the ``postgresql`` extra).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from tomograph.collector.dependencies import LinkRow, trace_links
from tomograph.collector.postgres_pool import ConnectionPool, database_location
from tomograph.collector.span_fields import (
    is_error,
    local_service,
    remote_service,
    trace_id_low,
)
from tomograph.collector.sqlite_store import DEFAULT_MAX_RESPONSE_BYTES, MAX_INDEXED_VALUE
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
)
from tomograph.collector.stored_spans import json_array, stored_json, traces_json
from tomograph.encoding.normalize import normalize_trace_id

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresSpanStore"]

SCHEMA_VERSION = 1
#: How often (seconds) :meth:`PostgresSpanStore.data_version` moves on by itself: the bound on
#: how long an answer cached by one instance can miss another instance's writes.
VERSION_PERIOD = 1.0
# Advisory lock keys ("tomograph" in ASCII, then the job): one cluster may host other programs.
_SCHEMA_LOCK = 0x746F6D6F67720001
_RETENTION_LOCK = 0x746F6D6F67720002
# Names and tag keys may be 1024 characters (4 KB of UTF-8); a B-tree entry holds at most
# about 2.7 KB, so indexes cover a prefix and queries compare the prefix, then the whole text.
_PREFIX = 200
#: Bytes a span costs besides its JSON (columns and index entries), for the size cap.
_ROW_OVERHEAD = 200
_DELETE_CHUNK = 2000
_WRITE_ATTEMPTS = 4

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tomograph_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS tomograph_spans (
    trace_low bigint NOT NULL,
    digest bytea NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    trace_id text NOT NULL,
    span_id text NOT NULL,
    parent_id text,
    kind text,
    shared boolean NOT NULL,
    name text NOT NULL,
    service text NOT NULL,
    remote_service text NOT NULL,
    ts bigint,
    duration bigint,
    error boolean NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (trace_low, digest)
);
CREATE INDEX IF NOT EXISTS tomograph_spans_by_name
    ON tomograph_spans (left(service, {_PREFIX}), left(name, {_PREFIX}), ts);
CREATE INDEX IF NOT EXISTS tomograph_spans_by_remote
    ON tomograph_spans (left(service, {_PREFIX}), left(remote_service, {_PREFIX}));
CREATE INDEX IF NOT EXISTS tomograph_spans_by_duration ON tomograph_spans (duration);
CREATE TABLE IF NOT EXISTS tomograph_span_terms (
    trace_low bigint NOT NULL,
    digest bytea NOT NULL,
    term text NOT NULL,
    value text NOT NULL,
    service text NOT NULL,
    PRIMARY KEY (trace_low, digest)
);
CREATE INDEX IF NOT EXISTS tomograph_terms_by_value
    ON tomograph_span_terms (left(term, {_PREFIX}), left(value, {_PREFIX}));
CREATE TABLE IF NOT EXISTS tomograph_traces (
    trace_low bigint PRIMARY KEY,
    trace_id text NOT NULL,
    ts bigint,
    root_ts bigint,
    received bigint NOT NULL,
    bytes bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tomograph_traces_by_ts ON tomograph_traces (ts);
CREATE INDEX IF NOT EXISTS tomograph_traces_by_received ON tomograph_traces (received);
CREATE TABLE IF NOT EXISTS tomograph_span_names (
    digest bytea PRIMARY KEY,
    service text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL
);
CREATE INDEX IF NOT EXISTS tomograph_names_by_service
    ON tomograph_span_names (kind, left(service, {_PREFIX}));
CREATE TABLE IF NOT EXISTS tomograph_trace_links (
    trace_low bigint NOT NULL,
    parent text NOT NULL,
    child text NOT NULL,
    calls integer NOT NULL,
    errors integer NOT NULL
);
CREATE INDEX IF NOT EXISTS tomograph_links_by_trace ON tomograph_trace_links (trace_low);
"""
_TABLES = (
    "tomograph_trace_links",
    "tomograph_span_names",
    "tomograph_span_terms",
    "tomograph_spans",
    "tomograph_traces",
)

_UPSERT_TRACES = """
INSERT INTO tomograph_traces AS t (trace_low, trace_id, ts, root_ts, received)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::bigint[], %b::bigint[], %b::bigint[])
ORDER BY 1
ON CONFLICT (trace_low) DO UPDATE SET
    trace_id = CASE WHEN length(excluded.trace_id) > length(t.trace_id)
                    THEN excluded.trace_id ELSE t.trace_id END,
    ts = CASE WHEN t.root_ts IS NOT NULL THEN t.ts
              WHEN excluded.root_ts IS NOT NULL THEN excluded.root_ts
              ELSE least(t.ts, excluded.ts) END,
    root_ts = coalesce(t.root_ts, excluded.root_ts),
    received = greatest(t.received, excluded.received)
RETURNING trace_low, xmax = 0
"""  # xmax is 0 on a row this statement inserted (not on one it updated): a new trace
_INSERT_SPANS = """
INSERT INTO tomograph_spans (trace_low, digest, trace_id, span_id, parent_id, kind, shared, name,
    service, remote_service, ts, duration, error, body)
SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::text[], %b::text[], %b::text[], %b::text[],
    %b::boolean[], %b::text[], %b::text[], %b::text[], %b::bigint[], %b::bigint[], %b::boolean[],
    %b::bytea[])
ON CONFLICT DO NOTHING
RETURNING trace_low, octet_length(body)
"""
_ADD_BYTES = """
UPDATE tomograph_traces t SET bytes = t.bytes + u.bytes
FROM unnest(%b::bigint[], %b::bigint[]) AS u(trace_low, bytes) WHERE t.trace_low = u.trace_low
"""
_INSERT_TERMS = """
INSERT INTO tomograph_span_terms (trace_low, digest, term, value, service)
SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::text[], %b::text[], %b::text[])
ON CONFLICT DO NOTHING
"""
_INSERT_NAMES = """
INSERT INTO tomograph_span_names (digest, service, kind, name)
SELECT * FROM unnest(%b::bytea[], %b::text[], %b::text[], %b::text[])
ON CONFLICT DO NOTHING
"""
_LINK_SPANS = """
SELECT trace_low, span_id, parent_id, kind, shared, service, remote_service, error
FROM tomograph_spans WHERE trace_low = ANY(%s) ORDER BY trace_low, digest
"""
_INSERT_LINKS = """
INSERT INTO tomograph_trace_links (trace_low, parent, child, calls, errors)
SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::integer[], %b::integer[])
"""


def _now_us() -> int:
    return time.time_ns() // 1000


def _text(value: str) -> str:
    """``value`` as PostgreSQL text, which cannot hold NUL: U+FFFD takes its place.

    Only the indexed columns and query values: the span's JSON keeps it (escaped).

    >>> _text("a\\0b")
    'a\\ufffdb'
    """
    return value.replace("\0", "\ufffd") if "\0" in value else value


def _digest(*parts: str) -> bytes:
    """A key for texts too long to index whole (NUL cannot occur in PostgreSQL text)."""
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).digest()


_T = TypeVar("_T")


class PostgresSpanStore:
    """Spans in a PostgreSQL database, searchable the way Zipkin's API expects.

    ``url`` is a libpq URL (``postgresql://user:password@host:port/dbname?sslmode=...``); the
    password may also come from ``PGPASSWORD`` or ``~/.pgpass``, and is never shown in logs or
    errors. ``max_age`` (seconds) and ``max_bytes`` bound what :meth:`enforce_retention`
    keeps; ``max_bytes`` counts the spans' JSON and their index entries (PostgreSQL reuses
    the space of deleted rows, its files do not shrink). ``writers`` connections store
    batches at once, ``readers`` serve queries; ``query_timeout`` (seconds) stops a longer
    query with :class:`~tomograph.collector.storage.QueryTimeout`.

    >>> store = PostgresSpanStore("postgresql://tomograph@127.0.0.1/traces")  # doctest: +SKIP
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float | None = 7 * 86400.0,
        max_bytes: int | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        readers: int = 4,
        writers: int = 4,
        query_timeout: float | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreOpenError(
                "a postgresql:// database needs psycopg 3:"
                " pip install 'tomograph-tracing[collector,postgresql]'"
            ) from None
        self._psycopg = psycopg
        self.location = database_location(url)
        self._url = url
        self._password = _password_of(url)
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_response_bytes = max_response_bytes
        self.query_timeout = query_timeout
        self._connect_timeout = connect_timeout
        self._writes = 0  # batches this instance stored
        self._started = time.monotonic()
        self._stopping = False
        timeout_message = f"the query ran longer than {query_timeout or 0:g} s and was stopped"
        self._timeout_message = timeout_message
        statement_ms = int(query_timeout * 1000) if query_timeout else 0
        self._readers = ConnectionPool(
            lambda: self._connect(statement_ms), readers, query_timeout, timeout_message
        )
        self._writers = ConnectionPool(lambda: self._connect(0), writers, None)
        try:
            with self._writers.connection() as conn:
                self._create_schema(conn)
        except psycopg.Error as error:
            self._writers.close(0)
            raise StoreOpenError(f"cannot open {self.location}: {self._reason(error)}") from None
        except StoreUnavailable as error:  # could not connect: says where and why
            self._writers.close(0)
            raise StoreOpenError(str(error)) from None
        except StoreOpenError:
            self._writers.close(0)
            raise

    # -- connections -------------------------------------------------------------------------

    def _connect(self, statement_ms: int) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            conn = self._psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(1, math.ceil(self._connect_timeout)),
                options=f"-c statement_timeout={statement_ms}",
                application_name="tomograph collector",
            )
        except self._psycopg.Error as error:
            # psycopg's message names host and port only; ours says which database, and a
            # password never reaches a log even if a driver were to quote the URL
            raise StoreUnavailable(
                f"cannot connect to {self.location}: {self._reason(error)}", 5
            ) from None
        return conn

    def _reason(self, error: BaseException) -> str:
        text = " ".join(str(error).split()) or type(error).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _create_schema(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with conn.transaction():
            # instances starting together: the first creates, the others wait, then see it
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            found = conn.execute(
                "SELECT value FROM tomograph_meta WHERE key = 'schema_version'"
                if _has_table(conn, "tomograph_meta")
                else "SELECT NULL WHERE false"
            ).fetchone()
            if found is not None:
                if found[0] != str(SCHEMA_VERSION):
                    raise StoreOpenError(
                        f"{self.location}: unknown span schema version {found[0]}"
                        " (written by a newer tomograph?)"
                    )
                return
            if any(_has_table(conn, table) for table in _TABLES):
                raise StoreOpenError(
                    f"{self.location} has tables named like tomograph's ({', '.join(_TABLES)})"
                    " but no tomograph schema version: they belong to another program"
                )
            conn.execute(_SCHEMA)
            conn.execute(
                "INSERT INTO tomograph_meta VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),)
            )

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """A reader connection for one call; PostgreSQL's cancellations become our errors."""
        errors = self._psycopg.errors
        try:
            with self._readers.connection() as conn:
                yield conn
        except errors.QueryCanceled:
            if self._readers.closing:
                raise StoreClosed("the span store is closed") from None
            raise QueryTimeout(self._timeout_message) from None
        except self._psycopg.OperationalError as error:
            if self._readers.closing:
                raise StoreClosed("the span store is closed") from None
            raise StoreUnavailable(f"{self.location}: {self._reason(error)}", 5) from None

    def _write(self, work: Callable[[psycopg.Connection[tuple[Any, ...]]], _T]) -> _T:
        """Run ``work`` in one transaction, again if PostgreSQL chose it to break a deadlock."""
        errors = self._psycopg.errors
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._writers.connection() as conn, conn.transaction():
                    result = work(conn)
                self._writes += 1
                return result
            except (errors.DeadlockDetected, errors.SerializationFailure) as error:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise StoreUnavailable(
                        f"the span store is busy ({self._reason(error)}); nothing was stored", 1
                    ) from None
            except (errors.DiskFull, errors.OutOfMemory, errors.TooManyConnections) as error:
                raise StoreUnavailable(
                    f"{self.location} cannot store now ({self._reason(error)}); nothing was stored"
                ) from None
            except self._psycopg.OperationalError as error:
                # A pooled connection the server dropped (a restart, a failover, an idle
                # timeout) fails on first use: once more on a fresh one. Safe even if the
                # commit itself went through: the batch is stored once however often sent.
                if attempt == 0 and _connection_lost(error):
                    continue
                raise StoreUnavailable(
                    f"{self.location} is unreachable ({self._reason(error)}); nothing was stored",
                    5,
                ) from None
        raise AssertionError("unreachable")

    def data_version(self) -> int:
        """Grows with every write of this instance, and once a :data:`VERSION_PERIOD`.

        Other instances write to the same database unseen: moving on with time bounds how
        long an answer cached from an older version can be served.
        """
        return self._writes + int((time.monotonic() - self._started) / VERSION_PERIOD)

    def interrupt_reads(self) -> None:
        """Cancel the reads in progress (they raise StoreClosed) and refuse new reads.

        Writes go on until :meth:`close`; a retention pass stops after its current chunk.
        """
        self._stopping = True
        self._readers.interrupt()

    def close(self) -> None:
        """Cancel reads, let the writes in progress finish, close every connection."""
        self.interrupt_reads()
        self._writers.close()
        self._readers.close()

    # -- writes -----------------------------------------------------------------------------

    def accept(self, spans: Sequence[SpanDict]) -> int:
        """Store ``spans`` in one transaction; returns how many were new.

        Exact duplicates (a retried batch, on this instance or another) are stored once.
        Nothing is written if anything fails.
        """
        batch = _Batch(spans, _now_us())
        if not batch.spans[0]:
            return 0
        return self._write(batch.store)

    # -- reads ------------------------------------------------------------------------------

    def _trace_bodies(
        self, conn: psycopg.Connection[tuple[Any, ...]], trace_id: str, budget: int | None
    ) -> list[bytes]:
        trace_id = normalize_trace_id(trace_id)
        low = trace_id_low(trace_id)
        if len(trace_id) == 16:  # a 64-bit id matches any trace with those low bits
            sql = "SELECT body FROM tomograph_spans WHERE trace_low = %s"
            params: tuple[Any, ...] = (low,)
        else:  # a 128-bit id matches itself, and spans reported with only its low half
            sql = "SELECT body FROM tomograph_spans WHERE trace_low = %s AND trace_id IN (%s, %s)"
            params = (low, trace_id, trace_id[16:])
        bodies: list[bytes] = []
        size = 0
        with conn.cursor() as cursor:
            cursor.execute(sql + " ORDER BY ts NULLS FIRST, seq", params)
            for (body,) in cursor:
                size += len(body) + 1
                if budget is not None and bodies and size > budget:
                    break
                bodies.append(bytes(body))
        return bodies

    def get_trace_json(self, trace_id: str) -> bytes | None:
        """The trace's spans as a JSON array, or None (lenient ids, as the SQLite store)."""
        with self._reading() as conn:
            bodies = self._trace_bodies(conn, trace_id, self.max_response_bytes)
        return json_array(bodies) if bodies else None

    def get_trace(self, trace_id: str) -> list[SpanDict] | None:
        """The trace's spans as dicts, or None."""
        with self._reading() as conn:
            bodies = self._trace_bodies(conn, trace_id, None)
        return [json.loads(body) for body in bodies] if bodies else None

    def get_traces_json(self, trace_ids: Sequence[str]) -> bytes:
        """The traces found among ``trace_ids``, at most ``max_response_bytes`` of them."""
        with self._reading() as conn:
            return traces_json(
                trace_ids,
                lambda trace_id, budget: self._trace_bodies(conn, trace_id, budget),
                self.max_response_bytes,
            )

    def find_trace_ids(self, request: QueryRequest) -> list[str]:
        """Ids of the traces matching ``request`` (Zipkin semantics), newest first."""
        conditions, params = _criteria(request)
        sql = (
            "SELECT t.trace_id FROM tomograph_traces t WHERE t.ts BETWEEN %s AND %s"
            + "".join(f" AND {condition}" for condition in conditions)
            + " ORDER BY t.ts DESC LIMIT %s"
        )
        window = [(request.end_ts - request.lookback) * 1000, request.end_ts * 1000]
        with self._reading() as conn:
            rows = conn.execute(sql, [*window, *params, request.limit]).fetchall()
        return [row[0] for row in rows]

    def _names(self, kind: str, service: str | None) -> list[str]:
        with self._reading() as conn:
            if service is None:
                rows = conn.execute(
                    "SELECT DISTINCT service FROM tomograph_span_names WHERE kind = %s", (kind,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT name FROM tomograph_span_names WHERE kind = %s"
                    f" AND left(service, {_PREFIX}) = left(%s, {_PREFIX}) AND service = %s",
                    (kind, service, service),
                ).fetchall()
        return sorted({row[0] for row in rows if row[0]})

    def service_names(self) -> list[str]:
        """Local service names, sorted."""
        return self._names("span", None)

    def span_names(self, service_name: str) -> list[str]:
        """Span names recorded by ``service_name``, sorted."""
        return self._names("span", _text(service_name.lower()))

    def remote_service_names(self, service_name: str) -> list[str]:
        """Remote service names called by ``service_name``, sorted."""
        return self._names("remote", _text(service_name.lower()))

    def tag_values(self, key: str, limit: int = 1000) -> list[str]:
        """Distinct values seen for tag ``key`` (indexed values only), sorted."""
        key = _text(key)
        with self._reading() as conn:
            rows = conn.execute(
                'SELECT DISTINCT value COLLATE "C" FROM tomograph_span_terms'
                f" WHERE left(term, {_PREFIX}) = left(%s, {_PREFIX}) AND term = %s"
                " AND value != '' ORDER BY 1 LIMIT %s",
                (key, key, limit),
            ).fetchall()
        return [row[0] for row in rows]

    def dependencies(self, end_ts: int, lookback: int) -> list[DependencyLink]:
        """Links between services in traces whose timestamp is in the window (epoch ms).

        The sum of each trace's links, kept as its spans arrive: no trace is rebuilt here.
        """
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT l.parent, l.child, sum(l.calls), sum(l.errors)"
                " FROM tomograph_trace_links l JOIN tomograph_traces t USING (trace_low)"
                " WHERE t.ts BETWEEN %s AND %s GROUP BY l.parent, l.child",
                ((end_ts - lookback) * 1000, end_ts * 1000),
            ).fetchall()
        return [
            DependencyLink(parent=parent, child=child, callCount=int(calls), errorCount=int(errs))
            for parent, child, calls, errs in sorted(rows)
        ]

    def operations(self, service_name: str, end_ts: int, lookback: int) -> list[OperationStats]:
        """Per span name and kind of ``service_name``: count, errors, p50/p90/p99/max (µs)."""
        service = _text(service_name.lower())
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT name, kind, count(*), count(*) FILTER (WHERE error),"
                " percentile_disc(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY duration),"
                " max(duration) FROM tomograph_spans"
                f" WHERE left(service, {_PREFIX}) = left(%s, {_PREFIX}) AND service = %s"
                " AND ts BETWEEN %s AND %s AND duration IS NOT NULL GROUP BY name, kind",
                (service, service, (end_ts - lookback) * 1000, end_ts * 1000),
            ).fetchall()
        return [
            OperationStats(
                spanName=name,
                kind=kind,
                count=count,
                errorCount=errors,
                errorRate=errors / count,
                p50=percentiles[0],
                p90=percentiles[1],
                p99=percentiles[2],
                max=longest,
            )
            # local spans (no kind) first, as in SQLite's order
            for name, kind, count, errors, percentiles, longest in sorted(
                rows, key=lambda row: (row[0], row[1] or "")
            )
        ]

    def operation_samples(
        self,
        service_name: str,
        span_name: str,
        kind: str | None,
        end_ts: int,
        lookback: int,
        limit: int,
    ) -> OperationSamples:
        """Timestamp, duration and error of the newest ``limit`` spans of one operation."""
        service, name = _text(service_name.lower()), _text(span_name.lower())
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT ts, duration, error, trace_low FROM tomograph_spans"
                f" WHERE left(service, {_PREFIX}) = left(%s, {_PREFIX}) AND service = %s"
                f" AND left(name, {_PREFIX}) = left(%s, {_PREFIX}) AND name = %s"
                " AND ts BETWEEN %s AND %s AND duration IS NOT NULL"
                " AND kind IS NOT DISTINCT FROM %s::text ORDER BY ts DESC LIMIT %s",
                (
                    service,
                    service,
                    name,
                    name,
                    (end_ts - lookback) * 1000,
                    end_ts * 1000,
                    kind,
                    limit + 1,
                ),
            ).fetchall()
        return operation_samples_answer(rows, limit)

    def span_count(self) -> int:
        """How many spans are stored."""
        with self._reading() as conn:
            row = conn.execute("SELECT count(*) FROM tomograph_spans").fetchone()
        return int(row[0]) if row else 0

    def size_bytes(self) -> int:
        """Bytes of span data kept (the spans' JSON and an estimate of their index entries)."""
        with self._reading() as conn:
            row = conn.execute("SELECT coalesce(sum(bytes), 0) FROM tomograph_traces").fetchone()
        return int(row[0]) if row else 0

    # -- retention --------------------------------------------------------------------------

    def enforce_retention(self, now_us: int | None = None) -> RetentionResult:
        """Delete traces older than ``max_age``, then the oldest until under ``max_bytes``.

        One instance at a time: an instance that finds another one's pass in progress skips
        its own (the work is the same, the database is shared).
        """
        if self._stopping:
            return RetentionResult(0, 0)
        now_us = _now_us() if now_us is None else now_us
        try:
            with self._writers.connection() as conn:
                locked = conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (_RETENTION_LOCK,)
                ).fetchone()
                if not locked or not locked[0]:
                    return RetentionResult(0, 0)
                try:
                    return self._retain(conn, now_us)
                finally:
                    if not conn.closed:
                        conn.execute("SELECT pg_advisory_unlock(%s)", (_RETENTION_LOCK,))
        except self._psycopg.OperationalError as error:
            raise StoreUnavailable(f"{self.location}: {self._reason(error)}", 5) from None

    def _retain(self, conn: psycopg.Connection[tuple[Any, ...]], now_us: int) -> RetentionResult:
        traces = spans = 0
        # an age reaching back before 1970 keeps everything
        if self.max_age is not None and self.max_age * 1e6 < now_us:
            cutoff = now_us - int(self.max_age * 1e6)
            while not self._stopping:  # a stopping server finishes the chunk it is deleting
                with conn.transaction():
                    lows = [
                        row[0]
                        for row in conn.execute(
                            "SELECT trace_low FROM tomograph_traces WHERE received < %s"
                            " ORDER BY trace_low LIMIT %s",
                            (cutoff, _DELETE_CHUNK),
                        )
                    ]
                    # checked again under the row lock: a span may have arrived meanwhile
                    deleted, removed = _delete_traces(conn, lows, "received < %s", cutoff)
                traces, spans = traces + deleted, spans + removed
                if len(lows) < _DELETE_CHUNK:
                    break
        if self.max_bytes is not None and not self._stopping:
            row = conn.execute("SELECT coalesce(sum(bytes), 0) FROM tomograph_traces").fetchone()
            used = int(row[0]) if row else 0
            if used > self.max_bytes:
                excess = used - int(self.max_bytes * 0.9)  # headroom: not every pass purges
                lows = [
                    row[0]
                    for row in conn.execute(
                        "SELECT trace_low FROM (SELECT trace_low, bytes, sum(bytes) OVER"
                        " (ORDER BY received, ts, trace_low) AS running FROM tomograph_traces) r"
                        " WHERE running - bytes < %s",
                        (excess,),
                    )
                ]
                for start in range(0, len(lows), _DELETE_CHUNK):
                    with conn.transaction():
                        chunk = sorted(lows[start : start + _DELETE_CHUNK])
                        deleted, removed = _delete_traces(conn, chunk, "true", None)
                    traces, spans = traces + deleted, spans + removed
        if traces:
            with conn.transaction():
                _forget_names(conn)
        return RetentionResult(traces_deleted=traces, spans_deleted=spans)


class _Batch:
    """A batch's rows, prepared before any connection is taken."""

    def __init__(self, spans: Sequence[SpanDict], received: int) -> None:
        columns: list[list[Any]] = [[] for _ in range(14)]
        terms: dict[tuple[int, bytes], tuple[str, str, str]] = {}
        traces: dict[int, list[Any]] = {}
        names: dict[bytes, tuple[str, str, str]] = {}
        seen: set[tuple[int, bytes]] = set()
        for decoded in spans:
            span, body = stored_json(decoded)
            trace_id = span["traceId"]
            span_id = span["id"]
            low = trace_id_low(trace_id)
            digest = hashlib.blake2b(body, digest_size=12).digest()
            service = _text(local_service(span))
            remote = _text(remote_service(span))
            name = _text(span.get("name", ""))
            timestamp = span.get("timestamp")
            if (low, digest) not in seen:
                seen.add((low, digest))
                row = (
                    low,
                    digest,
                    trace_id,
                    _text(span_id),
                    _text(span.get("parentId") or "") or None,
                    span.get("kind"),
                    bool(span.get("shared")),
                    name,
                    service,
                    remote,
                    timestamp,
                    span.get("duration"),
                    is_error(span),
                    body,
                )
                for column, value in zip(columns, row, strict=True):
                    column.append(value)
            for tag_key, tag_value in (span.get("tags") or {}).items():
                key = _text(tag_key)
                value = _text(tag_value) if len(tag_value) <= MAX_INDEXED_VALUE else ""
                terms[(low, _digest(key, value, service))] = (key, value, service)
            for annotation in span.get("annotations") or ():
                if len(annotation["value"]) <= MAX_INDEXED_VALUE:
                    term = _text(annotation["value"])
                    terms[(low, _digest(term, "", service))] = (term, "", service)
            root_ts = timestamp if timestamp and not span.get("parentId") else None
            trace = traces.get(low)
            if trace is None:
                traces[low] = [low, trace_id, timestamp, root_ts, received]
            else:  # the batch's spans of one trace fold into one row, as the upsert would
                if len(trace_id) > len(trace[1]):
                    trace[1] = trace_id
                if timestamp and (trace[2] is None or timestamp < trace[2]):
                    trace[2] = timestamp
                if trace[3] is None:
                    trace[3] = root_ts
            if service:
                names[_digest(service, "span", name)] = (service, "span", name)
                if remote:
                    names[_digest(service, "remote", remote)] = (service, "remote", remote)
        for trace in traces.values():
            if trace[3] is not None:
                trace[2] = trace[3]  # Zipkin's trace timestamp is the root's
        self.spans = columns
        self.traces = [list(column) for column in zip(*sorted(traces.values()), strict=True)]
        ordered_terms = sorted(terms.items())
        self.terms = [
            [low for (low, _), _ in ordered_terms],
            [digest for (_, digest), _ in ordered_terms],
            *([t[i] for _, t in ordered_terms] for i in range(3)),
        ]
        ordered_names = sorted(names.items())
        self.names = [
            [digest for digest, _ in ordered_names],
            *([n[i] for _, n in ordered_names] for i in range(3)),
        ]

    def store(self, conn: psycopg.Connection[tuple[Any, ...]]) -> int:
        """Write the batch in the caller's transaction; returns how many spans were new."""
        # One round trip for the writes (pipeline mode). The trace rows come first, in trace
        # order: they lock each trace against other batches until this one commits, so the
        # links below are computed from all of its spans.
        with conn.pipeline():
            upserted = conn.execute(_UPSERT_TRACES, self.traces)
            inserted = conn.execute(_INSERT_SPANS, self.spans)
            if self.terms[0]:
                conn.execute(_INSERT_TERMS, self.terms)
            if self.names[0]:
                conn.execute(_INSERT_NAMES, self.names)
            created = {low for low, is_new in upserted.fetchall() if is_new}
            new = inserted.fetchall()
        if not new:
            return 0  # a retried batch: nothing changed, links included
        added: dict[int, int] = {}
        for low, size in new:
            added[low] = added.get(low, 0) + size + _ROW_OVERHEAD
        lows = sorted(added)
        # a trace this batch created has no spans but the batch's: no need to read them back
        # (another batch adding to it waited for this one's lock, and will read them all)
        spans: dict[int, list[LinkRow]] = {}
        rows = sorted(zip(*self.spans, strict=True), key=lambda row: (row[0], row[1]))
        for row in rows:  # in digest order, as read back below and by the SQLite store
            if row[0] in created:
                # span_id, parent_id, kind, shared, service, remote, error
                fields = (row[3], row[4], row[5], row[6], row[8], row[9], row[12])
                spans.setdefault(row[0], []).append(fields)
        stored = [low for low in lows if low not in created]
        if stored:
            for low, *stored_fields in conn.execute(_LINK_SPANS, (stored,)):
                spans.setdefault(low, []).append(tuple(stored_fields))
        with conn.pipeline():
            conn.execute(_ADD_BYTES, [lows, [added[low] for low in lows]])
            if stored:
                conn.execute(
                    "DELETE FROM tomograph_trace_links WHERE trace_low = ANY(%s)", (stored,)
                )
            links = _links(spans)
            if links[0]:
                conn.execute(_INSERT_LINKS, links)
        return len(new)


def _links(traces: dict[int, list[LinkRow]]) -> list[list[Any]]:
    """The dependency links of each trace, as columns (trace, parent, child, calls, errors)."""
    columns: list[list[Any]] = [[], [], [], [], []]
    for low, spans in traces.items():
        for (parent, child), (calls, errors) in sorted(trace_links(spans).items()):
            row = (low, parent, child, calls, errors)
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    return columns


def _delete_traces(
    conn: psycopg.Connection[tuple[Any, ...]], lows: list[int], still: str, value: Any
) -> tuple[int, int]:
    """Delete the traces ``lows`` whose row still meets ``still``; (traces, spans) deleted."""
    if not lows:
        return 0, 0
    params: tuple[Any, ...] = (lows, value) if value is not None else (lows,)
    deleted = [
        row[0]
        for row in conn.execute(
            f"DELETE FROM tomograph_traces WHERE trace_low = ANY(%s) AND {still}"
            " RETURNING trace_low",
            params,
        )
    ]
    if not deleted:
        return 0, 0
    cursor = conn.execute("DELETE FROM tomograph_spans WHERE trace_low = ANY(%s)", (deleted,))
    spans = cursor.rowcount
    conn.execute("DELETE FROM tomograph_span_terms WHERE trace_low = ANY(%s)", (deleted,))
    conn.execute("DELETE FROM tomograph_trace_links WHERE trace_low = ANY(%s)", (deleted,))
    return len(deleted), spans


def _forget_names(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    conn.execute(
        "DELETE FROM tomograph_span_names n WHERE kind = 'span' AND NOT EXISTS (SELECT 1"
        f" FROM tomograph_spans s WHERE left(s.service, {_PREFIX}) = left(n.service, {_PREFIX})"
        f" AND left(s.name, {_PREFIX}) = left(n.name, {_PREFIX})"
        " AND s.service = n.service AND s.name = n.name)"
    )
    conn.execute(
        "DELETE FROM tomograph_span_names n WHERE kind = 'remote' AND NOT EXISTS (SELECT 1"
        f" FROM tomograph_spans s WHERE left(s.service, {_PREFIX}) = left(n.service, {_PREFIX})"
        f" AND left(s.remote_service, {_PREFIX}) = left(n.name, {_PREFIX})"
        " AND s.service = n.service AND s.remote_service = n.name)"
    )


def _connection_lost(error: Exception) -> bool:
    """True if ``error`` ended the connection (as opposed to a statement failing on it)."""
    sqlstate = getattr(error, "sqlstate", None)
    # 57P01 admin shutdown (pg_terminate_backend, a server stopping), 08xxx connection errors
    return sqlstate is None or sqlstate == "57P01" or sqlstate.startswith("08")


def _has_table(conn: psycopg.Connection[tuple[Any, ...]], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def _password_of(url: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except Exception:
        return None
    return str(password) if password else None


def _criteria(request: QueryRequest) -> tuple[list[str], list[Any]]:
    """Each search criterion as an SQL condition on trace ``t``, with its bound values.

    As in the SQLite store, each criterion may be met by a different span of the service.
    """
    service = None if request.service_name is None else _text(request.service_name)
    scope = (
        f"left(s.service, {_PREFIX}) = left(%s, {_PREFIX}) AND s.service = %s"
        if service is not None
        else "true"
    )
    scope_values: list[Any] = [service, service] if service is not None else []
    span_criteria: list[tuple[str, list[Any]]] = []
    if request.span_name is not None:
        name = _text(request.span_name)
        span_criteria.append(
            (
                f" AND left(s.name, {_PREFIX}) = left(%s, {_PREFIX}) AND s.name = %s",
                [name, name],
            )
        )
    if request.remote_service_name is not None:
        remote = _text(request.remote_service_name)
        span_criteria.append(
            (
                f" AND left(s.remote_service, {_PREFIX}) = left(%s, {_PREFIX})"
                " AND s.remote_service = %s",
                [remote, remote],
            )
        )
    if request.min_duration is not None:
        if request.max_duration is not None:
            span_criteria.append(
                (" AND s.duration BETWEEN %s AND %s", [request.min_duration, request.max_duration])
            )
        else:
            span_criteria.append((" AND s.duration >= %s", [request.min_duration]))
    if service is not None and not span_criteria:
        span_criteria.append(("", []))
    conditions: list[str] = []
    params: list[Any] = []
    for condition, values in span_criteria:
        conditions.append(
            "EXISTS (SELECT 1 FROM tomograph_spans s WHERE s.trace_low = t.trace_low AND "
            f"{scope}{condition})"
        )
        params.extend([*scope_values, *values])
    for query_key, query_value in request.annotation_query.items():
        key, value = _text(query_key), _text(query_value)
        condition = f"left(x.term, {_PREFIX}) = left(%s, {_PREFIX}) AND x.term = %s"
        term_values: list[Any] = [key, key]
        if value:
            condition += " AND x.value = %s"
            term_values.append(value)
        if service is not None:
            condition += " AND x.service = %s"
            term_values.append(service)
        conditions.append(
            "EXISTS (SELECT 1 FROM tomograph_span_terms x WHERE x.trace_low = t.trace_low AND "
            f"{condition})"
        )
        params.extend(term_values)
    return conditions, params
