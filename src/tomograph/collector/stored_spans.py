"""A span as a store keeps it: compact UTF-8 JSON, and JSON arrays built from stored texts.

Shared by the span stores, so that every engine returns byte-for-byte the same answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tomograph.encoding import fast_json
from tomograph.encoding.normalize import SpanDict

__all__ = ["json_array", "stored_json", "stored_json_each", "traces_json"]


def stored_json(span: SpanDict) -> tuple[SpanDict, bytes]:
    """The span as stored (its strings made encodable) and its compact UTF-8 JSON.

    >>> stored_json({"traceId": "a" * 16, "id": "b" * 16, "name": "\\ud800"})[1]
    b'{"traceId":"aaaaaaaaaaaaaaaa","id":"bbbbbbbbbbbbbbbb","name":"?"}'
    """
    try:
        return span, fast_json.dumps(span)
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") sent as JSON escape
        span = _scrub(span)
        return span, fast_json.dumps(span)


def stored_json_each(spans: Sequence[SpanDict]) -> tuple[Sequence[SpanDict], list[bytes]]:
    """:func:`stored_json` of each span, as two lists: the spans as stored, and their JSON.

    >>> stored_json_each([{"name": "\\ud800"}, {"name": "a"}])
    ([{'name': '?'}, {'name': 'a'}], [b'{"name":"?"}', b'{"name":"a"}'])
    """
    try:
        return spans, fast_json.dumps_each(spans)
    except UnicodeEncodeError:  # a lone surrogate in one of them: each is made encodable
        pairs = [stored_json(span) for span in spans]
        return [span for span, _ in pairs], [body for _, body in pairs]


def _scrub(value: Any) -> Any:
    """``value`` with every string made encodable as UTF-8 (lone surrogates become "?")."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def json_array(items: list[bytes]) -> bytes:
    """JSON texts as one JSON array, built with a single copy (answers can be tens of MB).

    >>> json_array([b"1", b'"a"'])
    b'[1,"a"]'
    """
    if not items:
        return b"[]"
    parts = [b","] * (2 * len(items) + 1)
    parts[0], parts[-1] = b"[", b"]"
    parts[1::2] = items
    return b"".join(parts)


def traces_json(
    trace_ids: Iterable[str], bodies_of: Callable[[str, int], list[bytes]], budget: int
) -> bytes:
    """The traces found among ``trace_ids`` as a JSON list of lists, in at most ``budget`` bytes.

    ``bodies_of(trace_id, budget)`` gives a trace's stored spans within the budget left (an
    empty list for an unknown trace); a first trace larger than ``budget`` comes cut that way.

    >>> traces_json(["a", "b"], lambda trace_id, left: [b"1"] if trace_id == "a" else [], 100)
    b'[[1]]'
    """
    found: list[bytes] = []
    for trace_id in trace_ids:
        bodies = bodies_of(trace_id, budget)
        if not bodies:
            continue
        trace = json_array(bodies)
        if found and len(trace) + 1 > budget:
            break
        found.append(trace)
        budget -= len(trace) + 1
        if budget <= 0:
            break
    return json_array(found)
