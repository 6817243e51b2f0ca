"""The span dict every decoder returns, and the one normalization that makes it.

Whatever the wire format (Zipkin v2 JSON or proto3, OTLP), a decoder checks the fields of its
format and hands them to :func:`span_dict`, which applies Zipkin's ingest rules once: lower-hex
ids, a 128-bit trace id whose high half is zero written as 16 characters, span and service
names lower-cased, annotations sorted by time with exact duplicates dropped, zero times, empty
endpoints and collections and false flags left out, and the fields in Zipkin's own order. The
collector stores these dicts as they are.

>>> span_dict("0000000000000000000000000000000A", "00000000000000Bc", name="GET /")
{'traceId': '000000000000000a', 'id': '00000000000000bc', 'name': 'get /'}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "SpanDict",
    "endpoint_dict",
    "normalize_annotations",
    "normalize_trace_id",
    "span_dict",
]

#: A normalized Zipkin v2 span (Zipkin v2 JSON field names), as :func:`span_dict` makes it.
SpanDict = dict[str, Any]

_ZERO_HIGH = "0" * 16


def normalize_trace_id(trace_id: str) -> str:
    """``trace_id`` in lower case, 16 characters when its high 64 bits are zero.

    >>> normalize_trace_id("0000000000000000ABCDEF0123456789")
    'abcdef0123456789'
    """
    trace_id = trace_id.lower()
    if len(trace_id) == 32 and trace_id.startswith(_ZERO_HIGH):
        return trace_id[16:]
    return trace_id


def normalize_annotations(notes: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    """(epoch µs, value) pairs as Zipkin annotations: sorted by time, exact duplicates dropped
    (Zipkin's annotations are a set).

    >>> normalize_annotations([(2, "b"), (1, "a"), (2, "b")])
    [{'timestamp': 1, 'value': 'a'}, {'timestamp': 2, 'value': 'b'}]
    """
    return [{"timestamp": stamp, "value": value} for stamp, value in sorted(set(notes))]


def endpoint_dict(fields: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A checked endpoint's fields as :func:`span_dict` keeps them: the service name lower-cased,
    empty fields left out; None when nothing is left.

    >>> endpoint_dict({"serviceName": "Web", "port": 0})
    {'serviceName': 'web'}
    """
    if not fields:
        return None
    endpoint: dict[str, Any] = {}
    service = fields.get("serviceName")
    if service:
        endpoint["serviceName"] = service.lower()
    for key in ("ipv4", "ipv6", "port"):
        value = fields.get(key)
        if value:
            endpoint[key] = value
    return endpoint or None


def span_dict(
    trace_id: str,
    span_id: str,
    *,
    parent_id: str | None = None,
    kind: str | None = None,
    name: str = "",
    timestamp: int = 0,
    duration: int = 0,
    debug: bool = False,
    shared: bool = False,
    local_endpoint: Mapping[str, Any] | None = None,
    remote_endpoint: Mapping[str, Any] | None = None,
    annotations: Iterable[tuple[int, str]] = (),
    tags: dict[str, str] | None = None,
) -> SpanDict:
    """A decoded span's fields as the normalized dict (see the module doc).

    The decoder has checked the fields already: ids are hex of the right length and not all
    zeros, times are non-negative integers, endpoint addresses are canonical text. An all-zero
    ``parent_id`` means a root span, as in Zipkin. Keys appear only when set.

    >>> span_dict("a" * 16, "b" * 16, parent_id="0" * 16, tags={"http.method": "GET"})
    {'traceId': 'aaaaaaaaaaaaaaaa', 'id': 'bbbbbbbbbbbbbbbb', 'tags': {'http.method': 'GET'}}
    """
    span: SpanDict = {"traceId": normalize_trace_id(trace_id)}
    if parent_id and parent_id.strip("0"):
        span["parentId"] = parent_id.lower()
    span["id"] = span_id.lower()
    if kind:
        span["kind"] = kind
    if name:
        span["name"] = name.lower()
    if timestamp:
        span["timestamp"] = timestamp
    if duration:
        span["duration"] = duration
    if debug:
        span["debug"] = True
    if shared:
        span["shared"] = True
    local = endpoint_dict(local_endpoint)
    if local:
        span["localEndpoint"] = local
    remote = endpoint_dict(remote_endpoint)
    if remote:
        span["remoteEndpoint"] = remote
    notes = normalize_annotations(annotations)
    if notes:
        span["annotations"] = notes
    if tags:
        span["tags"] = tags
    return span
