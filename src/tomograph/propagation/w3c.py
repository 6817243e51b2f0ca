"""W3C Trace Context: the ``traceparent`` and ``tracestate`` headers.

``traceparent: {version}-{trace-id}-{parent-id}-{trace-flags}``, e.g.
``00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01``. We write version ``00``, the
trace id as 32 hex, our span's own id as parent-id, and only the flag we know (``01`` =
sampled). We read version ``00`` exactly (55 characters) and future versions by their first
four fields, with anything after them allowed only behind a ``-``; version ``ff``, upper case,
all-zero ids or a repeated ``traceparent`` header are invalid: :func:`extract` returns None,
``tracestate`` is not read, and a new trace starts.

``tracestate`` is a list of ``key=value`` members (combined over repeated headers). A member or
key that breaks the grammar, or a key that appears twice, invalidates the whole tracestate: it is
dropped and the traceparent kept. More than 32 members: those beyond the 32nd are dropped. The
other vendors' members travel on unchanged, in order, in ``TraceContext.extra['tracestate']`` (a
tuple of ``(key, value)`` pairs).

Our own member, key ``tomograph``, is rewritten on every inject and moved to the front:
``tomograph={span-id};{state}[;{parent-id}]``, where span-id is the id also written as
traceparent's parent-id, state is ``1`` (sampled), ``0`` (not sampled) or ``d`` (debug: W3C has
no debug flag), and parent-id is the parent of that span (Zipkin's shared-span servers report
it). On extract it is honoured only if its span-id equals traceparent's parent-id, i.e. when no
other tracer changed traceparent on the way.

>>> from tomograph.model import TraceContext
>>> headers = {}
>>> inject(TraceContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, sampled=True),
...        headers)
>>> headers['traceparent']
'00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
>>> headers['tracestate']
'tomograph=00f067aa0ba902b7;1'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from tomograph.ids import parse_hex_id
from tomograph.model import TraceContext
from tomograph.propagation._context import ContextLike, new_context
from tomograph.propagation.carriers import (
    SLOW,
    NameSet,
    environ_key,
    has_other_case,
    is_environ,
    log,
    reader_for,
    set_header,
)

__all__ = [
    "OWN_KEY",
    "TRACEPARENT",
    "TRACESTATE",
    "extract",
    "format_traceparent",
    "format_tracestate",
    "inject",
    "parse_traceparent",
    "parse_tracestate",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Our member's key in tracestate.
OWN_KEY = "tomograph"
#: Most tracestate members kept or sent.
MAX_MEMBERS = 32
#: The longest traceparent read (a future version may append fields).
MAX_TRACEPARENT_LENGTH = 512
#: The longest combined tracestate read; 32 members of the largest size fit.
MAX_TRACESTATE_LENGTH = 32 * 512 + 31
#: Above this many characters, outgoing tracestate is trimmed as W3C suggests.
TRIM_TRACESTATE_LENGTH = 512

# Version, trace id, parent id, flags, and (future versions only) more after a "-".
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
).fullmatch
# Flags whose low bit (sampled) is set, by their second hex digit.
_ODD = frozenset("13579bdf")
_LOWER_HEX = frozenset("0123456789abcdef")
# OWS key "=" value OWS, capturing key and value.
_MEMBER = re.compile(
    r"[ \t]*([a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
    r"=([\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e])[ \t]*"
).fullmatch
_STATES = {"1": (True, False), "0": (False, False), "d": (True, True)}
_ENVIRON_TRACEPARENT = environ_key(TRACEPARENT)
_ENVIRON_TRACESTATE = environ_key(TRACESTATE)
_STATE_NAMES = NameSet([TRACESTATE])


def _traceparent_fields(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent id, sampled) of a traceparent value, or None if it is invalid."""
    match = _TRACEPARENT(value)
    if match is None:
        value = value.strip(" \t")
        match = _TRACEPARENT(value)
        if match is None:
            log.debug("ignoring malformed traceparent %r", value)
            return None
    version, trace_hex, span_hex, flags, rest = match.groups()
    if version == "ff" or (rest and version == "00"):
        log.debug("ignoring traceparent of version %s with %r after it", version, rest)
        return None
    trace_id = int(trace_hex, 16)
    span_id = int(span_hex, 16)
    if not trace_id or not span_id:
        log.debug("ignoring traceparent with an all-zero id: %r", value)
        return None
    return trace_id, span_id, flags[1] in _ODD


def parse_traceparent(value: str) -> TraceContext | None:
    """The context in a ``traceparent`` value, or None if it is invalid.

    >>> parse_traceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01').sampled
    True
    >>> parse_traceparent('ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01') is None
    True
    """
    fields = _traceparent_fields(value)
    return None if fields is None else new_context(fields[0], fields[1], None, fields[2])


