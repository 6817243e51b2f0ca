"""SQLAlchemy 2.x: a client span (or a note on the current span) for every SQL statement.

The modern way, one line per engine (also works on an ``AsyncEngine``)::

    from tomograph.integrations.sqlalchemy import instrument
    instrument(engine)

Every engine, those created later too (what ``tomograph run`` does)::

    from tomograph.integrations import sqlalchemy
    sqlalchemy.patch()

The classic listeners keep working::

    sqlalchemy.event.listen(engine, 'before_execute', tomograph.before_execute('my app'))
    sqlalchemy.event.listen(engine, 'after_execute', tomograph.after_execute('my app'))
    sqlalchemy.event.listen(engine, 'handle_error', tomograph.dbapi_error('my app'))

Statements are recorded **without parameter values** (they may hold personal data) unless
``record_parameters=True``. Error messages are cut to their first line for the same reason
(PostgreSQL puts the offending values on the ``DETAIL`` line).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext

from tomograph.clock import epoch_us, monotonic_ns
from tomograph.context import CURRENT_SPAN
from tomograph.integrations._sql import (
    MAX_STATEMENT_LENGTH,
    StatementInFlight,
    cut,
    describe_span,
    enter_statement,
    first_line,
    leave_statement,
    parameters_text,
    record_statement_error,
)
from tomograph.model import Endpoint, ExceptionNote, SpanKind, TagValue, endpoint_for
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer

__all__ = [
    "ClassicListener",
    "Instrumentation",
    "StatementRecorder",
    "after_execute",
    "before_execute",
    "dbapi_error",
    "instrument",
    "patch",
    "patched",
    "uninstrument",
    "unpatch",
]

#: Statements started by ``before_execute`` and not yet finished, per context; a statement
#: whose end is never seen (it failed before reaching the database) is dropped past this depth.
MAX_OPEN_STATEMENTS = 32

_ATTRIBUTE = "_tomograph_statement"
_open_statements: ContextVar[tuple[_Statement, ...]] = ContextVar(
    "tomograph_sqlalchemy_statements", default=()
)


class _Database:
    """What is known about an engine's database, computed once per engine."""

    __slots__ = ("remote", "tags")

    def __init__(self, engine: Engine, service_name: str | None) -> None:
        url = engine.url
        system = engine.dialect.name
        self.remote = endpoint_for(service_name or system, url.host, url.port)
        tags: dict[str, TagValue] = {"db.system": system}
        if url.database:
            tags["db.name"] = url.database
        if url.host:
            tags["server.address"] = url.host
        if url.port:
            tags["server.port"] = url.port
        self.tags = tags


class _Statement:
    """One statement in flight: its span, or (in notes mode) where its note will go.

    While it runs it is marked in flight (see ``_sql.enter_statement``), so that a driver
    integration below (psycopg) does not record the same statement a second time.
    """

    __slots__ = ("in_flight", "parent", "span", "start_ns")

    def __init__(
        self, span: Span | None, parent: Span | None, start_ns: int, statement: str | None
    ) -> None:
        self.span = span
        self.parent = parent
        self.start_ns = start_ns
        self.in_flight: StatementInFlight = enter_statement(statement)


