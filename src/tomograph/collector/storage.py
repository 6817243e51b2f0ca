"""What the collector needs from a span store: the :class:`SpanStore` protocol and its query types.

The HTTP layer speaks only to this protocol, so another engine (PostgreSQL, an in-memory store)
can be added without touching the API. Spans cross it as normalized Zipkin v2 dicts
(see :mod:`tomograph.encoding.normalize`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypedDict

from tomograph.collector.span_fields import trace_low_hex
from tomograph.encoding.normalize import SpanDict

__all__ = [
    "DependencyLink",
    "OperationSamples",
    "OperationStats",
    "QueryRequest",
    "QueryTimeout",
    "RetentionResult",
    "SpanDict",
    "SpanStore",
    "StoreUnavailable",
    "StoreClosed",
    "StoreOpenError",
    "operation_stats",
]


class StoreUnavailable(Exception):
    """The store cannot do this now but may soon: its disk is full, its database is locked.

    The collector answers 503 with ``Retry-After: retry_after`` (seconds), so a sender keeps the
    batch and tries again instead of dropping it.

    >>> StoreUnavailable("the disk is full", retry_after=30).retry_after
    30
    """

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreOpenError(Exception):
    """The store cannot be opened or created; the message names the location and why."""


class StoreClosed(RuntimeError):
    """The store is closed, or closing: a read in progress was interrupted (the server stops)."""


class QueryTimeout(Exception):
    """A read ran past the store's time budget and was interrupted."""


@dataclass(frozen=True)
class QueryRequest:
    """A trace search, with Zipkin's semantics (``GET /api/v2/traces``).

    Every criterion must be met by some span of ``service_name`` (any service when None), not
    necessarily the same span. ``annotation_query`` maps a tag key to a value, or a word to ``""``
    (matches an annotation value or a tag key). Times are epoch milliseconds, durations
    microseconds.

    >>> QueryRequest(end_ts=1_700_000_000_000, lookback=3_600_000, service_name="checkout")
    ... # doctest: +ELLIPSIS
    QueryRequest(end_ts=1700000000000, lookback=3600000, limit=10, service_name='checkout', ...)
    """

    end_ts: int
    lookback: int
    limit: int = 10
    service_name: str | None = None
    remote_service_name: str | None = None
    span_name: str | None = None
    annotation_query: Mapping[str, str] = field(default_factory=dict)
    min_duration: int | None = None
    max_duration: int | None = None


class DependencyLink(TypedDict):
    """Calls from one service to another (Zipkin's ``DependencyLink``)."""

    parent: str
    child: str
    callCount: int
    errorCount: int


class OperationStats(TypedDict):
    """Latency percentiles (µs) and errors of one operation of a service: a span name and kind.

    A client and a server span of the same name are two operations (``kind`` None: local spans).
    """

    spanName: str
    kind: str | None
    count: int
    errorCount: int
    errorRate: float
    p50: int
    p90: int
    p99: int
    max: int


def operation_stats(
    name: str, kind: str | None, durations: Sequence[int], errors: int
) -> OperationStats:
    """The stats of one operation from its spans' ``durations`` (ascending, at least one).

    Percentiles are nearest-rank: a duration that some span really had.

    >>> operation_stats("get", "SERVER", [10, 20, 30, 40], 1)["p50"]
    20
    """

    def percentile(percent: int) -> int:
        return durations[max(1, math.ceil(percent / 100 * len(durations))) - 1]

    count = len(durations)
    return OperationStats(
        spanName=name,
        kind=kind,
        count=count,
        errorCount=errors,
        errorRate=errors / count,
        p50=percentile(50),
        p90=percentile(90),
        p99=percentile(99),
        max=durations[-1],
    )


class OperationSamples(TypedDict):
    """The spans of one operation in a window, newest first, each
    ``[timestamp µs, duration µs, error 0/1, trace id]`` (the id's low 64 bits, enough to open
    the trace); ``truncated`` says older spans of the window were left out (the limit).
    """

    samples: list[tuple[int, int, int, str]]
    truncated: bool


