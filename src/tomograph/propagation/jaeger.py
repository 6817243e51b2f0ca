"""Jaeger's ``uber-trace-id`` header.

``uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}``, e.g.
``uber-trace-id: 463ac35c9f6413ad48485a3953bb6124:a2fb4a1d1a96d312:0:1``.

Reading follows Jaeger's clients: ids are hex of any length up to 32 (trace) or 16 (span,
parent) characters, shorter ones meaning leading zeros, either case; the trace and span ids must
not be zero, a parent of ``0`` means none; flags are a hex byte (bit ``1`` sampled, bit ``2``
debug, others ignored). The percent-encoded variant some clients send
(``463ac35c9f6413ad%3Aa2fb4a1d1a96d312%3A0%3A1``) is decoded first. Anything else is malformed:
:func:`extract` returns None.

Writing uses lower-case hex ids padded to 16 or 32 characters and flags ``0``, ``1`` or ``3``
(debug). Jaeger has no "deferred" decision: a context without one is sent as not sampled. The
``uberctx-*`` baggage headers are not read or written; use W3C baggage.

>>> from tomograph.model import TraceContext
>>> format_uber_trace_id(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, sampled=True))
'463ac35c9f6413ad:a2fb4a1d1a96d312:0:1'
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from tomograph.model import TraceContext
from tomograph.propagation._context import ContextLike, new_context
from tomograph.propagation.carriers import (
    SingleHeaderExtractor,
    log,
    set_header,
)

__all__ = ["HEADER", "extract", "format_uber_trace_id", "inject", "parse_uber_trace_id"]

HEADER = "uber-trace-id"
#: The longest value read (percent-encoded: 32 + 16 + 16 + 2 + 3 * 3).
MAX_LENGTH = 128

_HEX = frozenset("0123456789abcdefABCDEF")


def _hex(text: str, max_width: int) -> int | None:
    if not text or len(text) > max_width or not _HEX.issuperset(text):
        return None
    return int(text, 16)


def parse_uber_trace_id(value: str) -> TraceContext | None:
    """The context in an ``uber-trace-id`` value, or None if it is malformed.

    >>> parse_uber_trace_id('abc:def:0:3').debug
    True
    >>> parse_uber_trace_id('abc%3Adef%3A0%3A1').span_id == 0xDEF
    True
    """
    value = value.strip(" \t")
    if "%" in value:
        value = unquote(value)
    fields = value.split(":")
    if len(fields) != 4:
        log.debug("ignoring malformed uber-trace-id %r", value)
        return None
    trace_id = _hex(fields[0], 32)
    span_id = _hex(fields[1], 16)
    parent_id = _hex(fields[2], 16)
    flags = _hex(fields[3], 2)
    if not trace_id or not span_id or parent_id is None or flags is None:
        log.debug("ignoring uber-trace-id with malformed fields: %r", value)
        return None
    return new_context(trace_id, span_id, parent_id or None, bool(flags & 1), bool(flags & 2))


def format_uber_trace_id(context: ContextLike) -> str:
    """The ``uber-trace-id`` value for ``context``.

    >>> format_uber_trace_id(TraceContext(1, 2, 3, debug=True))
    '0000000000000001:0000000000000002:0000000000000003:3'
    """
    trace_id = context.trace_id
    trace = f"{trace_id:016x}" if trace_id <= 0xFFFFFFFFFFFFFFFF else f"{trace_id:032x}"
    parent = f"{context.parent_id:016x}" if context.parent_id else "0"
    flags = "3" if context.debug else ("1" if context.sampled else "0")
    return f"{trace}:{context.span_id:016x}:{parent}:{flags}"


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``context`` as an ``uber-trace-id`` header on ``carrier``."""
    set_header(carrier, HEADER, format_uber_trace_id(context))


_EXTRACTOR = SingleHeaderExtractor(HEADER, MAX_LENGTH, parse_uber_trace_id)


def extract(carrier: Any) -> TraceContext | None:
    """The context in ``carrier``'s ``uber-trace-id`` header, or None."""
    context: TraceContext | None = _EXTRACTOR.extract(carrier)
    return context


#: :func:`extract` for a plain dict or WSGI environ, or :data:`~.carriers.SLOW` (the composite
#: propagator's fast path).
extract_dict = _EXTRACTOR.extract_dict
