"""W3C Trace Context: the ``traceparent`` and ``tracestate`` headers.

``traceparent: {version}-{trace-id}-{parent-id}-{trace-flags}``, e.g.
``00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01``. We write version ``00``, the
trace id as 32 hex, our span's own id as parent-id, and only the flag we know (``01`` =
sampled). We read version ``00`` exactly (55 characters) and future versions by their first
four fields, with anything after them allowed only behind a ``-``; version ``ff``, upper case,
all-zero ids or a repeated ``traceparent`` header are invalid: :func:`extract` returns None,
``tracestate`` is not read, and a new trace starts.

``tracestate`` is a list of ``key=value`` members (combined over repeated headers), read with
the current W3C grammar: a key starts with a lower-case letter or a digit and may hold ``@``
anywhere after it. A list that does not parse (a member with an invalid key or value, more than
32 members, or more than :data:`MAX_TRACESTATE_LENGTH` characters) is discarded whole and the
traceparent kept. Duplicated keys are passed on as received. The other vendors' members travel
on unchanged, in order, in ``TraceContext.extra['tracestate']`` (a tuple of ``(key, value)``
pairs).

Our own member, key ``tomograph``, is rewritten on every inject and moved to the front:
``tomograph={span-id};{state}[;{parent-id}]``, where span-id is the id also written as
traceparent's parent-id, state is ``1`` (sampled), ``0`` (not sampled) or ``d`` (debug: W3C has
no debug flag), and parent-id is the parent of that span (Zipkin's shared-span servers report
it). On extract it is honoured only if its span-id equals traceparent's parent-id, i.e. when no
other tracer changed traceparent on the way. A list we send holds at most 32 members and 512
characters: over that, members are removed from the right, those over 128 characters first,
until the rest fits (:func:`format_tracestate`).

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
import sys
from collections.abc import Iterable
from typing import Any

from tomograph._cache import BoundedCache
from tomograph.ids import match_lower_hex, parse_hex_id
from tomograph.model import TraceContext
from tomograph.propagation._context import ContextLike, install_compiled, new_context
from tomograph.propagation.carriers import (
    SLOW,
    NameSet,
    environ_key,
    has_other_case,
    log,
    reader_for,
    set_header,
)

__all__ = [
    "OWN_KEY",
    "TRACEPARENT",
    "TRACESTATE",
    "extract",
    "format_tracestate",
    "inject",
    "parse_traceparent",
    "parse_tracestate",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: Our member's key in tracestate.
OWN_KEY = "tomograph"
#: Most tracestate members read or sent: a received list with more does not parse.
MAX_MEMBERS = 32
#: The longest traceparent read (a future version may append fields).
MAX_TRACEPARENT_LENGTH = 512
#: The longest combined tracestate read: 32 members of the largest size (513 characters) with
#: their commas take 16447; the rest leaves room for optional whitespace and empty members.
MAX_TRACESTATE_LENGTH = 32768
#: Above this many characters, outgoing tracestate is trimmed as W3C says.
TRIM_TRACESTATE_LENGTH = 512
#: Members longer than this are the first to go when outgoing tracestate is trimmed.
LARGE_MEMBER_LENGTH = 128

# Version, trace id, parent id, flags, and (future versions only) more after a "-".
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.DOTALL
).fullmatch
# The common case, version 00, checked by a smaller pattern first (three groups, no optional
# tail): cheaper than the general one, and than converting the fields and writing them back.
# Trace id, parent id, the flags' second digit.
_TRACEPARENT_00 = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]([0-9a-f])").fullmatch
# Flags whose low bit (sampled) is set, by their second hex digit.
_ODD = frozenset("13579bdf")
_KEY = r"[a-z0-9][a-z0-9_\-*/@]{0,255}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
# OWS key "=" value OWS, capturing key and value.
_MEMBER = re.compile(rf"[ \t]*({_KEY})=({_VALUE})[ \t]*").fullmatch
_VALID_KEY = re.compile(_KEY).fullmatch
_VALID_VALUE = re.compile(_VALUE).fullmatch
_STATES = {"1": (True, False), "0": (False, False), "d": (True, True)}
_ENVIRON_TRACEPARENT = environ_key(TRACEPARENT)
_ENVIRON_TRACESTATE = environ_key(TRACESTATE)
_STATE_NAMES = NameSet([TRACESTATE])


def _traceparent_fields(value: str) -> tuple[int, int, bool] | None:
    """(trace id, parent id, sampled) of a traceparent value, or None if it is invalid."""
    match = _TRACEPARENT_00(value)
    if match is not None:
        trace_hex, span_hex, flag = match.groups()
        trace_id = int(trace_hex, 16)
        span_id = int(span_hex, 16)
        if trace_id and span_id:
            return trace_id, span_id, flag in _ODD
        # all-zero ids: the general path below rejects them with its log line
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


def parse_tracestate(values: str | Iterable[str]) -> tuple[tuple[str, str], ...] | None:
    """The members of one or more ``tracestate`` values, in order; None if the list does not
    parse (a malformed member, more than 32 members, or over :data:`MAX_TRACESTATE_LENGTH`).

    Empty members are skipped; duplicated keys are kept, as received.

    >>> parse_tracestate('rojo=00f067aa0ba902b7, congo=t61rcWkgMzE')
    (('rojo', '00f067aa0ba902b7'), ('congo', 't61rcWkgMzE'))
    >>> parse_tracestate(['foo@bar@baz=1', 'foo@=2'])
    (('foo@bar@baz', '1'), ('foo@', '2'))
    >>> parse_tracestate('@foo=1,bar=2') is None
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
        if len(members) == MAX_MEMBERS:
            log.debug("ignoring tracestate of more than %d members", MAX_MEMBERS)
            return None
        append(match.groups())  # type: ignore[arg-type]  # exactly (key, value)
    return tuple(members)


