"""The ``Format.BINARY`` encoding of a span context: ids, flags and baggage in a few bytes.

Layout (all integers big-endian)::

    offset  size  field
    0       1     version: 1
    1       1     flags: 0x01 sampled is known, 0x02 sampled, 0x04 debug,
                         0x08 parent id present, 0x10 128-bit trace id
    2       8|16  trace id (16 bytes when flag 0x10 is set)
    .       8     span id
    .       8     parent span id (only when flag 0x08 is set)
    .       2     number of baggage items, then for each item:
    .       2+n   key: length, then UTF-8 bytes
    .       2+n   value: length, then UTF-8 bytes

A sampled 64-bit root context with no baggage takes 20 bytes. Decoding checks every length
against what is left, so a truncated or padded buffer is rejected as a whole
(:class:`opentracing.SpanContextCorruptedException` from the tracer), never half-read. Nothing
is unpickled or evaluated. Baggage is limited like the W3C ``baggage`` header: at most
:data:`MAX_BAGGAGE_ITEMS` items and :data:`MAX_BAGGAGE_BYTES` bytes of keys and values.

>>> from tomograph.model import TraceContext
>>> data = encode(TraceContext(1, 2, sampled=True), {'user': 'alice'})
>>> ctx, baggage = decode(data)
>>> ctx.trace_id, ctx.span_id, ctx.sampled, baggage
(1, 2, True, {'user': 'alice'})
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from tomograph.model import TraceContext

__all__ = [
    "MAX_BAGGAGE_BYTES",
    "MAX_BAGGAGE_ITEMS",
    "VERSION",
    "BinaryFormatError",
    "decode",
    "encode",
]

VERSION = 1
MAX_BAGGAGE_ITEMS = 180
MAX_BAGGAGE_BYTES = 8192

_SAMPLED_KNOWN = 0x01
_SAMPLED = 0x02
_DEBUG = 0x04
_HAS_PARENT = 0x08
_WIDE_TRACE = 0x10
_KNOWN_FLAGS = _SAMPLED_KNOWN | _SAMPLED | _DEBUG | _HAS_PARENT | _WIDE_TRACE

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_MASK64 = (1 << 64) - 1


class BinaryFormatError(ValueError):
    """The bytes are not a span context in this encoding (wrong version, truncated, padded)."""


def encode(context: TraceContext, baggage: Mapping[str, str] | None = None) -> bytes:
    """Encode a trace context and its baggage.

    Baggage beyond :data:`MAX_BAGGAGE_ITEMS` items or :data:`MAX_BAGGAGE_BYTES` bytes is
    dropped from the end, as a ``baggage`` header would drop it.

    >>> encode(TraceContext(1, 2, sampled=True)).hex()
    '0103000000000000000100000000000000020000'
    """
    flags = 0
    if context.sampled is not None:
        flags |= _SAMPLED_KNOWN | (_SAMPLED if context.sampled else 0)
    if context.debug:
        flags |= _DEBUG
    if context.parent_id:
        flags |= _HAS_PARENT
    wide = context.trace_id > _MASK64
    if wide:
        flags |= _WIDE_TRACE
    out = bytearray((VERSION, flags))
    if wide:
        out += _U64.pack((context.trace_id >> 64) & _MASK64)
    out += _U64.pack(context.trace_id & _MASK64)
    out += _U64.pack(context.span_id & _MASK64)
    if context.parent_id:
        out += _U64.pack(context.parent_id & _MASK64)
    items: list[tuple[bytes, bytes]] = []
    used = 0
    for key, value in (baggage or {}).items():
        key_bytes, value_bytes = str(key).encode(), str(value).encode()
        size = len(key_bytes) + len(value_bytes)
        if len(items) >= MAX_BAGGAGE_ITEMS or used + size > MAX_BAGGAGE_BYTES:
            break
        used += size
        items.append((key_bytes, value_bytes))
    out += _U16.pack(len(items))
    for key_bytes, value_bytes in items:
        out += _U16.pack(len(key_bytes)) + key_bytes + _U16.pack(len(value_bytes)) + value_bytes
    return bytes(out)


def decode(data: bytes | bytearray | memoryview) -> tuple[TraceContext, dict[str, str]]:
    """Decode what :func:`encode` wrote; :class:`BinaryFormatError` for anything else.

    >>> decode(bytes.fromhex('0103000000000000000100000000000000020000'))[0].span_id
    2
    """
    view = bytes(data)
    if len(view) < 2:
        raise BinaryFormatError("too short for a span context")
    version, flags = view[0], view[1]
    if version != VERSION:
        raise BinaryFormatError(f"unknown version {version}")
    if flags & ~_KNOWN_FLAGS:
        raise BinaryFormatError(f"unknown flags {flags:#04x}")
    position = 2

    def take(size: int) -> bytes:
        nonlocal position
        end = position + size
        if end > len(view):
            raise BinaryFormatError("truncated span context")
        chunk = view[position:end]
        position = end
        return chunk

    trace_id = 0
    if flags & _WIDE_TRACE:
        trace_id = _U64.unpack(take(8))[0] << 64
    trace_id |= _U64.unpack(take(8))[0]
    span_id = _U64.unpack(take(8))[0]
    parent_id = _U64.unpack(take(8))[0] if flags & _HAS_PARENT else None
    if not trace_id or not span_id or parent_id == 0:
        raise BinaryFormatError("ids must not be zero")
    (count,) = _U16.unpack(take(2))
    if count > MAX_BAGGAGE_ITEMS:
        raise BinaryFormatError(f"{count} baggage items, more than {MAX_BAGGAGE_ITEMS}")
    baggage: dict[str, str] = {}
    used = 0
    for _ in range(count):
        key_bytes = take(_U16.unpack(take(2))[0])
        value_bytes = take(_U16.unpack(take(2))[0])
        used += len(key_bytes) + len(value_bytes)
        if used > MAX_BAGGAGE_BYTES:
            raise BinaryFormatError(f"baggage over {MAX_BAGGAGE_BYTES} bytes")
        try:
            baggage[key_bytes.decode()] = value_bytes.decode()
        except UnicodeDecodeError:
            raise BinaryFormatError("baggage is not UTF-8") from None
    if position != len(view):
        raise BinaryFormatError(f"{len(view) - position} bytes after the span context")
    sampled = bool(flags & _SAMPLED) if flags & _SAMPLED_KNOWN else None
    context = TraceContext(trace_id, span_id, parent_id, sampled, bool(flags & _DEBUG))
    return context, baggage
