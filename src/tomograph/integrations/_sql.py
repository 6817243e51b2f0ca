"""Low-cardinality names for SQL statements: ``SELECT users``, ``INSERT orders``, ``COMMIT``.

A statement's text is looked at once: the answer is cached by text (SQLAlchemy reuses the same
compiled string for the same statement), in a bounded cache.
"""

from __future__ import annotations

import re

from tomograph._cache import BoundedCache

__all__ = ["describe_statement"]

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
