"""Jaeger's ``uber-trace-id`` header, and its baggage headers ``uberctx-*``.

``uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}``, e.g.
``uber-trace-id: 463ac35c9f6413ad48485a3953bb6124:a2fb4a1d1a96d312:0:1``.

Reading follows Jaeger's clients: ids are hex of any length up to 32 (trace) or 16 (span,
parent) characters, shorter ones meaning leading zeros, either case; the trace and span ids must
not be zero, a parent of ``0`` means none; flags are a hex byte (bit ``1`` sampled, bit ``2``
debug, others ignored). The percent-encoded variant some clients send
(``463ac35c9f6413ad%3Aa2fb4a1d1a96d312%3A0%3A1``) is decoded first. Anything else is malformed:
:func:`extract` returns None.

Writing uses lower-case hex ids padded to 16 or 32 characters and flags ``0``, ``1`` or ``3``
(debug). Jaeger has no "deferred" decision: a context without one is sent as not sampled.

Baggage: one header per entry, ``uberctx-{key}: {value}``, the value percent-encoded. It is the
same baggage as W3C's (``TraceContext.extra['baggage']``), so it crosses between the formats.
Writing encodes every byte of the UTF-8 value but letters, digits and ``-._~`` (a space is
``%20``, a ``+`` is ``%2B``): what every Jaeger client decodes right, whether it decodes ``+``
as a space (Go, Java) or not (Python, Node). Header names are lower case, so keys arrive lower
case, as Jaeger's own clients read them. Properties of W3C baggage have no Jaeger form and are
not sent. Reading decodes percent escapes (invalid UTF-8 becomes U+FFFD) and ``+`` as a space,
as Jaeger's Go and Java clients write it; ``uberctx-*`` headers are read when ``uber-trace-id``
is present (Jaeger's clients send them together; OpenTelemetry's Jaeger propagator reads them
the same way), so other requests cost no scan of their header names. Jaeger's ad-hoc
``jaeger-baggage: k1=v1, k2=v2`` header is read too. The limits of W3C baggage apply: at most
64 entries and 8192 bytes, whole entries dropped past them; at most 256 ``uberctx-*`` headers
are looked at.

>>> from tomograph.model import TraceContext
>>> format_uber_trace_id(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, sampled=True))
'463ac35c9f6413ad:a2fb4a1d1a96d312:0:1'
>>> headers = {}
>>> inject(TraceContext(1, 2, sampled=True, extra={'baggage': (BaggageEntry('User', 'Ann Lee'),)}),
...        headers)
>>> headers['uberctx-user']
'Ann%20Lee'
"""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterable
from itertools import islice
from typing import Any
from urllib.parse import quote, unquote

from tomograph._cache import BoundedCache
from tomograph.model import TraceContext
from tomograph.propagation._context import ContextLike, new_context
from tomograph.propagation.baggage import (
    MAX_BYTES,
    MAX_MEMBERS,
    MAX_READ_LENGTH,
    BaggageEntry,
    entries_of,
    is_sendable,
    is_valid_key,
    merge_baggage,
    percent_decode,
    with_baggage,
)
from tomograph.propagation.carriers import (
    SingleHeaderExtractor,
    drop_prefixed,
    log,
    reader_for,
    set_header,
)
from tomograph.text import utf8

__all__ = [
    "BAGGAGE_HEADER",
    "BAGGAGE_PREFIX",
    "HEADER",
    "extract",
    "extract_baggage",
    "extract_ids",
    "format_baggage_headers",
    "format_uber_trace_id",
    "inject",
    "parse_baggage_header",
    "parse_baggage_headers",
    "parse_uber_trace_id",
]

HEADER = "uber-trace-id"
#: The longest value read (percent-encoded: 32 + 16 + 16 + 2 + 3 * 3).
MAX_LENGTH = 128
#: Prefix of the baggage headers: ``uberctx-{key}``.
BAGGAGE_PREFIX = "uberctx-"
#: Jaeger's ad-hoc baggage header, ``jaeger-baggage: k1=v1, k2=v2`` (read, never written).
BAGGAGE_HEADER = "jaeger-baggage"
#: The longest baggage header value read: 8192 bytes, every one percent-encoded.
MAX_BAGGAGE_VALUE_LENGTH = 3 * MAX_BYTES
#: Most ``uberctx-*`` headers looked at, valid or not: four times the entries kept.
MAX_BAGGAGE_HEADERS = 4 * MAX_MEMBERS