def format_traceparent(context: ContextLike) -> str:
    """The ``traceparent`` value (version 00) for ``context``.

    >>> format_traceparent(TraceContext(1, 2, sampled=False))
    '00-00000000000000000000000000000001-0000000000000002-00'
    """
    flags = "01" if context.sampled or context.debug else "00"
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"


def parse_tracestate(values: str | Iterable[str]) -> tuple[tuple[str, str], ...] | None:
    """The members of one or more ``tracestate`` values, in order; None if invalid.

    >>> parse_tracestate('rojo=00f067aa0ba902b7, congo=t61rcWkgMzE')
    (('rojo', '00f067aa0ba902b7'), ('congo', 't61rcWkgMzE'))
    >>> parse_tracestate(['a=1', 'a=2']) is None
    True
    """
    combined = values if isinstance(values, str) else ",".join(values)
    if len(combined) > MAX_TRACESTATE_LENGTH:
        log.debug("ignoring tracestate of %d characters", len(combined))
        return None
    members: list[tuple[str, str]] = []
    append = members.append
    for raw in combined.split(","):
        match = _MEMBER(raw)
        if match is None:
            if raw.strip(" \t"):
                log.debug("ignoring tracestate with malformed member %r", raw[:300])
                return None
            continue  # empty list members are allowed
        append(match.groups())  # type: ignore[arg-type]  # exactly (key, value)
    if len(members) > 1 and len(dict(members)) != len(members):
        log.debug("ignoring tracestate with a duplicated key: %r", combined[:300])
        return None
    if len(members) > MAX_MEMBERS:
        log.debug("tracestate has %d members: keeping the first %d", len(members), MAX_MEMBERS)
        del members[MAX_MEMBERS:]
    return tuple(members)


