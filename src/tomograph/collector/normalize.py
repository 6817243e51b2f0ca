"""Zipkin's ingest rules applied to a decoded span, and the trace-id arithmetic of lookups.

Zipkin lower-cases span and service names on ingest, writes a 128-bit trace id whose high half
is zero as 16 characters, and can match trace ids on their low 64 bits (for traces that mix
64- and 128-bit ids while a fleet migrates).
"""

from __future__ import annotations

import re
from typing import Any

from tomograph.collector.storage import SpanDict

__all__ = [
    "ID_PATTERN",
    "TRACE_ID_PATTERN",
    "is_error",
    "local_service",
    "normalize_span",
    "normalize_trace_id",
    "remote_service",
    "trace_id_low",
]

TRACE_ID_PATTERN = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}")
ID_PATTERN = re.compile(r"[0-9a-f]{16}")

# Zipkin writes span fields in this order; keeping it makes stored JSON read like Zipkin's.
_FIELD_ORDER = (
    "traceId",
    "parentId",
    "id",
    "kind",
    "name",
    "timestamp",
    "duration",
    "debug",
    "shared",
    "localEndpoint",
    "remoteEndpoint",
    "annotations",
    "tags",
)


def normalize_trace_id(trace_id: str) -> str:
    """``trace_id`` in lower case, 16 characters when its high 64 bits are zero.

    >>> normalize_trace_id("0000000000000000ABCDEF0123456789")
    'abcdef0123456789'
    """
    trace_id = trace_id.lower()
    if len(trace_id) == 32 and trace_id.startswith("0000000000000000"):
        return trace_id[16:]
    return trace_id


def trace_id_low(trace_id: str) -> int:
    """The low 64 bits of a hex trace id as a signed 64-bit integer (SQLite's INTEGER).

    >>> trace_id_low("ffffffffffffffff")
    -1
    """
    low = int(trace_id[-16:], 16)
    return low - (1 << 64) if low >= 1 << 63 else low


def _endpoint(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        return None
    endpoint = {k: v for k, v in value.items() if v not in (None, "")}
    service = endpoint.get("serviceName")
    if isinstance(service, str):
        endpoint["serviceName"] = service.lower()
    return endpoint or None


def normalize_span(span: SpanDict) -> SpanDict:
    """A copy of a decoded Zipkin v2 span with Zipkin's ingest rules applied.

    Names are lower-cased, empty endpoints and collections dropped, annotations sorted by time,
    fields put in Zipkin's order.

    >>> normalize_span({"traceId": "A" * 16, "id": "b" * 16, "name": "GET /"})["name"]
    'get /'
    """
    out: dict[str, Any] = dict(span)
    out["traceId"] = normalize_trace_id(str(out["traceId"]))
    name = out.get("name")
    if isinstance(name, str) and name:
        out["name"] = name.lower()
    else:
        out.pop("name", None)
    for key in ("localEndpoint", "remoteEndpoint"):
        endpoint = _endpoint(out.get(key))
        if endpoint is None:
            out.pop(key, None)
        else:
            out[key] = endpoint
    annotations = out.get("annotations")
    if annotations:
        unique = {(a["timestamp"], a["value"]) for a in annotations}
        out["annotations"] = [{"timestamp": t, "value": v} for t, v in sorted(unique)]
    else:
        out.pop("annotations", None)
    if not out.get("tags"):
        out.pop("tags", None)
    for flag in ("debug", "shared"):
        if not out.get(flag):
            out.pop(flag, None)
    for key in ("parentId", "kind", "timestamp", "duration"):
        if out.get(key) in (None, "", 0):
            out.pop(key, None)
    return {key: out[key] for key in _FIELD_ORDER if key in out}


def local_service(span: SpanDict) -> str:
    """The span's local service name, ``""`` when absent."""
    endpoint = span.get("localEndpoint")
    return str(endpoint.get("serviceName", "")) if endpoint else ""


def remote_service(span: SpanDict) -> str:
    """The span's remote service name, ``""`` when absent."""
    endpoint = span.get("remoteEndpoint")
    return str(endpoint.get("serviceName", "")) if endpoint else ""


def is_error(span: SpanDict) -> bool:
    """Zipkin's error convention: the span has an ``error`` tag (any value)."""
    tags = span.get("tags")
    return tags is not None and "error" in tags