# Hex digits of either case; a compiled pattern takes a fraction of frozenset.issuperset's time.
_HEX = re.compile("[0-9a-fA-F]+").fullmatch


def _hex(text: str, max_width: int) -> int | None:
    if len(text) > max_width or _HEX(text) is None:
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
    # Hex by %-formatting: a third fewer instructions than an f-string's format spec.
    trace = "%016x" % trace_id if trace_id <= 0xFFFFFFFFFFFFFFFF else "%032x" % trace_id
    parent = "%016x" % context.parent_id if context.parent_id else "0"
    flags = "3" if context.debug else ("1" if context.sampled else "0")
    return "%s:%016x:%s:%s" % (trace, context.span_id, parent, flags)


# A NamedTuple made without its Python-level __new__: about half the cost per entry.
_entry = tuple.__new__
# Percent-encoding of ASCII by str.translate: what quote(value, safe="") gives, faster.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_QUOTE_ASCII = {code: f"%{code:02X}" for code in range(128) if chr(code) not in _UNRESERVED}


def _encode(value: str) -> str:
    if value.isascii():
        return value.translate(_QUOTE_ASCII)
    return quote(utf8(value), safe="")


def _decode(value: str) -> str:
    """``unquote_plus(value.strip(), errors='replace')``."""
    value = value.strip(" \t")
    if "+" in value:
        value = value.replace("+", " ")
    return percent_decode(value) if "%" in value else value


def format_baggage_headers(entries: Iterable[BaggageEntry]) -> list[tuple[str, str]]:
    """``(header name, value)`` of each baggage entry, within 64 entries and 8192 bytes.

    Keys that are not HTTP tokens, or repeat another key but for case, are left out.

    >>> format_baggage_headers([BaggageEntry('user', 'Ann Lee+1'), BaggageEntry('n', '\u00e9')])
    [('uberctx-user', 'Ann%20Lee%2B1'), ('uberctx-n', '%C3%A9')]
    """
    headers: list[tuple[str, str]] = []
    size = 0
    for entry in entries:
        if not is_sendable(entry):
            log.debug("not sending baggage entry %r as a Jaeger header", entry)
            continue
        name = BAGGAGE_PREFIX + entry.key.lower()
        if any(name == written for written, _ in headers):
            log.debug("not sending baggage key %r as a Jaeger header", entry.key)
            continue
        value = _encode(entry.value)
        size += len(name) - len(BAGGAGE_PREFIX) + 1 + len(value)
        if len(headers) >= MAX_MEMBERS or size > MAX_BYTES:
            log.debug("baggage over %d members or %d bytes: rest not sent", MAX_MEMBERS, MAX_BYTES)
            break
        headers.append((name, value))
    return headers


def parse_baggage_headers(headers: Iterable[tuple[str, str]]) -> tuple[BaggageEntry, ...]:
    """The baggage in ``uberctx-{key}`` headers, given as ``(lower-case name, value)`` pairs.

    A repeated key keeps its first value; past 64 entries or 8192 bytes the rest is left out,
    and at most 256 headers are looked at (hostile requests cost no more).

    >>> parse_baggage_headers([('uberctx-user', 'Ann+Lee'), ('uberctx-city', 'M%C3%BCnchen')])
    (BaggageEntry(key='user', value='Ann Lee', properties=''), \
BaggageEntry(key='city', value='München', properties=''))
    """
    entries = []
    start = len(BAGGAGE_PREFIX)
    for name, value in islice(headers, MAX_BAGGAGE_HEADERS):
        key = name[start:]
        if not name.startswith(BAGGAGE_PREFIX) or not is_valid_key(key):
            log.debug("ignoring malformed Jaeger baggage header %r", name[:200])
            continue
        entries.append(_entry(BaggageEntry, (key, _decode(value), "")))
    return merge_baggage(entries)