def format_tracestate(
    members: Sequence[tuple[str, str]], own: tuple[str, str] | None = None
) -> str:
    """The ``tracestate`` value: ``own`` first, then ``members`` (minus any old ``own`` key).

    At most 32 members; above 512 characters, members longer than 128 characters are dropped
    from the right first, then others from the right, as W3C suggests.

    >>> format_tracestate([('rojo', '1'), ('tomograph', 'x')], ('tomograph', 'y'))
    'tomograph=y,rojo=1'
    """
    items = [f"{own[0]}={own[1]}"] if own is not None else []
    own_key = own[0] if own is not None else None
    for key, value in members:
        if key != own_key:
            items.append(f"{key}={value}")
    if len(items) > MAX_MEMBERS:
        del items[MAX_MEMBERS:]
    text = ",".join(items)
    if len(text) <= TRIM_TRACESTATE_LENGTH:
        return text
    first = 1 if own is not None else 0
    for index in range(len(items) - 1, first - 1, -1):
        if len(items[index]) > 128:
            del items[index]
    while len(items) > first and len(",".join(items)) > TRIM_TRACESTATE_LENGTH:
        items.pop()
    return ",".join(items)


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``traceparent`` and ``tracestate`` for ``context`` on ``carrier``.

    Other vendors' members from ``context.extra['tracestate']`` follow our own member.
    """
    debug = context.debug
    sampled = context.sampled
    span_hex = f"{context.span_id:016x}"
    traceparent = f"00-{context.trace_id:032x}-{span_hex}-{'01' if sampled or debug else '00'}"
    state = "d" if debug else ("1" if sampled else "0")
    parent_id = context.parent_id
    own = f"{span_hex};{state};{parent_id:016x}" if parent_id else f"{span_hex};{state}"
    extra = context.extra
    members = extra.get(TRACESTATE) if extra else None
    tracestate = _with_foreign(own, members) if members else f"{OWN_KEY}={own}"
    if carrier.__class__ is dict:
        carrier[TRACEPARENT] = traceparent
        carrier[TRACESTATE] = tracestate
    else:
        set_header(carrier, TRACEPARENT, traceparent)
        set_header(carrier, TRACESTATE, tracestate)


# Other vendors' members, formatted: a span's children share one tuple, so each outgoing
# request of a traced request formats it once. Bounded: cleared when full.
_FOREIGN: dict[Any, tuple[str, int]] = {}
_FOREIGN_MAX = 256


def _with_foreign(own: str, members: Sequence[tuple[str, str]]) -> str:
    """Our member (value ``own``) followed by ``members``: what :func:`format_tracestate` gives."""
    try:
        cached = _FOREIGN.get(members)
    except TypeError:  # a list, or unhashable values: format without the cache
        return format_tracestate(members, (OWN_KEY, own))
    if cached is None:
        items = [f"{key}={value}" for key, value in members if key != OWN_KEY]
        cached = (",".join(items), len(items))
        if len(_FOREIGN) >= _FOREIGN_MAX:
            _FOREIGN.clear()
        _FOREIGN[members] = cached
    foreign, count = cached
    if not count:
        return f"{OWN_KEY}={own}"
    text = f"{OWN_KEY}={own},{foreign}"
    if count < MAX_MEMBERS and len(text) <= TRIM_TRACESTATE_LENGTH:
        return text
    return format_tracestate(members, (OWN_KEY, own))  # over a limit: trimmed as usual


def _own_member(value: str, span_id: int) -> tuple[bool, int | None] | None:
    """(debug, parent id) from our own tracestate member, if it was written for ``span_id``."""
    fields = value.split(";")
    head = fields[0]
    if (
        len(fields) not in (2, 3)
        or len(head) != 16
        or not _LOWER_HEX.issuperset(head)
        or int(head, 16) != span_id  # span_id is never 0: an all-zero head never matches
    ):
        return None  # written for another span: a tracer in between changed traceparent
    state = _STATES.get(fields[1])
    parent_id = parse_hex_id(fields[2], (16,)) if len(fields) == 3 else None
    return bool(state and state[1]), parent_id


def extract(carrier: Any) -> TraceContext | None:
    """The W3C context in ``carrier``'s headers, with tracestate in ``extra``; or None.

    >>> ctx = extract({'traceparent': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    ...                'tracestate': 'rojo=00f067aa0ba902b7'})
    >>> ctx.extra['tracestate']
    (('rojo', '00f067aa0ba902b7'),)
    """
    if carrier.__class__ is dict:
        context = extract_dict(carrier, is_environ(carrier))
        if context is not SLOW:
            return context  # type: ignore[no-any-return]
    reader = reader_for(carrier)
    values = reader.all(TRACEPARENT, MAX_TRACEPARENT_LENGTH)
    if not values:
        return None
    if len(values) > 1:
        log.debug("ignoring %d traceparent headers: exactly one is allowed", len(values))
        return None
    fields = _traceparent_fields(values[0])
    if fields is None:
        return None
    states = reader.all(TRACESTATE, MAX_TRACESTATE_LENGTH)
    return _context(fields, states[0] if len(states) == 1 else states)


def extract_dict(carrier: dict[Any, Any], environ: bool, exact: bool = False) -> Any:
    """:func:`extract` for a plain dict or WSGI environ, or :data:`~.carriers.SLOW`.

    The fast path: exact-case keys and string values only. ``exact``: the caller checked that
    no W3C name is spelled in another case. It gives ``SLOW`` (use the general reader) for
    values of other types, values over the limits, and for a plain dict without a lower-case
    ``traceparent`` key.
    """
    if environ:
        value = carrier.get(_ENVIRON_TRACEPARENT)
        if value is None:
            return None
    else:
        value = carrier.get(TRACEPARENT)
        if value is None and exact:
            return None
    if value.__class__ is not str or len(value) > MAX_TRACEPARENT_LENGTH:
        return SLOW
    fields = _traceparent_fields(value)
    if fields is None:
        return None
    state = carrier.get(_ENVIRON_TRACESTATE if environ else TRACESTATE)
    if state is None:
        if environ or exact or not has_other_case(carrier, _STATE_NAMES):
            return new_context(fields[0], fields[1], None, fields[2])
        return SLOW
    if state.__class__ is not str or len(state) > MAX_TRACESTATE_LENGTH:
        return SLOW
    return _context(fields, state)


def _context(fields: tuple[int, int, bool], states: str | list[str]) -> TraceContext:
    """The context of a valid traceparent's ``fields`` and the tracestate values beside it."""
    trace_id, span_id, sampled = fields
    members = parse_tracestate(states) if states else None
    if not members:
        return new_context(trace_id, span_id, None, sampled)
    debug = False
    parent_id = None
    first_key, first_value = members[0]
    if first_key == OWN_KEY:  # where we write it: no search
        own = _own_member(first_value, span_id)
        if own is not None:
            debug = own[0] and sampled
            parent_id = own[1]
        members = members[1:]
        return new_context(
            trace_id,
            span_id,
            parent_id,
            sampled,
            debug,
            extra={TRACESTATE: members} if members else None,
        )
    for index, (key, value) in enumerate(members):
        if key == OWN_KEY:
            own = _own_member(value, span_id)
            if own is not None:
                debug = own[0] and sampled
                parent_id = own[1]
            members = members[:index] + members[index + 1 :]
            break
    return new_context(
        trace_id,
        span_id,
        parent_id,
        sampled,
        debug,
        extra={TRACESTATE: members} if members else None,
    )