def operation_samples_answer(rows: Sequence[Sequence[int]], limit: int) -> OperationSamples:
    """The answer for ``limit`` samples from up to ``limit + 1`` rows of
    ``(ts, duration, error, trace_low)``, newest first (a further row means some were left out).
    """
    return OperationSamples(
        samples=[
            (ts, duration, int(error), trace_low_hex(low))
            for ts, duration, error, low in rows[:limit]
        ],
        truncated=len(rows) > limit,
    )


@dataclass(frozen=True)
class RetentionResult:
    """What one retention pass removed."""

    traces_deleted: int
    spans_deleted: int


class SpanStore(Protocol):
    """A place to keep spans and to search them the way Zipkin's API does.

    Reads may raise :class:`QueryTimeout` when they run past the store's time budget, and
    every call raises :class:`StoreClosed` once :meth:`close` has begun.
    """

    def accept(self, spans: Sequence[SpanDict]) -> int:
        """Store a batch in one transaction (all or nothing); returns how many were new."""
        ...

    def get_trace(self, trace_id: str) -> list[SpanDict] | None:
        """The spans of one trace (lenient on the low 64 bits), or None if unknown."""
        ...

    def get_trace_json(self, trace_id: str) -> bytes | None:
        """:meth:`get_trace` already encoded as a JSON array (the fast path of the API)."""
        ...

    def get_traces_json(self, trace_ids: Sequence[str]) -> bytes:
        """The traces found among ``trace_ids`` as a JSON list of lists."""
        ...

    def find_trace_ids(self, request: QueryRequest) -> list[str]:
        """Ids of the traces matching ``request``, newest first, at most ``request.limit``."""
        ...

    def service_names(self) -> list[str]:
        """Local service names, sorted."""
        ...

    def span_names(self, service_name: str) -> list[str]:
        """Span names recorded by ``service_name``, sorted."""
        ...

    def remote_service_names(self, service_name: str) -> list[str]:
        """Remote service names called by ``service_name``, sorted."""
        ...

    def tag_values(self, key: str, limit: int = 1000) -> list[str]:
        """Distinct values seen for tag ``key``, sorted."""
        ...

    def dependencies(self, end_ts: int, lookback: int) -> list[DependencyLink]:
        """Service links derived from the traces in the window (epoch ms)."""
        ...

    def operations(self, service_name: str, end_ts: int, lookback: int) -> list[OperationStats]:
        """Per span name and kind: latency percentiles and error rate of ``service_name``.

        Spans whose timestamp is in the window (epoch ms); sorted by name, then kind (None first).
        """
        ...

    def operation_samples(
        self,
        service_name: str,
        span_name: str,
        kind: str | None,
        end_ts: int,
        lookback: int,
        limit: int,
    ) -> OperationSamples:
        """Timestamp, duration and error of the newest ``limit`` spans of one operation.

        The operation is ``service_name``'s spans named ``span_name`` of ``kind`` (None: spans
        without a kind) with a duration, whose timestamp is in the window (epoch ms).
        """
        ...

    def enforce_retention(self, now_us: int | None = None) -> RetentionResult:
        """Delete traces older than the maximum age, then the oldest until under the size cap."""
        ...

    def data_version(self) -> int:
        """A number that grows with every write: while it is unchanged, so are all answers.

        Lets the HTTP layer reuse an expensive answer (dependency links) until the next write.
        """
        ...

    def interrupt_reads(self) -> None:
        """Stop the reads in progress (they raise :class:`StoreClosed`) and refuse new ones.

        Writes go on until :meth:`close`: a server that stops answers its queries at once and
        still stores the batches it is receiving.
        """
        ...

    def close(self) -> None:
        """Interrupt reads in progress, wait for the write in progress, release the connections."""
        ...
