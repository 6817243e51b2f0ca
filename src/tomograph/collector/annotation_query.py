"""Zipkin's ``annotationQuery`` syntax: ``error and http.method=GET``.

Terms are separated by `` and ``; ``key=value`` constrains a tag; a bare word matches an
annotation value or a tag key. Keys and values are trimmed; a later ``key=value`` replaces an
earlier one, a bare word never overrides a ``key=value`` for the same key (as Zipkin parses it).
"""

from __future__ import annotations

__all__ = ["format_annotation_query", "parse_annotation_query"]

_MAX_TERMS = 100


def parse_annotation_query(text: str | None) -> dict[str, str]:
    """Parse ``text`` into ``{key: value}`` (``""`` for bare words); ValueError for an empty key.

    >>> parse_annotation_query("error and http.method=GET")
    {'error': '', 'http.method': 'GET'}
    """
    result: dict[str, str] = {}
    if not text:
        return result
    terms = text.split(" and ")
    if len(terms) > _MAX_TERMS:
        raise ValueError(f"annotationQuery has more than {_MAX_TERMS} terms")
    for term in terms:
        key, equals, value = term.partition("=")
        key = key.strip()
        if not key:
            if not equals and not value.strip():
                continue  # "a and  and b": an empty term constrains nothing
            raise ValueError(f"annotationQuery term {term.strip()!r} has no key")
        if equals:
            result[key] = value.strip()
        elif key not in result:
            result[key] = ""
    return result


def format_annotation_query(query: dict[str, str]) -> str:
    """The inverse of :func:`parse_annotation_query`.

    >>> format_annotation_query({"error": "", "http.method": "GET"})
    'error and http.method=GET'
    """
    return " and ".join(f"{key}={value}" if value else key for key, value in query.items())