def format_tracestate(members: Any, own: tuple[str, str] | None = None) -> str:
    """The ``tracestate`` value: ``own`` first, then ``members`` (minus any old ``own`` key).

    ``members`` is a sequence of ``(key, value)`` pairs, as :func:`parse_tracestate` gives
    (a ``tracestate`` string is parsed first). Members that break the grammar are left out,
    so the result always parses. At most 32 members: the right-most go first. Above 512
    characters, members are removed one at a time from the right, those over 128 characters
    first, until the rest fits, as W3C says; ``own`` is always kept.

    >>> format_tracestate([('rojo', '1'), ('tomograph', 'x')], ('tomograph', 'y'))
    'tomograph=y,rojo=1'
    """
    items = [f"{own[0]}={own[1]}"] if own is not None else []
    items.extend(_member_texts(members, own[0] if own is not None else None))
    return _fit(items, own is not None)


def _member_texts(members: Any, skip_key: str | None) -> list[str]:
    """``key=value`` for each valid member of ``members`` whose key is not ``skip_key``.

    ``members`` normally comes from :func:`parse_tracestate`; anything else a user put in
    ``extra['tracestate']`` (a string, a list, malformed pairs) must never make inject raise
    or send a header the next hop has to discard.
    """
    if isinstance(members, str):
        members = parse_tracestate(members) or ()
    texts = []
    try:
        for member in members:
            if isinstance(member, (tuple, list)) and len(member) == 2:
                key, value = member
                if isinstance(key, str) and isinstance(value, str):
                    if key == skip_key:
                        continue
                    if _VALID_KEY(key) and _VALID_VALUE(value):
                        texts.append(f"{key}={value}")
                        continue
            log.debug("not sending malformed tracestate member %r", member)
    except TypeError:
        log.debug("extra['tracestate'] is not a sequence of pairs: %r", type(members).__name__)
    return texts


