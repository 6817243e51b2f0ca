"""What every SQL integration records the same way: names, statement tags, errors, nesting.

SQLAlchemy, Django and the psycopg drivers use it, so a statement looks alike whichever layer
recorded it: the statement text with its placeholders, never the values unless the user opted
in, and error messages cut to their first line (PostgreSQL puts the offending values on the
``DETAIL`` line).

Low-cardinality names for SQL statements (``SELECT users``, ``INSERT orders``, ``COMMIT``): a
statement's text is looked at once, and the answer cached by text (SQLAlchemy reuses the same
compiled string for the same statement), in a bounded cache.

Database layers stack (SQLAlchemy or Django on top of psycopg): the layer that records a
statement marks it in flight with :func:`enter_statement`, and a layer below that finds
:func:`traced_above` true for the statement it is about to run records nothing, so a statement
gives one span.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any

from tomograph._cache import BoundedCache
from tomograph.model import ExceptionNote, exception_text
from tomograph.span import Span

__all__ = [
    "MAX_PARAMETERS_LENGTH",
    "MAX_STATEMENT_LENGTH",
    "StatementInFlight",
    "cut",
    "describe_span",
    "describe_statement",
    "enter_statement",
    "first_line",
    "leave_statement",
    "parameters_text",
    "record_statement_error",
    "redact_database_error",
    "traced_above",
]

#: Longest statement text kept on a span; longer ones are cut and end with "...".
MAX_STATEMENT_LENGTH = 4096
#: Longest ``db.parameters`` value (when parameters are recorded at all).
MAX_PARAMETERS_LENGTH = 1024

#: How much of a statement is looked at: the verb and table come early, and a huge statement
#: (a bulk INSERT) must not cost a scan of its whole text.
_HEAD = 512
_CACHE_SIZE = 2048

_COMMENTS = re.compile(r"\s*(?:--[^\n]*(?:\n|$)|/\*.*?\*/)\s*", re.S)
_VERB = re.compile(r"\s*\(*\s*([A-Za-z]+)")
_IDENT = (
    r'((?:"[^"]{1,128}"|`[^`]{1,128}`|\[[^\]]{1,128}\]|[A-Za-z_][\w$]{0,127})'
    r'(?:\s*\.\s*(?:"[^"]{1,128}"|`[^`]{1,128}`|\[[^\]]{1,128}\]|[A-Za-z_][\w$]{0,127}))?)'
)
_TABLE_AFTER = {
    "SELECT": re.compile(r"\bFROM\s+" + _IDENT, re.I),
    "DELETE": re.compile(r"\bFROM\s+" + _IDENT, re.I),
    "INSERT": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "REPLACE": re.compile(r"\bINTO\s+" + _IDENT, re.I),
    "UPDATE": re.compile(r"^\s*\(*\s*UPDATE\s+(?:OR\s+\w+\s+)?(?:ONLY\s+)?" + _IDENT, re.I),
}
_QUOTES = str.maketrans("", "", '"`[]')

# Bounded: a program that builds unique SQL strings must not leak.
_cache: BoundedCache[str, tuple[str, str | None]] = BoundedCache(_CACHE_SIZE)


def describe_statement(statement: str) -> tuple[str, str | None]:
    """The operation (upper-case first keyword) and main table of ``statement``, if found.

    Only the first few hundred characters are read; anything unrecognised gives ``("SQL",
    None)``. Never raises.

    >>> describe_statement('SELECT id, name FROM users WHERE id = ?')
    ('SELECT', 'users')
    >>> describe_statement('insert into "Orders" (id) values (%(id)s)')
    ('INSERT', 'Orders')
    """
    found = _cache.get(statement)
    if found is not None:
        return found
    found = _cache[statement] = _describe(statement[:_HEAD])
    return found


def _describe(head: str) -> tuple[str, str | None]:
    head = _COMMENTS.sub(" ", head) if ("--" in head or "/*" in head) else head
    verb_match = _VERB.match(head)
    if verb_match is None:
        return "SQL", None
    verb = verb_match.group(1).upper()
    if verb == "WITH":
        # A CTE: the operation is the statement after the WITH clauses, the table is unknown.
        for candidate in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            if re.search(rf"\)\s*{candidate}\b", head, re.I):
                return candidate, None
        return "WITH", None
    pattern = _TABLE_AFTER.get(verb)
    if pattern is None:
        return verb[:32], None
    table_match = pattern.search(head)
    if table_match is None:
        return verb, None
    table = re.sub(r"\s*\.\s*", ".", table_match.group(1)).translate(_QUOTES)
    if verb in ("SELECT", "DELETE") and table.upper() in ("SELECT", "LATERAL"):
        return verb, None  # FROM (SELECT ...): a subquery, no single table
    return verb, table


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 3`` characters and "..." if it is longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_span(span: Span, statement: str) -> None:
    """Name a (sampled) span after ``statement`` and tag its text, operation and table."""
    operation, table = describe_statement(statement)
    span.name = f"{operation} {table}" if table else operation
    tags = span.tags
    tags["db.statement"] = cut(statement, MAX_STATEMENT_LENGTH)
    tags["db.operation"] = operation
    if table:
        tags["db.sql.table"] = table


def parameters_text(parameters: Any) -> str:
    """Bound values as ``db.parameters`` shows them (only when the user asked for them)."""
    try:
        text = repr(parameters)
    except Exception:
        text = f"<{type(parameters).__name__} that cannot be shown>"  # a broken __repr__
    return cut(text, MAX_PARAMETERS_LENGTH)


def first_line(error: BaseException) -> str:
    """The first line of an error's message: PostgreSQL puts offending values on later lines."""
    try:
        message = str(error).strip()
    except Exception:
        return ""  # a broken __str__ must not hide the application's exception
    return message.split("\n", 1)[0].strip()


