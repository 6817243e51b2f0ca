"""SQL statements on spans, the same for every database integration (SQLAlchemy, Django, ...).

Low-cardinality names (``SELECT users``, ``INSERT orders``, ``COMMIT``), the ``db.*`` tags, and
the privacy rules: the statement text with its placeholders, never the values unless the user
opted in, and error messages cut to their first line (PostgreSQL puts the offending values on
the ``DETAIL`` line).

A statement's text is looked at once: the answer is cached by text (SQLAlchemy and Django reuse
the same string for the same statement), in a bounded cache.
"""

from __future__ import annotations

import re
from typing import Any

from tomograph._cache import BoundedCache
from tomograph.model import ExceptionNote, exception_text
from tomograph.span import Span

__all__ = [
    "MAX_PARAMETERS_LENGTH",
    "MAX_STATEMENT_LENGTH",
    "cut",
    "describe_statement",
    "error_message",
    "parameters_text",
    "record_statement_error",
    "redact_database_error",
    "tag_statement",
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
    """``text``, or its first ``limit`` characters ending with ``...`` if it is longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tag_statement(span: Span, statement: str) -> None:
    """Name a recording span after ``statement`` and tag ``db.statement``, ``db.operation``
    and ``db.sql.table`` (the text as given: placeholders, never values)."""
    operation, table = describe_statement(statement)
    span.name = f"{operation} {table}" if table else operation
    tags = span.tags
    tags["db.statement"] = cut(statement, MAX_STATEMENT_LENGTH)
    tags["db.operation"] = operation
    if table:
        tags["db.sql.table"] = table


def parameters_text(parameters: Any) -> str:
    """The ``db.parameters`` value (only ever recorded on the user's opt-in); never raises."""
    try:
        text = repr(parameters)
    except Exception:
        text = f"<{type(parameters).__name__} that cannot be shown>"  # a broken __repr__
    return cut(text, MAX_PARAMETERS_LENGTH)


def error_message(error: BaseException, whole: bool) -> str:
    """The driver's message, or only its first line unless ``whole`` (parameters opted in)."""
    message = str(error).strip()
    return message if whole else message.split("\n", 1)[0].strip()


def record_statement_error(span: Span, error: BaseException, whole_message: bool) -> None:
    """Mark a statement's span failed: ``error``, ``exception.type`` and a note."""
    span.error = True
    if not span.sampled:
        return
    message = error_message(error, whole_message)
    type_name = type(error).__qualname__
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
    first = error_message(error, whole=False)
    span.tags["error"] = first or type_name
    notes = span.notes_raw
    for index in range(len(notes) - 1, -1, -1):
        at, note, duration = notes[index]
        if isinstance(note, ExceptionNote) and note.type_name == type_name:
            cut_note = ExceptionNote(exception_text(type_name, first))
            cut_note.type_name = type_name
            cut_note.message = first
            cut_note.frames = note.frames
            cut_note.omitted = note.omitted
            notes[index] = (at, cut_note, duration)
            return