def _fit(items: list[str], keep_first: bool) -> str:
    """``items`` joined by commas, within W3C's limits of 32 members and 512 characters.

    The first item is kept if ``keep_first``. Over 32 members, the right-most go. Over 512
    characters, members over 128 characters are removed one at a time from the right until the
    rest fits; if that is not enough, the right-most members go, one at a time.
    """
    if len(items) > MAX_MEMBERS:
        log.debug("tracestate of %d members: sending the first %d", len(items), MAX_MEMBERS)
        del items[MAX_MEMBERS:]
    length = sum(map(len, items)) + len(items) - 1
    if length <= TRIM_TRACESTATE_LENGTH:
        return ",".join(items)
    first = 1 if keep_first else 0
    for index in range(len(items) - 1, first - 1, -1):
        if length <= TRIM_TRACESTATE_LENGTH:
            break
        if len(items[index]) > LARGE_MEMBER_LENGTH:
            length -= len(items.pop(index)) + 1
    while length > TRIM_TRACESTATE_LENGTH and len(items) > first:
        length -= len(items.pop()) + 1
    log.debug("tracestate over %d characters: trimmed to %d", TRIM_TRACESTATE_LENGTH, length)
    return ",".join(items)


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``traceparent`` and ``tracestate`` for ``context`` on ``carrier``.

    Other vendors' members from ``context.extra['tracestate']`` follow our own member.
    """
    debug = context.debug
    sampled = context.sampled
    # Hex by %-formatting: a third fewer instructions than an f-string's format spec.
    span_hex = "%016x" % context.span_id
    flags = "01" if sampled or debug else "00"
    traceparent = "00-%032x-%s-%s" % (context.trace_id, span_hex, flags)
    state = "d" if debug else ("1" if sampled else "0")
    parent_id = context.parent_id
    own = "%s;%s;%016x" % (span_hex, state, parent_id) if parent_id else f"{span_hex};{state}"
    extra = context.extra
    members = extra.get(TRACESTATE) if extra else None
    if members:
        # The cache hit written out (a call less); _with_foreign formats and fills it.
        try:
            tail = _FOREIGN.get(members)
        except TypeError:  # unhashable: a list, or hand-made values
            tail = None
        tracestate = f"{OWN_KEY}={own}{tail}" if tail is not None else _with_foreign(own, members)
    else:
        tracestate = f"{OWN_KEY}={own}"
    if carrier.__class__ is dict:
        carrier[TRACEPARENT] = traceparent
        carrier[TRACESTATE] = tracestate
    else:
        set_header(carrier, TRACEPARENT, traceparent)
        set_header(carrier, TRACESTATE, tracestate)


# Other vendors' members, formatted and checked, as the text that follows our member (with
# its leading comma), if they fit beside the longest member of ours: a span's children share
# one tuple, so each outgoing request of a traced request formats it once.
_FOREIGN: BoundedCache[Any, str | None] = BoundedCache(256)
# Our longest member: "tomograph=" and {span-id};{state};{parent-id}.
_LONGEST_OWN = len(OWN_KEY) + 1 + 16 + 3 + 16


def _with_foreign(own: str, members: Any) -> str:
    """Our member (value ``own``) followed by ``members``: what :func:`format_tracestate` gives."""
    try:
        tail = _FOREIGN.get(members, _MISSING)
    except TypeError:  # a list, or unhashable values: format without the cache
        return format_tracestate(members, (OWN_KEY, own))
    if tail is _MISSING:
        texts = _member_texts(members, OWN_KEY)
        fits = len(texts) < MAX_MEMBERS and (
            _LONGEST_OWN + sum(map(len, texts)) + len(texts) <= TRIM_TRACESTATE_LENGTH
        )
        tail = _FOREIGN[members] = ("," + ",".join(texts) if texts else "") if fits else None
    if tail is None:  # over a limit: trimmed as usual
        return format_tracestate(members, (OWN_KEY, own))
    return f"{OWN_KEY}={own}{tail}"


_MISSING: Any = object()


def _own_member(value: str, span_id: int) -> tuple[bool, int | None] | None:
    """(debug, parent id) from our own tracestate member, if it was written for ``span_id``."""
    fields = value.split(";")
    head = fields[0]
    if (
        len(fields) not in (2, 3)
        or len(head) != 16
        or match_lower_hex(head) is None
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
        # is_environ, written out: a call less.
        context = extract_dict(carrier, "REQUEST_METHOD" in carrier or "wsgi.version" in carrier)
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
    # Every value, however long: one over the limit makes the combined list too long to parse,
    # so the whole tracestate is discarded rather than read without that value.
    states = reader.all(TRACESTATE, sys.maxsize)
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
    state = carrier.get(_ENVIRON_TRACESTATE if environ else TRACESTATE)
    if state.__class__ is str:
        context = _ours(value, state)
        if context is not None:
            return context
    fields = _traceparent_fields(value)
    if fields is None:
        return None
    if state is None:
        if environ or exact or not has_other_case(carrier, _STATE_NAMES):
            return new_context(fields[0], fields[1], None, fields[2])
        return SLOW
    if state.__class__ is not str:
        return SLOW
    return _context(fields, state)


# What one tomograph sends another: a version-00 traceparent, and tracestate led by our own
# member as inject writes it, for the span traceparent names (the backreference). Checked by one
# pattern over both values (the newline between them cannot occur in either, so it splits them
# unambiguously): trace id, span id, the flags' second digit, our state, our parent id, and the
# other vendors' members. About 40% fewer instructions than the careful path below, which
# decides everything this pattern does not match, and gives the same context (a property test).
_OURS = re.compile(
    r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]([0-9a-f])\n"
    r"tomograph=\2;([01d])(?:;([0-9a-f]{16}))?(?:,([^\n]*))?"
).fullmatch


def _ours(traceparent: str, tracestate: str) -> TraceContext | None:
    """The context of ``traceparent`` and a ``tracestate`` led by our own member, as
    :func:`_context` gives it; None when the careful path must decide."""
    match = _OURS(f"{traceparent}\n{tracestate}")
    if match is None:
        return None
    trace_hex, span_hex, flag, state, parent_hex, rest = match.groups()
    if rest:
        members = _AFTER_OURS.get(rest)
        if members is None:
            members = _after_ours(rest)
            if members is None:
                return None
    else:
        members = ()
    trace_id = int(trace_hex, 16)
    if not trace_id or span_hex == "0000000000000000":
        return None  # the careful path logs why it rejects them
    sampled = flag in _ODD
    return new_context(
        trace_id,
        int(span_hex, 16),
        int(parent_hex, 16) or None if parent_hex else None,
        sampled,
        sampled and state == "d",
        {TRACESTATE: members} if members else None,
    )


def _after_ours(rest: str) -> tuple[tuple[str, str], ...] | None:
    """The other vendors' members after our own, kept as :func:`_context` keeps them, if the
    careful path has parsed ``rest`` before (else None: it parses and logs as it should)."""
    members = _PARSED.get(rest)
    if members is None or len(members) >= MAX_MEMBERS:
        return None
    members = tuple(member for member in members if member[0] != OWN_KEY)
    _AFTER_OURS[rest] = members
    return members


# Parsed tracestate lists, by their text (less our own leading member, which names a new span
# on every request): the other vendors' members repeat request after request. Only lists that
# parsed are kept, so a malformed one is logged every time it arrives.
_PARSED: BoundedCache[str, tuple[tuple[str, str], ...]] = BoundedCache(256)
# The same lists once read behind our own member: less any other member of ours (the left-most
# one counts), and only lists of fewer than 32 members (ours makes one more).
_AFTER_OURS: BoundedCache[str, tuple[tuple[str, str], ...]] = BoundedCache(256)
# Longer lists (W3C asks senders to keep to 512 characters) are parsed every time: the cache
# holds at most 256 KiB of text.
_CACHED_LENGTH = 1024
_OWN_PREFIX = OWN_KEY + "="
_OWN_PREFIX_LENGTH = len(_OWN_PREFIX)
# What our own member's value is made of (span id, state, parent id): all valid value characters.
_OWN_CHARACTERS = "0123456789abcdef;d"


def _parsed_tracestate(states: str | list[str]) -> tuple[tuple[str, str], ...] | None:
    """:func:`parse_tracestate` of ``states``, from the cache where it can be.

    A single value that starts with our own member, as we write it, is split there: the member
    is checked on its own and the rest comes from the cache.
    """
    if not isinstance(states, str) or len(states) > MAX_TRACESTATE_LENGTH:
        return parse_tracestate(states)
    own: tuple[str, str] | None = None
    rest = states
    if rest.startswith(_OWN_PREFIX):
        head, _, rest = rest.partition(",")
        value = head[_OWN_PREFIX_LENGTH:]
        if 18 <= len(value) <= 35 and not value.strip(_OWN_CHARACTERS):
            own = (OWN_KEY, value)
        else:
            return parse_tracestate(states)  # spaces, or not as we write it: the general path
    members = _PARSED.get(rest)
    if members is None:
        members = parse_tracestate(rest)
        if members is None:
            return None
        if len(rest) <= _CACHED_LENGTH:
            _PARSED[rest] = members
    if own is None:
        return members
    if len(members) >= MAX_MEMBERS:
        log.debug("ignoring tracestate of more than %d members", MAX_MEMBERS)
        return None
    return (own, *members)


def _context(fields: tuple[int, int, bool], states: str | list[str]) -> TraceContext:
    """The context of a valid traceparent's ``fields`` and the tracestate values beside it."""
    trace_id, span_id, sampled = fields
    members = _parsed_tracestate(states) if states else None
    if not members:
        return new_context(trace_id, span_id, None, sampled)
    debug = False
    parent_id = None
    first_key, first_value = members[0]
    if first_key == OWN_KEY:  # where we write it: no search
        own = _own_member(first_value, span_id)
        members = members[1:]
    else:
        own = None
        for key, value in members:
            if key == OWN_KEY:
                own = _own_member(value, span_id)
                break
    if own is not None:
        debug = own[0] and sampled
        parent_id = own[1]
    for key, _ in members:
        if key == OWN_KEY:  # a duplicate, or ours in another place: the left-most was read
            members = tuple(member for member in members if member[0] != OWN_KEY)
            break
    return new_context(
        trace_id,
        span_id,
        parent_id,
        sampled,
        debug,
        extra={TRACESTATE: members} if members else None,
    )


#: The Python versions, also when the compiled ones are in use (tests compare the two).
PYTHON_FUNCTIONS = {"inject": inject, "extract": extract, "extract_dict": extract_dict}
_compiled = install_compiled(
    "w3c",
    {
        **PYTHON_FUNCTIONS,
        "foreign_cache": _FOREIGN,
        "parsed_cache": _PARSED,
        "after_ours_cache": _AFTER_OURS,
    },
)
if _compiled is not None:
    # About a third of the instructions of inject + extract (the numbers: docs/core.md).
    inject, extract, extract_dict = _compiled