class StatementRecorder:
    """Turns statements into spans or notes; shared by :func:`instrument` and the classic listeners.

    ``service_name`` is the database's name in the trace (the remote endpoint; default: the
    dialect, e.g. ``postgresql``). ``local_service_name`` reports the spans under another local
    service (what the classic listeners' argument does). ``tracer`` defaults to the default
    tracer at the time of each statement.

    >>> import sqlalchemy
    >>> recorder = StatementRecorder(record_parameters=False)
    >>> recorder.as_notes
    False
    """

    def __init__(
        self,
        service_name: str | None = None,
        record_parameters: bool = False,
        as_notes: bool = False,
        tracer: Tracer | None = None,
        local_service_name: str | None = None,
    ) -> None:
        self.service_name = service_name
        self.record_parameters = record_parameters
        self.as_notes = as_notes
        self.tracer = tracer
        self.local_endpoint = Endpoint(local_service_name) if local_service_name else None
        self._databases: weakref.WeakKeyDictionary[Engine, _Database] = weakref.WeakKeyDictionary()

    def _database(self, engine: Engine) -> _Database:
        database = self._databases.get(engine)
        if database is None:
            database = self._databases[engine] = _Database(engine, self.service_name)
        return database

    # -- the three moments of a statement ----------------------------------------------------

    def start(
        self, connection: Connection, statement: str | None, parameters: Any = None
    ) -> _Statement | None:
        """Begin recording a statement; ``statement`` may be unknown yet (then named later)."""
        parent = CURRENT_SPAN.get()
        if self.as_notes:
            if parent is None or not parent.sampled:
                return None  # a note needs a recording span to go on
            return _Statement(None, parent, monotonic_ns(), statement)
        database = self._database(connection.engine)
        tracer = self.tracer or get_tracer()
        span = Span(
            tracer,
            "SQL",
            SpanKind.CLIENT,
            database.tags,
            CURRENT,
            self.local_endpoint,
            database.remote,
        )
        if span.sampled:
            if statement is not None:
                self._describe(span, statement)
            if self.record_parameters and parameters is not None:
                span.tags["db.parameters"] = parameters_text(parameters)
        return _Statement(span, None, span.start_ns, statement)

    def finish(
        self,
        pending: _Statement,
        statement: str | None = None,
        row_count: int | None = None,
        error: BaseException | None = None,
        parameters: Any = None,
    ) -> None:
        """End recording: name the span if it is not named yet, tag rows and errors, finish it."""
        leave_statement(pending.in_flight)
        if error is not None and not self.record_parameters:
            # Also on the request's span it reaches: the message's values stay unrecorded.
            ExceptionNote.first_line_only(error)
        span = pending.span
        if span is None:
            self._note(pending, statement, error)
            return
        if span.sampled:
            if statement is not None and "db.statement" not in span.tags:
                self._describe(span, statement)
            if (
                self.record_parameters
                and parameters is not None
                and "db.parameters" not in span.tags
            ):
                span.tags["db.parameters"] = parameters_text(parameters)
            if row_count is not None and row_count >= 0:
                span.tags["db.row_count"] = row_count
            if error is not None:
                self._record_error(span, error)
        elif error is not None:
            span.error = True
        span.finish()

    def _describe(self, span: Span, statement: str) -> None:
        describe_span(span, statement)

    def _record_error(self, span: Span, error: BaseException) -> None:
        record_statement_error(span, error, self.record_parameters)

    def _note(
        self, pending: _Statement, statement: str | None, error: BaseException | None
    ) -> None:
        parent = pending.parent
        if parent is None or parent.end_ns:
            return
        text = cut(statement or "SQL", MAX_STATEMENT_LENGTH)
        duration = max(1, (monotonic_ns() - pending.start_ns) // 1000)
        parent.annotate_at(text, epoch_us(pending.start_ns, parent.epoch_offset_ns), duration)
        if error is not None:
            message = str(error) if self.record_parameters else first_line(error)
            parent.annotate(f"SQL error: {type(error).__qualname__}: {message}")

    # -- SQLAlchemy event listeners ------------------------------------------------------------

    def before_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """``before_cursor_execute`` listener: start recording the statement."""
        try:
            pending = self.start(conn, statement, parameters)
            if pending is not None and context is not None:
                setattr(context, _ATTRIBUTE, pending)
        except Exception:
            _listener_failed()

    def after_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        """``after_cursor_execute`` listener: finish the statement with its row count."""
        try:
            pending = _pop_from_context(context)
            if pending is not None:
                self.finish(pending, statement, _row_count(cursor))
        except Exception:
            _listener_failed()

    def handle_error(self, exception_context: ExceptionContext) -> None:
        """``handle_error`` listener: finish the failed statement as an error."""
        try:
            pending = _pop_from_context(exception_context.execution_context)
            if pending is not None:
                self.finish(
                    pending,
                    exception_context.statement,
                    None,
                    exception_context.original_exception,
                    exception_context.parameters,
                )
        except Exception:
            _listener_failed()


_log = logging.getLogger("tomograph")
_listener_failures = 0


def _listener_failed() -> None:
    # Tracing must never fail a query: log (a few times), then carry on without the span.
    global _listener_failures
    _listener_failures += 1
    if _listener_failures <= 3:
        _log.exception("tomograph: recording a SQL statement failed")


def _row_count(source: Any) -> int | None:
    try:
        count = source.rowcount
    except Exception:
        return None  # some results cannot tell (closed cursors): the count is optional
    return count if isinstance(count, int) else None


def _pop_from_context(context: Any) -> _Statement | None:
    if context is None:
        return None
    pending: _Statement | None = context.__dict__.pop(_ATTRIBUTE, None)
    return pending


def _push(pending: _Statement) -> None:
    stack = _open_statements.get()
    if len(stack) >= MAX_OPEN_STATEMENTS:
        # The oldest never ended (a compile error before execution): drop it, and stop it
        # hiding the statements a driver integration below would record.
        leave_statement(stack[0].in_flight)
        stack = stack[1:]
    _open_statements.set((*stack, pending))


def _pop() -> _Statement | None:
    stack = _open_statements.get()
    if not stack:
        return None
    _open_statements.set(stack[:-1])
    return stack[-1]


def _fail(recorder: StatementRecorder, exception_context: ExceptionContext) -> None:
    error = exception_context.original_exception
    pending = _pop_from_context(exception_context.execution_context)
    if pending is None:
        pending = _pop()
    if pending is not None:
        recorder.finish(
            pending,
            exception_context.statement,
            None,
            error,
            exception_context.parameters,
        )


# -- the classic listeners ---------------------------------------------------------------------

_hooked_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


class ClassicListener:
    """A listener made by :func:`before_execute`, :func:`after_execute` or :func:`dbapi_error`.

    It recognises the event it is attached to from its arguments, so each works on either the
    statement-level or the cursor-level event of SQLAlchemy 2.x (see docs/sqlalchemy.md).
    """

    __slots__ = ("__weakref__", "recorder", "role")

    def __init__(self, role: str, service_name: str) -> None:
        self.role = role
        self.recorder = _classic_recorder(service_name)

    def __call__(self, *args: Any) -> None:
        role = self.role
        try:
            if role == "start":
                self._start(args)
            elif role == "finish":
                self._finish(args)
            else:
                self._error(args)
        except Exception:
            _listener_failed()

    def _start(self, args: tuple[Any, ...]) -> None:
        conn = args[0]
        _hook_errors(conn.engine)
        if len(args) == 6:  # before_cursor_execute(conn, cursor, statement, params, context, many)
            pending = self.recorder.start(conn, args[2], args[3])
            if pending is not None and args[4] is not None:
                setattr(args[4], _ATTRIBUTE, pending)
            return
        # before_execute(conn, clauseelement, multiparams, params, execution_options): the SQL
        # text is not compiled yet; the span is named when the statement ends.
        clause = args[1]
        pending = self.recorder.start(conn, clause if isinstance(clause, str) else None)
        if pending is not None:
            _push(pending)

    def _finish(self, args: tuple[Any, ...]) -> None:
        if len(args) == 6 and isinstance(args[2], str):
            # after_cursor_execute(conn, cursor, statement, parameters, context, executemany)
            pending = _pop_from_context(args[4]) or _pop()
            if pending is not None:
                self.recorder.finish(pending, args[2], _row_count(args[1]), None, args[3])
            return
        # after_execute(conn, clauseelement, multiparams, params, execution_options, result)
        result = args[5]
        context = getattr(result, "context", None)
        pending = _pop_from_context(context) or _pop()
        if pending is not None:
            statement = getattr(context, "statement", None)
            parameters = getattr(context, "parameters", None)
            self.recorder.finish(
                pending,
                statement if isinstance(statement, str) else None,
                _row_count(result),
                None,
                parameters,
            )

    def _error(self, args: tuple[Any, ...]) -> None:
        if len(args) == 1:  # handle_error(exception_context)
            _fail(self.recorder, args[0])
            return
        # dbapi_error(conn, cursor, statement, parameters, context, exception): SQLAlchemy < 2
        pending = _pop_from_context(args[4]) or _pop()
        if pending is not None:
            self.recorder.finish(pending, args[2], None, args[5], args[3])


_classic_recorders: dict[str, StatementRecorder] = {}


def _classic_recorder(service_name: str) -> StatementRecorder:
    recorder = _classic_recorders.get(service_name)
    if recorder is None:
        recorder = StatementRecorder(local_service_name=service_name)
        _classic_recorders[service_name] = recorder
    return recorder


def _finish_failed_classic(exception_context: ExceptionContext) -> None:
    try:
        pending = _pop_from_context(exception_context.execution_context)
        if pending is None:
            pending = _pop()
        if pending is not None:
            # The recorder only matters for naming and error detail: use the classic defaults.
            _default_error_recorder.finish(
                pending, exception_context.statement, None, exception_context.original_exception
            )
    except Exception:
        _listener_failed()


_default_error_recorder = StatementRecorder()


def _hook_errors(engine: Engine) -> None:
    # SQLAlchemy 2 has no dbapi_error event, so classic code that listened to it must drop that
    # line; errors still end their span because the first classic listener hooks handle_error.
    if engine not in _hooked_engines:
        _hooked_engines.add(engine)
        event.listen(engine, "handle_error", _finish_failed_classic)


def before_execute(service_name: str) -> ClassicListener:
    """The classic listener that starts a span for each statement.

    Attach it to ``before_execute`` or ``before_cursor_execute``; spans are reported under
    ``service_name``, as with ``tomograph.start(service_name, ...)``.

    >>> import sqlalchemy, tomograph
    >>> engine = sqlalchemy.create_engine('sqlite://')
    >>> sqlalchemy.event.listen(engine, 'before_execute', tomograph.before_execute('my app'))
    """
    return ClassicListener("start", service_name)


def after_execute(service_name: str) -> ClassicListener:
    """The classic listener that finishes a statement's span (with its row count).

    Attach it to ``after_execute`` or ``after_cursor_execute``.

    >>> import sqlalchemy, tomograph
    >>> engine = sqlalchemy.create_engine('sqlite://')
    >>> sqlalchemy.event.listen(engine, 'after_execute', tomograph.after_execute('my app'))
    """
    return ClassicListener("finish", service_name)


def dbapi_error(service_name: str) -> ClassicListener:
    """The classic listener that finishes a failed statement's span as an error.

    SQLAlchemy 2 has no ``dbapi_error`` event: attach it to ``handle_error``.

    >>> import sqlalchemy, tomograph
    >>> engine = sqlalchemy.create_engine('sqlite://')
    >>> sqlalchemy.event.listen(engine, 'handle_error', tomograph.dbapi_error('my app'))
    """
    return ClassicListener("error", service_name)


# -- the modern one-liner ------------------------------------------------------------------------


class Instrumentation:
    """The listeners :func:`instrument` attached to one engine; ``uninstrument()`` removes them."""

    def __init__(self, engine: Engine, recorder: StatementRecorder) -> None:
        self.engine = engine
        self.recorder = recorder
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("before_cursor_execute", recorder.before_cursor_execute),
            ("after_cursor_execute", recorder.after_cursor_execute),
            ("handle_error", recorder.handle_error),
        ]
        for name, listener in self._listeners:
            event.listen(engine, name, listener)

    def uninstrument(self) -> None:
        """Stop recording this engine's statements."""
        for name, listener in self._listeners:
            if event.contains(self.engine, name, listener):
                event.remove(self.engine, name, listener)
        self._listeners = []
        if _instrumented.get(self.engine) is self:
            del _instrumented[self.engine]


