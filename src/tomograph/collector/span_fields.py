"""What the store reads from a normalized span, and the trace-id arithmetic of lookups.

Spans arrive normalized by their decoder (see :mod:`tomograph.encoding.normalize`). Zipkin can
match trace ids on their low 64 bits, for traces that mix 64- and 128-bit ids while a fleet
migrates.
"""

from __future__ import annotations

from tomograph.encoding.normalize import SpanDict

__all__ = ["is_error", "local_service", "remote_service", "trace_id_low"]


def trace_id_low(trace_id: str) -> int:
    """The low 64 bits of a hex trace id as a signed 64-bit integer (SQLite's INTEGER).

    >>> trace_id_low("ffffffffffffffff")
    -1
    """
    low = int(trace_id[-16:], 16)
    return low - (1 << 64) if low >= 1 << 63 else low


def trace_low_hex(low: int) -> str:
    """The 16 hex digits of a trace id's low 64 bits from :func:`trace_id_low`'s integer.

    Enough to open the trace: stores look a trace up by its low 64 bits.

    >>> trace_low_hex(-1), trace_low_hex(10)
    ('ffffffffffffffff', '000000000000000a')
    """
    return format(low & 0xFFFF_FFFF_FFFF_FFFF, "016x")


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
