"""psycopg2: a client span per statement for code that uses the driver directly.

Patch ``psycopg2.connect`` (connections opened afterwards), or instrument one connection::

    from tomograph.integrations.psycopg2 import instrument_connection, patch
    patch()
    conn = instrument_connection(psycopg2.connect(dsn))   # or an existing connection

``execute``, ``executemany`` and the ``copy_*`` methods of every cursor (named, server-side
ones too) are recorded like psycopg 3's and SQLAlchemy's statements. psycopg2's cursor and
connection are C types that cannot be patched in place: ``patch()`` makes ``connect`` return
a traced subclass of the connection class, whose cursors are traced subclasses of the cursor
class asked for. See docs/psycopg.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.sql

from tomograph._cache import BoundedCache
from tomograph.integrations._dbapi import (
    Database,
    DriverOptions,
    batch_size,
    begin,
    composed_text,
    head_text,
    row_count,
)
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.tracer import Tracer

__all__ = ["instrument_connection", "patch", "patched", "unpatch"]

_DEFAULTS = DriverOptions()
# psycopg2's connections cannot be weakly referenced: their description is cached by DSN
# (psycopg2 shows it with the password masked), bounded.
_databases: BoundedCache[tuple[str, str | None], Database] = BoundedCache(256)


def _new_database(connection: Any, service_name: str | None) -> Database:
    try:
        info = connection.info
        return Database("postgresql", service_name, info.dbname, info.user, info.host, info.port)
    except Exception:
        return Database("postgresql", service_name)  # a closed or broken connection


def _database(cursor: Any, options: DriverOptions) -> Database:
    connection = cursor.connection
    dsn = getattr(connection, "dsn", None)
    if not isinstance(dsn, str):
        return _new_database(connection, options.service_name)
    key = (dsn, options.service_name)
    database = _databases.get(key)
    if database is None:
        database = _databases[key] = _new_database(connection, options.service_name)
    return database


def _text(query: Any, context: Any) -> tuple[str | None, bool]:
    """The statement's text, and whether values may be written into it."""
    if isinstance(query, str):
        return query, False
    if isinstance(query, bytes | bytearray | memoryview):
        # psycopg2 hands bytes when values were merged in by mogrify (execute_values,
        # execute_batch): the text names the span but is not kept.
        return head_text(query), True
    return composed_text(query, context, psycopg2.sql), False


def _run(
    cursor: Any,
    options: DriverOptions,
    query: Any,
    parameters: Any,
    call: Callable[[], Any],
    many: bool = False,
) -> Any:
    text, values_inside = _text(query, cursor)
    size = batch_size(parameters) if many else None
    running = begin(options, _database(cursor, options), text, parameters, size, values_inside)
    if running is None:
        return call()
    try:
        result = call()
    except BaseException as error:
        running.end(error=error)
        raise
    running.end(row_count(cursor))
    return result


def _traced_cursor_class(base: type, options: DriverOptions) -> type:
    """A subclass of the cursor class ``base`` whose statements are traced."""
    if getattr(base, "_tomograph_traced", False):
        return base
    key = (base, *options.key())
    traced = _cursor_classes.get(key)
    if traced is not None:
        return traced

    class TracedCursor(base):  # type: ignore[misc]
        _tomograph_traced = True

        def execute(self, query: Any, vars: Any = None) -> Any:
            return _run(
                self, options, query, vars, lambda: super(TracedCursor, self).execute(query, vars)
            )

        def executemany(self, query: Any, vars_list: Any) -> Any:
            return _run(
                self,
                options,
                query,
                vars_list,
                lambda: super(TracedCursor, self).executemany(query, vars_list),
                many=True,
            )

        def copy_expert(self, sql: Any, file: Any, *args: Any, **kwargs: Any) -> Any:
            return _run(
                self,
                options,
                sql,
                None,
                lambda: super(TracedCursor, self).copy_expert(sql, file, *args, **kwargs),
            )

        def copy_from(self, file: Any, table: str, *args: Any, **kwargs: Any) -> Any:
            return _run(
                self,
                options,
                f"COPY {table} FROM STDIN",
                None,
                lambda: super(TracedCursor, self).copy_from(file, table, *args, **kwargs),
            )

        def copy_to(self, file: Any, table: str, *args: Any, **kwargs: Any) -> Any:
            return _run(
                self,
                options,
                f"COPY {table} TO STDOUT",
                None,
                lambda: super(TracedCursor, self).copy_to(file, table, *args, **kwargs),
            )

    TracedCursor.__name__ = TracedCursor.__qualname__ = f"Traced{base.__name__}"
    _cursor_classes[key] = TracedCursor
    return TracedCursor