_instrumented: weakref.WeakKeyDictionary[Engine, Instrumentation] = weakref.WeakKeyDictionary()


def _sync_engine(engine: Any) -> Engine:
    sync = getattr(engine, "sync_engine", engine)  # an AsyncEngine wraps a sync one
    if not isinstance(sync, Engine):
        raise TypeError(f"instrument() needs a SQLAlchemy Engine or AsyncEngine, not {engine!r}")
    return sync


def instrument(
    engine: Any,
    service_name: str | None = None,
    record_parameters: bool = False,
    as_notes: bool = False,
    *,
    tracer: Tracer | None = None,
) -> Instrumentation:
    """Record every statement ``engine`` runs: a client span each, or a note on the current span.

    ``service_name`` names the database in the trace (default: the dialect, e.g. ``sqlite``).
    ``record_parameters=True`` also records the bound values (``db.parameters``) and whole error
    messages. ``as_notes=True`` adds a note (the statement, with its duration) to the current
    span instead of a span per statement. Instrumenting an engine again replaces the previous
    settings.

    >>> import sqlalchemy
    >>> engine = sqlalchemy.create_engine('sqlite://')
    >>> handle = instrument(engine)
    >>> handle.uninstrument()
    """
    sync = _sync_engine(engine)
    previous = _instrumented.get(sync)
    if previous is not None:
        previous.uninstrument()
    recorder = StatementRecorder(service_name, record_parameters, as_notes, tracer)
    handle = _instrumented[sync] = Instrumentation(sync, recorder)
    return handle