def record_statement_error(span: Span, error: BaseException, whole_message: bool) -> None:
    """Mark a statement's span failed: ``error``, ``exception.type`` and a note.

    Only the message's first line is kept unless ``whole_message`` (parameters are recorded).
    """
    if whole_message:
        try:
            message = str(error)
        except Exception:
            message = ""
    else:
        message = first_line(error)
        # The request's or task's span it reaches keeps no more of it than this one.
        ExceptionNote.first_line_only(error)
    type_name = type(error).__qualname__
    span.error = True
    if span.sampled:
        span.tags["error"] = message or type_name
        span.tags["exception.type"] = type_name
        span.annotate(f"{type_name}: {message}" if message else type_name)


def redact_database_error(span: Span, error: BaseException) -> None:
    """Cut a database error already recorded on ``span`` (a request's span the error reached)
    to its message's first line, as :func:`record_statement_error` does: the other lines may
    hold the statement's values."""
    if not span.sampled:
        return
    type_name = type(error).__qualname__
    if span.tags.get("exception.type") != type_name:
        return
    first = first_line(error)
    span.tags["error"] = first or type_name
    notes = span.notes_raw
    for index in range(len(notes) - 1, -1, -1):
        at, note, duration = notes[index]
        if isinstance(note, ExceptionNote) and note.type_name == type_name:
            cut_note = ExceptionNote(exception_text(type_name, first))
            cut_note.type_name = type_name
            cut_note.module = note.module
            cut_note.message = first
            cut_note.frames = note.frames
            cut_note.omitted = note.omitted
            notes[index] = (at, cut_note, duration)
            return


class StatementInFlight:
    """A statement a database layer is recording, until :func:`leave_statement`."""

    __slots__ = ("open", "previous", "text")

    def __init__(self, text: str | None, previous: StatementInFlight | None) -> None:
        self.text = text
        self.previous = previous
        self.open = True


_in_flight: ContextVar[StatementInFlight | None] = ContextVar(
    "tomograph_sql_statement_in_flight", default=None
)


def enter_statement(text: str | None) -> StatementInFlight:
    """Mark ``text`` as recorded by the calling layer (``None``: whatever statement runs next).

    >>> marker = enter_statement('SELECT 1')
    >>> traced_above('SELECT 1'), traced_above('SELECT 2')
    (True, False)
    >>> leave_statement(marker)
    >>> traced_above('SELECT 1')
    False
    """
    previous = _in_flight.get()
    while previous is not None and not previous.open:
        previous = previous.previous  # ended in another context: nothing to come back to
    marker = StatementInFlight(text, previous)
    _in_flight.set(marker)
    return marker


def leave_statement(marker: StatementInFlight) -> None:
    """End what :func:`enter_statement` began (from any context; never raises)."""
    marker.open = False
    if _in_flight.get() is marker:
        _in_flight.set(marker.previous)


def traced_above(text: str | None) -> bool:
    """True if a layer above already records the statement ``text`` now being run.

    A marker left open by a layer that never saw its statement end only hides that same text.
    """
    marker = _in_flight.get()
    while marker is not None and not marker.open:
        marker = marker.previous
    if marker is None:
        return False
    return marker.text is None or marker.text is text or marker.text == text