def parse_baggage_header(value: str) -> tuple[BaggageEntry, ...]:
    """The baggage in Jaeger's ad-hoc ``jaeger-baggage`` header: ``k1=v1, k2=v2``.

    As Jaeger's clients read it: the whole value is percent-decoded, then split; a part that is
    not exactly ``key=value`` is left out.

    >>> parse_baggage_header('user=alice, request=a%2Cb')
    (BaggageEntry(key='user', value='alice', properties=''), \
BaggageEntry(key='request', value='a', properties=''))
    """
    entries = []
    for part in _decode(value).split(","):
        fields = part.strip(" \t").split("=")
        if len(fields) != 2 or not is_valid_key(fields[0]):
            if part.strip(" \t"):
                log.debug("ignoring malformed jaeger-baggage member %r", part[:200])
            continue
        entries.append(BaggageEntry(fields[0], fields[1]))
    return merge_baggage(entries)


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``context`` as an ``uber-trace-id`` header on ``carrier``, and its baggage as
    ``uberctx-*`` headers (replacing those an earlier inject wrote into the same dict or list).
    """
    # An empty dict or list holds nothing from an earlier inject: no scan of its names.
    written_before = bool(carrier)
    set_header(carrier, HEADER, format_uber_trace_id(context))
    if written_before:
        drop_prefixed(carrier, BAGGAGE_PREFIX)
    entries = entries_of(context.extra)
    if entries:
        for name, value in _formatted(entries):
            set_header(carrier, name, value)


# Formatted headers by entries: a span's children share one tuple, so each outgoing request of
# a traced request formats it once.
_FORMATTED: BoundedCache[Any, list[tuple[str, str]]] = BoundedCache(256)


def _formatted(entries: tuple[BaggageEntry, ...]) -> list[tuple[str, str]]:
    try:
        headers = _FORMATTED.get(entries)
    except TypeError:  # unhashable values in hand-made entries: format without the cache
        return format_baggage_headers(entries)
    if headers is None:
        headers = _FORMATTED[entries] = format_baggage_headers(entries)
    return headers


_EXTRACTOR = SingleHeaderExtractor(HEADER, MAX_LENGTH, parse_uber_trace_id)


def extract_ids(carrier: Any) -> TraceContext | None:
    """The context in ``carrier``'s ``uber-trace-id`` header, without baggage; or None."""
    context: TraceContext | None = _EXTRACTOR.extract(carrier)
    return context


def extract_baggage(carrier: Any) -> tuple[BaggageEntry, ...]:
    """The Jaeger baggage in ``carrier``'s headers (an empty tuple if none).

    ``uberctx-*`` headers are read when an ``uber-trace-id`` header is present; a
    ``jaeger-baggage`` header is read in any case; for a key in both, ``uberctx-*`` wins.

    >>> extract_baggage({'uber-trace-id': 'abc:def:0:1', 'Uberctx-User': 'alice'})
    (BaggageEntry(key='user', value='alice', properties=''),)
    """
    reader = reader_for(carrier)
    entries: tuple[BaggageEntry, ...] = ()
    if reader.all(HEADER, sys.maxsize):
        headers = reader.prefixed(BAGGAGE_PREFIX, MAX_BAGGAGE_VALUE_LENGTH, MAX_BAGGAGE_HEADERS)
        entries = parse_baggage_headers(headers)
    adhoc = reader.all(BAGGAGE_HEADER, MAX_READ_LENGTH)
    if adhoc:
        entries = merge_baggage(entries, parse_baggage_header(",".join(adhoc)))
    return entries


def extract(carrier: Any) -> TraceContext | None:
    """The context in ``carrier``'s ``uber-trace-id`` header, with its Jaeger baggage; or None.

    >>> extract({'uber-trace-id': 'abc:def:0:1', 'uberctx-user': 'alice'}).extra
    {'baggage': (BaggageEntry(key='user', value='alice', properties=''),)}
    """
    context = extract_ids(carrier)
    if context is None:
        return None
    entries = extract_baggage(carrier)
    return with_baggage(context, entries) if entries else context


#: :func:`extract_ids` for a plain dict or WSGI environ, or :data:`~.carriers.SLOW` (the
#: composite propagator's fast path).
extract_dict = _EXTRACTOR.extract_dict
