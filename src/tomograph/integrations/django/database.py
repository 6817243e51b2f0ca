"""SQL statements of Django's database connections as ``CLIENT`` spans, through execute_wrapper.

Django keeps a connection per alias *per thread*; each has its own list of execute wrappers.
The wrapper is put on every connection as it connects (the ``connection_created`` signal) and on
the calling thread's open ones, first in the list: ``connection.execute_wrapper()`` blocks of
the application append and pop their own behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from tomograph._cache import memoize
from tomograph.integrations._sql import (
    describe_span,
    enter_statement,
    leave_statement,
    parameters_text,
    record_statement_error,
)
from tomograph.model import Endpoint, SpanKind, TagValue, endpoint_for
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer

__all__ = ["StatementTracer", "database_traced", "trace_database", "untrace_database"]

_CLIENT = SpanKind.CLIENT
_log = logging.getLogger("tomograph")

Execute = Callable[[Any, Any, bool, dict[str, Any]], Any]


def _port(value: Any) -> int | None:
    try:
        port = int(value)
    except (TypeError, ValueError):
        return None
    return port if 0 < port <= 65535 else None


def _new_database(
    service_name: str | None, vendor: str, alias: str, name: Any, host: Any, port: Any
) -> tuple[dict[str, TagValue], Endpoint]:
    tags: dict[str, TagValue] = {"db.system": vendor, "django.db.alias": alias}
    if name:
        tags["db.name"] = str(name)
    host = host if isinstance(host, str) and host else None
    number = _port(port)
    if host:
        tags["server.address"] = host
    if number:
        tags["server.port"] = number
    return tags, endpoint_for(service_name or vendor, host, number)


# Per statement only a lookup: the tags and the endpoint of a database are built once.
_database = memoize(_new_database, 256)


class StatementTracer:
    """The execute wrapper: a ``CLIENT`` span around each statement (``executemany`` is one).

    ``record_parameters=True`` also records bound values (``db.parameters``) and whole error
    messages; ``service_name`` names the database in the trace (default: the vendor, e.g.
    ``postgresql``). Installed by :func:`trace_database`; usable on its own too::

        with connection.execute_wrapper(StatementTracer()):
            ...
    """

    def __init__(
        self,
        record_parameters: bool = False,
        service_name: str | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.record_parameters = record_parameters
        self.service_name = service_name
        self.tracer = tracer
        self.enabled = True

    def __call__(
        self, execute: Execute, sql: Any, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        if not self.enabled:
            return execute(sql, params, many, context)
        try:
            span = self._start(sql, params, many, context["connection"])
        except Exception:
            _log.exception("tomograph: recording a SQL statement failed")
            return execute(sql, params, many, context)  # tracing must never fail a query
        # The driver's integration (psycopg) below stays quiet: one span per statement.
        in_flight = enter_statement(None)
        try:
            result = execute(sql, params, many, context)
        except BaseException as error:
            record_statement_error(span, error, self.record_parameters)
            span.finish()
            raise
        finally:
            leave_statement(in_flight)
        if span.sampled:
            count = getattr(context.get("cursor"), "rowcount", None)
            if isinstance(count, int) and count >= 0:
                span.tags["db.row_count"] = count
        span.finish()
        return result

    def _start(self, sql: Any, params: Any, many: bool, connection: BaseDatabaseWrapper) -> Span:
        config = connection.settings_dict
        tags, remote = _database(
            self.service_name,
            connection.vendor,
            connection.alias,
            config.get("NAME"),
            config.get("HOST"),
            config.get("PORT"),
        )
        span = Span(self.tracer or get_tracer(), "SQL", _CLIENT, tags, CURRENT, None, remote)
        if span.sampled:
            if isinstance(sql, bytes):
                sql = sql.decode("utf-8", "replace")
            if isinstance(sql, str):
                describe_span(span, sql)
            if many and hasattr(params, "__len__"):
                span.tags["db.batch.size"] = len(params)
            if self.record_parameters and params is not None:
                span.tags["db.parameters"] = parameters_text(params)
        return span


_active: StatementTracer | None = None


def _install(connection: BaseDatabaseWrapper) -> None:
    wrappers = connection.execute_wrappers
    # One of ours at most: a tracer from an earlier trace_database() is replaced, never stacked.
    wrappers[:] = [wrapper for wrapper in wrappers if not isinstance(wrapper, StatementTracer)]
    if _active is not None:
        wrappers.insert(0, _active)


def _on_connection_created(sender: Any, connection: BaseDatabaseWrapper, **_: Any) -> None:
    _install(connection)


def _open_connections() -> list[BaseDatabaseWrapper]:
    from django.conf import settings

    if not settings.configured:
        return []  # before settings there are no connections: each gets it as it connects
    return list(connections.all(initialized_only=True))


def trace_database(
    record_parameters: bool = False,
    service_name: str | None = None,
    *,
    tracer: Tracer | None = None,
) -> bool:
    """Record every SQL statement of every Django database connection, in every thread.

    Statements are recorded without parameter values unless ``record_parameters=True``.
    False (nothing changed) if already tracing. Safe before settings are configured.

    >>> trace_database()
    True
    >>> untrace_database()
    True
    """
    global _active
    if _active is not None:
        return False
    _active = StatementTracer(record_parameters, service_name, tracer)
    connection_created.connect(
        _on_connection_created, weak=False, dispatch_uid="tomograph.trace_database"
    )
    for connection in _open_connections():
        _install(connection)
    return True


def untrace_database() -> bool:
    """Stop :func:`trace_database`; False if it was not tracing.

    The wrapper leaves the calling thread's connections; other threads' connections keep a
    wrapper that no longer records, until they reconnect.
    """
    global _active
    if _active is None:
        return False
    _active.enabled = False
    _active = None
    connection_created.disconnect(dispatch_uid="tomograph.trace_database")
    for connection in _open_connections():
        _install(connection)
    return True


def recording_parameters() -> bool:
    """True if statements are traced with their parameter values (the user's opt-in)."""
    return _active is not None and _active.record_parameters


def database_traced() -> bool:
    """True while :func:`trace_database` is in effect."""
    return _active is not None
