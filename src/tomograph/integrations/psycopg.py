"""psycopg 3: a client span per statement for code that uses the driver directly.

Patch every connection (those that exist too), or instrument one::

    from tomograph.integrations.psycopg import instrument_connection, patch
    patch()
    conn = instrument_connection(psycopg.connect(dsn))   # or just this connection

``execute``, ``executemany`` and ``copy`` of every cursor (client-side, server-side, sync and
asyncio) are recorded as the SQLAlchemy integration records them: named ``SELECT users``,
the statement with its placeholders and never the values (unless ``record_parameters=True``).
Under SQLAlchemy (or any integration that marks its statements, see ``_sql``) a statement
gives one span, the upper layer's. See docs/psycopg.md.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import aclosing, asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import sql

from tomograph._cache import BoundedCache
from tomograph.integrations._dbapi import (
    Database,
    DriverOptions,
    Running,
    batch_size,
    begin,
    composed_text,
    head_text,
    row_count,
)
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method, unpatched
from tomograph.tracer import Tracer

__all__ = ["instrument_connection", "patch", "patched", "statement_text", "unpatch"]

_DEFAULTS = DriverOptions()
_databases: weakref.WeakKeyDictionary[Any, Database] = weakref.WeakKeyDictionary()


def _new_database(connection: Any, service_name: str | None) -> Database:
    try:
        info = connection.info
        return Database("postgresql", service_name, info.dbname, info.user, info.host, info.port)
    except Exception:
        return Database("postgresql", service_name)  # a closed or broken connection


def _database(cursor: Any, options: DriverOptions) -> Database:
    connection = cursor.connection
    if options.service_name is not None:
        return _new_database(connection, options.service_name)  # rare: not worth a cache
    database = _databases.get(connection)
    if database is None:
        database = _databases[connection] = _new_database(connection, None)
    return database


def statement_text(query: Any, context: Any = None) -> str | None:
    """The text of a query as psycopg accepts it, placeholders kept, values never.

    ``sql.Literal`` parts (values written into the statement) show as ``?``; a query that
    cannot be shown gives None.

    >>> from psycopg import sql
    >>> statement_text(sql.SQL('SELECT * FROM {} WHERE id = {}').format(
    ...     sql.Identifier('users'), sql.Literal('secret')))
    'SELECT * FROM "users" WHERE id = ?'
    """
    if isinstance(query, str):
        return query
    if isinstance(query, bytes | bytearray | memoryview):
        return head_text(query)
    return composed_text(query, context, sql)


def _start(cursor: Any, options: DriverOptions, query: Any, parameters: Any) -> Running | None:
    return begin(options, _database(cursor, options), statement_text(query, cursor), parameters)


# -- wrappers: ``original`` is called as ``original(cursor, *args, **kwargs)`` ------------------


def _traced_execute(original: Callable[..., Any], options: DriverOptions) -> Callable[..., Any]:
    def execute(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        running = _start(self, options, query, params)
        if running is None:
            return original(self, query, params, *args, **kwargs)
        try:
            result = original(self, query, params, *args, **kwargs)
        except BaseException as error:
            running.end(error=error)
            raise
        running.end(row_count(self))
        return result

    return functools.wraps(original)(execute)


def _traced_executemany(original: Callable[..., Any], options: DriverOptions) -> Callable[..., Any]:
    def executemany(self: Any, query: Any, params_seq: Any, *args: Any, **kwargs: Any) -> Any:
        running = begin(
            options,
            _database(self, options),
            statement_text(query, self),
            params_seq,
            batch_size(params_seq),
        )
        if running is None:
            return original(self, query, params_seq, *args, **kwargs)
        try:
            result = original(self, query, params_seq, *args, **kwargs)
        except BaseException as error:
            running.end(error=error)
            raise
        running.end(row_count(self))
        return result

    return functools.wraps(original)(executemany)


def _traced_copy(original: Callable[..., Any], options: DriverOptions) -> Callable[..., Any]:
    # The span lasts the whole ``with cursor.copy(...)`` block: the data flows inside it.
    @contextmanager
    def copy(
        self: Any, statement: Any, params: Any = None, *args: Any, **kwargs: Any
    ) -> Iterator[Any]:
        running = _start(self, options, statement, params)
        if running is None:
            with original(self, statement, params, *args, **kwargs) as copier:
                yield copier
            return
        try:
            with original(self, statement, params, *args, **kwargs) as copier:
                yield copier
        except BaseException as error:
            running.end(error=error)
            raise
        running.end(row_count(self))

    return functools.wraps(original)(copy)


def _traced_stream(original: Callable[..., Any], options: DriverOptions) -> Callable[..., Any]:
    # The span lasts until the rows are all read, or the loop over them stops early.
    def stream(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        running = _start(self, options, query, params)
        if running is None:
            yield from original(self, query, params, *args, **kwargs)
            return
        rows = 0
        try:
            for row in original(self, query, params, *args, **kwargs):
                rows += 1
                yield row
        except BaseException as error:
            running.end(rows, error)
            raise
        running.end(rows)

    return functools.wraps(original)(stream)


def _traced_async_stream(
    original: Callable[..., Any], options: DriverOptions
) -> Callable[..., Any]:
    async def stream(
        self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        running = _start(self, options, query, params)
        # aclosing: a loop left early closes psycopg's generator now, which frees the
        # connection, not whenever the garbage collector gets to it.
        async with aclosing(original(self, query, params, *args, **kwargs)) as source:
            if running is None:
                async for row in source:
                    yield row
                return
            rows = 0
            try:
                async for row in source:
                    rows += 1
                    yield row
            except BaseException as error:
                running.end(rows, error)
                raise
            running.end(rows)

    return functools.wraps(original)(stream)


def _traced_async_execute(
    original: Callable[..., Any], options: DriverOptions
) -> Callable[..., Any]:
    async def execute(self: Any, query: Any, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        running = _start(self, options, query, params)
        if running is None:
            return await original(self, query, params, *args, **kwargs)
        try:
            result = await original(self, query, params, *args, **kwargs)
        except BaseException as error:
            running.end(error=error)
            raise
        running.end(row_count(self))
        return result

    return functools.wraps(original)(execute)


def _traced_async_executemany(
    original: Callable[..., Any], options: DriverOptions
) -> Callable[..., Any]:
    async def executemany(self: Any, query: Any, params_seq: Any, *args: Any, **kwargs: Any) -> Any:
        running = begin(
            options,
            _database(self, options),
            statement_text(query, self),
            params_seq,
            batch_size(params_seq),
        )
        if running is None:
            return await original(self, query, params_seq, *args, **kwargs)
        try:
            result = await original(self, query, params_seq, *args, **kwargs)
        except BaseException as error:
            running.end(error=error)
            raise
        running.end(row_count(self))
        return result

    return functools.wraps(original)(executemany)


def _traced_async_copy(original: Callable[..., Any], options: DriverOptions) -> Callable[..., Any]:
    @asynccontextmanager
    async def copy(
        self: Any, statement: Any, params: Any = None, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        running = _start(self, options, statement, params)
        if running is None:
            async with original(self, statement, params, *args, **kwargs) as copier:
                yield copier
            return
        try:
            async with original(self, statement, params, *args, **kwargs) as copier:
                yield copier
        except BaseException as error:
            running.end(error=error)
            raise
        running.end(row_count(self))

    return functools.wraps(original)(copy)


Wrap = Callable[[Callable[..., Any], DriverOptions], Callable[..., Any]]

_SYNC: dict[str, Wrap] = {
    "execute": _traced_execute,
    "executemany": _traced_executemany,
    "copy": _traced_copy,
    "stream": _traced_stream,
}
_ASYNC: dict[str, Wrap] = {
    "execute": _traced_async_execute,
    "executemany": _traced_async_executemany,
    "copy": _traced_async_copy,
    "stream": _traced_async_stream,
}

#: What patch() replaces. Client and raw cursors inherit Cursor's methods; server-side
#: cursors have their own execute (it declares the cursor) and executemany.
_PATCHES: list[tuple[type, str, Wrap]] = [
    *((psycopg.Cursor, name, wrap) for name, wrap in _SYNC.items()),
    *((psycopg.AsyncCursor, name, wrap) for name, wrap in _ASYNC.items()),
    (psycopg.ServerCursor, "execute", _traced_execute),
    (psycopg.ServerCursor, "executemany", _traced_executemany),
    (psycopg.AsyncServerCursor, "execute", _traced_async_execute),
    (psycopg.AsyncServerCursor, "executemany", _traced_async_executemany),
]


def _with_defaults(wrap: Wrap, original: Callable[..., Any]) -> Callable[..., Any]:
    return wrap(original, _DEFAULTS)


def patch() -> bool:
    """Trace the statements of every psycopg 3 connection, existing ones included.

    False (and nothing changes) if already done.

    >>> patch() or patched()
    True
    >>> unpatch()
    True
    """
    if patched():
        return False
    for owner, name, wrap in _PATCHES:
        patch_method(owner, name, functools.partial(_with_defaults, wrap))
    return True


def unpatch() -> bool:
    """Undo :func:`patch`; False if it was not in effect."""
    undone = False
    for owner, name, _ in _PATCHES:
        undone = unpatch_method(owner, name) or undone
    return undone


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(psycopg.Cursor, "execute")


# A class per (cursor class, options): connections of a pool share them, memory stays bounded.
_traced_classes: BoundedCache[tuple[Any, ...], type] = BoundedCache(256)


def _traced_class(base: type, options: DriverOptions) -> type:
    if getattr(base, "_tomograph_traced", False):
        return base
    key = (base, *options.key())
    traced = _traced_classes.get(key)
    if traced is None:
        asynchronous = issubclass(base, psycopg.AsyncCursor | psycopg.AsyncServerCursor)
        wraps = _ASYNC if asynchronous else _SYNC
        methods: dict[str, Any] = {"_tomograph_traced": True}
        for name, wrap in wraps.items():
            if hasattr(base, name):
                methods[name] = wrap(unpatched(getattr(base, name)), options)
        traced = _traced_classes[key] = type(f"Traced{base.__name__}", (base,), methods)
    return traced


def instrument_connection(
    connection: Any,
    *,
    tracer: Tracer | None = None,
    service_name: str | None = None,
    record_parameters: bool = False,
) -> Any:
    """Trace the statements of one connection (sync or asyncio); returns the connection.

    Its cursors, server-side cursors and ``connection.execute()`` are traced: the connection's
    ``cursor_factory`` and ``server_cursor_factory`` become traced subclasses of the ones it
    had. ``service_name`` names the database in the trace (default ``postgresql``);
    ``record_parameters=True`` also records bound values and whole error messages.
    """
    options = DriverOptions(tracer, service_name, record_parameters)
    connection.cursor_factory = _traced_class(connection.cursor_factory, options)
    connection.server_cursor_factory = _traced_class(connection.server_cursor_factory, options)
    return connection
