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
    MAX_STATEMENT_LENGTH,
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

__all__ = [
    "Database",
    "DriverOptions",
    "Running",
    "batch_size",
    "begin",
    "composed_text",
    "head_text",
    "row_count",
]

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
    # isdigit() is true for "²" and for digits of other scripts, which int() refuses or reads
    # as another number; a port is at most five ASCII digits
    if isinstance(port, str) and port.isascii() and port.isdigit() and len(port) <= 5:
        port = int(port)
    return port if type(port) is int and 0 < port < 65536 else None


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
        if error is not None and not isinstance(error, GeneratorExit):
            record_statement_error(span, error, self.record_parameters)
        # (GeneratorExit: a loop over streamed rows, or a copy block, left early: no failure)
        elif row_count is not None and row_count >= 0 and span.sampled:
            span.tags["db.row_count"] = row_count
        span.finish()


def begin(
    options: DriverOptions,
    database: Database,
    text: str | None,
    parameters: Any = None,
    batch_size: int | None = None,
    values_inside: bool = False,
) -> Running | None:
    """Start the span of a statement; None if a layer above records it or tracing is off.

    ``text`` is the statement with its placeholders (None if it cannot be shown without its
    values: the span is then just ``SQL``); ``batch_size`` is the number of parameter sets of
    an ``executemany``, when known. ``values_inside``: the text may hold values written into
    it, so it names the span (operation and table) but is kept only if parameters are.
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
            if values_inside and not options.record_parameters:
                del span.tags["db.statement"]
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


def head_text(query: bytes | bytearray | memoryview) -> str:
    """A statement given as bytes, decoded: only its head, the span keeps no more."""
    return bytes(query[: MAX_STATEMENT_LENGTH * 4]).decode("utf-8", "replace")


def composed_text(query: Any, context: Any, sql_module: Any) -> str | None:
    """The text of a statement built with a driver's ``sql`` module (psycopg's or psycopg2's).

    ``Literal`` parts are values: they show as ``?``. None if a part cannot be shown.
    """
    if isinstance(query, sql_module.Literal):
        return "?"
    if isinstance(query, sql_module.Composed):
        parts = [composed_text(part, context, sql_module) for part in query]
        return None if None in parts else "".join(parts)  # type: ignore[arg-type]
    if isinstance(query, sql_module.Composable):
        try:
            text = query.as_string(context)
        except Exception:
            return None  # e.g. an identifier the connection's encoding cannot write
        return text if isinstance(text, str) else None
    return None  # a template string or an unknown type: its parts may be values