def uninstrument(engine: Any) -> None:
    """Undo :func:`instrument` on ``engine`` (nothing happens if it was not instrumented)."""
    handle = _instrumented.get(_sync_engine(engine))
    if handle is not None:
        handle.uninstrument()


# -- every engine ----------------------------------------------------------------------------


class _EveryEngine(StatementRecorder):
    """The recorder :func:`patch` listens with on the Engine class, for every engine but those
    :func:`instrument` was called on: they record once, with their own settings."""

    def before_cursor_execute(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if conn.engine not in _instrumented:
            super().before_cursor_execute(conn, cursor, statement, parameters, context, executemany)


_every_engine: Instrumentation | None = None
_patch_lock = threading.Lock()


def patch() -> bool:
    """Record the statements of every engine, existing and created later, with the defaults of
    :func:`instrument` (a client span each, no parameter values). Engines given to
    :func:`instrument` keep their own settings. False if already patched.

    >>> patch()
    True
    >>> unpatch()
    True
    """
    global _every_engine
    with _patch_lock:
        if _every_engine is not None:
            return False
        # SQLAlchemy accepts the class as an event target: its listeners apply to every engine.
        _every_engine = Instrumentation(Engine, _EveryEngine())  # type: ignore[arg-type]
        return True


def unpatch() -> bool:
    """Undo :func:`patch`; False if it was not patched."""
    global _every_engine
    with _patch_lock:
        if _every_engine is None:
            return False
        _every_engine.uninstrument()
        _every_engine = None
        return True


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return _every_engine is not None
