"""Trace and span identifiers: generation and lower-case hex formatting.

Ids are plain ``int`` on the hot path; hex strings are produced only when a span is encoded or a
context is propagated.
"""

from __future__ import annotations

import random
import re

__all__ = [
    "format_span_id",
    "format_trace_id",
    "match_lower_hex",
    "new_span_id",
    "new_trace_id",
    "parse_hex_id",
]

# random.getrandbits is a C call on a per-process Mersenne Twister: fast, and reseeded in a
# forked child by CPython's own at-fork hook, so two workers never draw the same ids.
_getrandbits = random.getrandbits

_MAX_64 = (1 << 64) - 1
_MAX_128 = (1 << 128) - 1


def new_span_id() -> int:
    """A random, non-zero 64-bit span id.

    >>> 0 < new_span_id() < 2**64
    True
    """
    span_id = _getrandbits(64)
    while not span_id:  # zero is "no id" in every wire format
        span_id = _getrandbits(64)
    return span_id


def new_trace_id(bits: int = 128) -> int:
    """A random, non-zero trace id of ``bits`` (64 or 128) bits.

    >>> new_trace_id(64) < 2**64
    True
    """
    trace_id = _getrandbits(bits)
    while not trace_id:
        trace_id = _getrandbits(bits)
    return trace_id


def format_trace_id(trace_id: int, width: int | None = None) -> str:
    """Lower-case hex of a trace id: 16 characters if it fits in 64 bits, else 32.

    ``width`` forces a width (W3C always writes 32).

    >>> format_trace_id(1)
    '0000000000000001'
    >>> format_trace_id(1, 32)
    '00000000000000000000000000000001'
    """
    if width is None:
        width = 16 if trace_id <= _MAX_64 else 32
    return f"{trace_id:0{width}x}"


def format_span_id(span_id: int) -> str:
    """Lower-case, 16-character hex of a 64-bit span id.

    >>> format_span_id(255)
    '00000000000000ff'
    """
    return f"{span_id:016x}"


#: A match (truthy) if the whole text is lower-case hex digits, else None: a compiled pattern
#: checks a 32-character id in a fraction of the instructions ``frozenset.issuperset`` takes.
match_lower_hex = re.compile("[0-9a-f]+").fullmatch


def parse_hex_id(text: str, widths: tuple[int, ...] = (16, 32)) -> int | None:
    """Parse a lower-case hex id of one of ``widths`` characters; ``None`` if invalid or zero.

    Upper case, signs, whitespace and underscores are rejected (``int(x, 16)`` alone accepts them).

    >>> parse_hex_id('00000000000000ff')
    255
    >>> parse_hex_id('00000000000000FF') is None
    True
    """
    if len(text) not in widths or match_lower_hex(text) is None:
        return None
    value = int(text, 16)
    return value or None
