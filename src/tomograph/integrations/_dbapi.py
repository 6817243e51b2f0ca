"""A client span around a DB-API driver's cursor call: what psycopg and psycopg2 share.

A driver adapter finds the statement's text and the connection's :class:`Database`, and wraps
the call::

    running = begin(options, database, text, parameters)
    if running is None:                 # a layer above (SQLAlchemy, Django) records it
        return call()
    try:
        result = call()
    except BaseException as error:
        running.end(error=error)
        raise
    running.end(row_count(cursor))

The span looks like the SQLAlchemy integration's (see docs/sqlalchemy.md): named ``SELECT
users``, ``db.statement`` with placeholders and never values unless the user asked for them.
"""

from __future__ import annotations

from typing import Any

from tomograph.context import SUPPRESS_TRACING
from tomograph.integrations._sql import (
    StatementInFlight,
    describe_span,
    enter_statement,
    leave_statement,
    parameters_text,
    record_statement_error,
    traced_above,
)
from tomograph.model import Endpoint, SpanKind, TagValue, endpoint_for
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer

__all__ = ["Database", "DriverOptions", "Running", "batch_size", "begin", "row_count"]

_CLIENT = SpanKind.CLIENT


class DriverOptions:
    """What the user chose for a driver's statements (``patch()`` uses the defaults)."""

    __slots__ = ("record_parameters", "service_name", "tracer")

    def __init__(
        self,
        tracer: Tracer | None = None,
        service_name: str | None = None,
        record_parameters: bool = False,
    ) -> None:
        self.tracer = tracer
        self.service_name = service_name
        self.record_parameters = record_parameters

    def key(self) -> tuple[Any, ...]:
        """What tells two options apart (to reuse classes made for equal options)."""
        return (self.tracer, self.service_name, self.record_parameters)


class Database:
    """The tags and remote endpoint every statement on one connection carries.

    Never the password: only the system, database name, user, host and port.
    """

    __slots__ = ("remote", "tags")

    def __init__(
        self,
        system: str,
        service_name: str | None,
        name: Any = None,
        user: Any = None,
        host: Any = None,
        port: Any = None,
    ) -> None:
        tags: dict[str, TagValue] = {"db.system": system}
        if isinstance(name, str) and name:
            tags["db.name"] = name
        if isinstance(user, str) and user:
            tags["db.user"] = user
        port = _port(port)
        if isinstance(host, str) and host:
            tags["server.address"] = host  # a host name, an IP address or a socket directory
        else:
            host = None
        if port:
            tags["server.port"] = port
        self.tags = tags
        self.remote: Endpoint = endpoint_for(service_name or system, host, port)


def _port(port: Any) -> int | None:
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    return port if isinstance(port, int) and 0 < port < 65536 else None


class Running:
    """A statement being recorded: its span, and its mark as in flight for layers below."""

    __slots__ = ("in_flight", "record_parameters", "span")

    def __init__(self, span: Span, in_flight: StatementInFlight, record_parameters: bool) -> None:
        self.span = span
        self.in_flight = in_flight
        self.record_parameters = record_parameters

    def end(self, row_count: int | None = None, error: BaseException | None = None) -> None:
        """Tag the row count or the failure, and finish the span."""
        leave_statement(self.in_flight)
        span = self.span
        if error is not None:
            if not isinstance(error, GeneratorExit):  # a copy block left early: not a failure
                record_statement_error(span, error, self.record_parameters)
        elif row_count is not None and row_count >= 0 and span.sampled:
            span.tags["db.row_count"] = row_count
        span.finish()


def begin(
    options: DriverOptions,
    database: Database,
    text: str | None,
    parameters: Any = None,
    batch_size: int | None = None,
) -> Running | None:
    """Start the span of a statement; None if a layer above records it or tracing is off.

    ``text`` is the statement with its placeholders (None if it cannot be shown without its
    values: the span is then just ``SQL``); ``batch_size`` is the number of parameter sets of
    an ``executemany``, when known.
    """
    if SUPPRESS_TRACING.get() or traced_above(text):
        return None
    span = Span(
        options.tracer or get_tracer(),
        "SQL",
        _CLIENT,
        database.tags,
        CURRENT,
        None,
        database.remote,
    )
    if span.sampled:
        if text is not None:
            describe_span(span, text)
        if batch_size is not None:
            span.tags["db.operation.batch.size"] = batch_size
        if options.record_parameters and parameters is not None:
            span.tags["db.parameters"] = parameters_text(parameters)
    # Never a wildcard mark (None): it would hide every statement of the block.
    return Running(span, enter_statement(text or ""), options.record_parameters)


def row_count(cursor: Any) -> int | None:
    """The cursor's ``rowcount`` if it tells one (-1 or a closed cursor: None)."""
    try:
        count = cursor.rowcount
    except Exception:
        return None
    return count if isinstance(count, int) and count >= 0 else None


def batch_size(parameter_sets: Any) -> int | None:
    """How many parameter sets ``executemany`` got, if it can tell without consuming them."""
    if isinstance(parameter_sets, list | tuple):
        return len(parameter_sets)
    return None
