"""X-Trace-Info: tomograph's own header, a small versioned text format.

::

    X-Trace-Info: v1;{trace-id};{span-id};{flags}[;{parent-span-id}]
    X-Trace-Info: v1;4bf92f3577b34da6a3ce929d0e0e4736;00f067aa0ba902b7;1
    X-Trace-Info: v1;463ac35c9f6413ad;a2fb4a1d1a96d312;d;0020000000000001

- ``v1``: the version, ``v`` and a decimal number of one to three digits, no leading zero.
- trace-id: 16 or 32 lower-case hex characters; span-id and parent-span-id: 16. All-zero ids are
  invalid.
- flags: ``1`` sampled, ``0`` not sampled, ``d`` debug (implies sampled), or empty when the
  sender left the decision to the receiver.
- parent-span-id: the parent of span-id, if it has one (Zipkin servers that share the caller's
  span report it).

Version 1 has exactly four or five fields and at most 256 characters. A later version keeps these
five fields (the fifth may then be empty) and adds only after them, so a version 1 reader reads
what it knows and ignores the rest. Anything else is malformed: :func:`extract` returns None,
logs why on the ``tomograph.propagation`` logger at debug level, and a new trace starts.

The header is plain text and parsed as such: it is never unpickled, evaluated or decoded into
objects. (The original tomograph sent a base64-encoded pickle here, which let any client run code
on the server; such values are simply malformed now.)

>>> from tomograph.model import TraceContext
>>> format_trace_info(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, sampled=True))
'v1;463ac35c9f6413ad;a2fb4a1d1a96d312;1'
"""

from __future__ import annotations

from typing import Any

from tomograph.ids import parse_hex_id
from tomograph.model import TraceContext
from tomograph.propagation._context import ContextLike, new_context
from tomograph.propagation.carriers import (
    SingleHeaderExtractor,
    log,
    set_header,
)

__all__ = ["HEADER", "extract", "format_trace_info", "inject", "parse_trace_info"]

HEADER = "x-trace-info"
VERSION = 1
#: The longest value read.
MAX_LENGTH = 256

_FLAGS: dict[str, tuple[bool | None, bool]] = {
    "1": (True, False),
    "0": (False, False),
    "d": (True, True),
    "": (None, False),
}
_DIGITS = frozenset("0123456789")


def _version(text: str) -> int | None:
    if len(text) < 2 or len(text) > 4 or text[0] != "v" or not _DIGITS.issuperset(text[1:]):
        return None
    if text[1] == "0":
        return None
    return int(text[1:])


def parse_trace_info(value: str) -> TraceContext | None:
    """The context in an ``X-Trace-Info`` value, or None if it is malformed.

    >>> parse_trace_info('v1;463ac35c9f6413ad;a2fb4a1d1a96d312;d').debug
    True
    >>> parse_trace_info('gAN9cQAu') is None  # e.g. an old pickled value
    True
    """
    if len(value) > MAX_LENGTH:
        log.debug("ignoring X-Trace-Info of %d characters", len(value))
        return None
    value = value.strip(" \t")
    fields = value.split(";")
    version = _version(fields[0])
    count = len(fields)
    if version is None or count < 4 or (version == 1 and count > 5):
        log.debug("ignoring malformed X-Trace-Info %r", value)
        return None
    trace_id = parse_hex_id(fields[1], (16, 32))
    span_id = parse_hex_id(fields[2], (16,))
    flags = _FLAGS.get(fields[3])
    parent_id = None
    parent_ok = True
    if count > 4:
        parent = fields[4]
        if parent or version == 1:
            parent_id = parse_hex_id(parent, (16,))
            parent_ok = parent_id is not None
    if trace_id is None or span_id is None or flags is None or not parent_ok:
        log.debug("ignoring X-Trace-Info with malformed fields: %r", value)
        return None
    return new_context(trace_id, span_id, parent_id, flags[0], flags[1])


def format_trace_info(context: ContextLike) -> str:
    """The ``X-Trace-Info`` value (version 1) for ``context``.

    >>> format_trace_info(TraceContext(1, 2, parent_id=3, sampled=None))
    'v1;0000000000000001;0000000000000002;;0000000000000003'
    """
    trace_id = context.trace_id
    # Hex by %-formatting: a third fewer instructions than an f-string's format spec.
    trace = "%016x" % trace_id if trace_id <= 0xFFFFFFFFFFFFFFFF else "%032x" % trace_id
    if context.debug:
        flags = "d"
    elif context.sampled is None:
        flags = ""
    else:
        flags = "1" if context.sampled else "0"
    value = "v1;%s;%016x;%s" % (trace, context.span_id, flags)
    if context.parent_id:
        return "%s;%016x" % (value, context.parent_id)
    return value


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``context`` as an ``X-Trace-Info`` header on ``carrier``.

    >>> headers = {}
    >>> inject(TraceContext(1, 2, sampled=False), headers)
    >>> headers
    {'x-trace-info': 'v1;0000000000000001;0000000000000002;0'}
    """
    set_header(carrier, HEADER, format_trace_info(context))


_EXTRACTOR = SingleHeaderExtractor(HEADER, MAX_LENGTH, parse_trace_info)


def extract(carrier: Any) -> TraceContext | None:
    """The context in ``carrier``'s ``X-Trace-Info`` header, or None."""
    context: TraceContext | None = _EXTRACTOR.extract(carrier)
    return context


#: :func:`extract` for a plain dict or WSGI environ, or :data:`~.carriers.SLOW` (the composite
#: propagator's fast path).
extract_dict = _EXTRACTOR.extract_dict