# Classes per (base class, options): every connection of a pool shares them; bounded.
_cursor_classes: BoundedCache[tuple[Any, ...], type] = BoundedCache(256)
_connection_classes: BoundedCache[type, type] = BoundedCache(64)


# What a connection class makes when no factory is named (DictConnection: a DictCursor), by
# (connection class, its cursor_factory): learnt once from a cursor made and closed at once.
_default_cursor_classes: BoundedCache[tuple[type, Any], type] = BoundedCache(64)


def _default_cursor_class(connection: Any, make_cursor: Callable[[], Any]) -> type:
    key = (type(connection), connection.cursor_factory)
    chosen = _default_cursor_classes.get(key)
    if chosen is None:
        probe = make_cursor()  # an unnamed cursor: nothing is sent to the server
        chosen = _default_cursor_classes[key] = type(probe)
        probe.close()
    return chosen


def _traced_connection_class(base: type) -> type:
    """A subclass of the connection class ``base`` whose cursors are all traced."""
    if getattr(base, "_tomograph_traced", False):
        return base
    traced = _connection_classes.get(base)
    if traced is not None:
        return traced

    class TracedConnection(base):  # type: ignore[misc]
        _tomograph_traced = True

        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            # cursor(name=None, cursor_factory=None, withhold=False, scrollable=None)
            if len(args) > 1 and args[1]:
                args = (args[0], _traced_cursor_class(args[1], _DEFAULTS), *args[2:])
            elif kwargs.get("cursor_factory"):
                kwargs["cursor_factory"] = _traced_cursor_class(kwargs["cursor_factory"], _DEFAULTS)
            else:
                chosen = _default_cursor_class(self, super().cursor)
                kwargs["cursor_factory"] = _traced_cursor_class(chosen, _DEFAULTS)
            return super().cursor(*args, **kwargs)

    TracedConnection.__name__ = TracedConnection.__qualname__ = f"Traced{base.__name__}"
    _connection_classes[base] = traced = TracedConnection
    return traced


def _traced_connect(connect: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(connect)
    def traced_connect(*args: Any, **kwargs: Any) -> Any:
        # connect(dsn=None, connection_factory=None, cursor_factory=None, **kwargs)
        if len(args) > 1:
            factory = args[1] or psycopg2.extensions.connection
            args = (args[0], _traced_connection_class(factory), *args[2:])
        else:
            factory = kwargs.get("connection_factory") or psycopg2.extensions.connection
            kwargs["connection_factory"] = _traced_connection_class(factory)
        return connect(*args, **kwargs)

    return traced_connect


def patch() -> bool:
    """Trace the statements of every connection ``psycopg2.connect`` opens from now on.

    Connections opened before (and by a ``connect`` imported by name before the call) are
    not traced: use :func:`instrument_connection` for them. False if already done.

    >>> patch() or patched()
    True
    >>> unpatch()
    True
    """
    return patch_method(psycopg2, "connect", _traced_connect)


def unpatch() -> bool:
    """Undo :func:`patch` (connections it traced stay traced)."""
    return unpatch_method(psycopg2, "connect")


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(psycopg2, "connect")


def instrument_connection(
    connection: Any,
    *,
    tracer: Tracer | None = None,
    service_name: str | None = None,
    record_parameters: bool = False,
) -> Any:
    """Trace the statements of one open connection; returns the connection.

    Its ``cursor_factory`` becomes a traced subclass of the one it had, so every cursor made
    without an explicit ``cursor_factory=`` argument is traced. ``service_name`` names the
    database in the trace (default ``postgresql``); ``record_parameters=True`` also records
    bound values and whole error messages.
    """
    options = DriverOptions(tracer, service_name, record_parameters)
    base = connection.cursor_factory or psycopg2.extensions.cursor
    connection.cursor_factory = _traced_cursor_class(base, options)
    return connection
