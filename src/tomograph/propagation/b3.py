"""B3 propagation (Zipkin): the ``X-B3-*`` headers and the single ``b3`` header.

Multi-header form::

    X-B3-TraceId: 463ac35c9f6413ad48485a3953bb6124   (16 or 32 lower-case hex)
    X-B3-SpanId: a2fb4a1d1a96d312                    (16 hex)
    X-B3-ParentSpanId: 0020000000000001              (16 hex, absent on a root span)
    X-B3-Sampled: 1                                  (1 or 0; "true"/"false" accepted on read)
    X-B3-Flags: 1                                    (debug; then X-B3-Sampled is not sent)

Single-header form: ``b3: {trace-id}-{span-id}[-{1|0|d}[-{parent-span-id}]]``, or a sampling
state alone, ``b3: 0``, to ask that nothing downstream be recorded.

Reading: the single header wins when it is present and valid; a repeated header's first value
wins. Malformed ids (wrong length, upper case, all zeros, nonsense) reject the whole B3
context: :func:`extract` returns None and a new trace starts. A deny without ids (``b3: 0`` or
``X-B3-Sampled: 0`` alone) is honoured: :func:`extract` returns an unsampled context with fresh
local ids, so nothing in this request, nor downstream, is recorded. An accept or debug state
without ids (``b3: 1``, ``b3: d``) is ignored: the local sampler decides.

Writing (:func:`inject`) uses the multi-header form with lower-case names (what HTTP/2 and
case-sensitive carriers need; HTTP/1 names are case-insensitive); :func:`inject_single` writes
the ``b3`` header.

>>> headers = {}
>>> from tomograph.model import TraceContext
>>> inject_single(TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, sampled=True), headers)
>>> headers
{'b3': '463ac35c9f6413ad-a2fb4a1d1a96d312-1'}
>>> extract(headers).span_id == 0xA2FB4A1D1A96D312
True
"""

from __future__ import annotations

import re
from typing import Any

from tomograph.ids import match_lower_hex, new_span_id, new_trace_id, parse_hex_id
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
    "FLAGS",
    "PARENT_SPAN_ID",
    "SAMPLED",
    "SINGLE",
    "SPAN_ID",
    "TRACE_ID",
    "extract",
    "format_b3_single",
    "inject",
    "inject_single",
    "parse_b3_multi",
    "parse_b3_single",
]

TRACE_ID = "x-b3-traceid"
SPAN_ID = "x-b3-spanid"
PARENT_SPAN_ID = "x-b3-parentspanid"
SAMPLED = "x-b3-sampled"
FLAGS = "x-b3-flags"
SINGLE = "b3"

#: The longest B3 value read; a valid single header has at most 68 characters.
MAX_LENGTH = 128

_TRACE_WIDTHS = (16, 32)
_SPAN_WIDTHS = (16,)
# A well-formed single header, checked by one pattern: trace id, span id, state, parent id.
# Anything else (whitespace, a comma, a lone state) takes the field-by-field path with its log.
_SINGLE = re.compile(
    r"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d])(?:-([0-9a-f]{16}))?)?"
).fullmatch
# The multi-header form's common case, its three values joined by "-": trace id, span id,
# sampled. Anything else takes parse_b3_multi.
_MULTI = re.compile(r"([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})-([01])").fullmatch
# (sampled, debug) by the single header's state.
_SINGLE_STATES: dict[str | None, tuple[bool | None, bool]] = {
    None: (None, False),
    "1": (True, False),
    "0": (False, False),
    "d": (None, True),
}
_SAMPLED_VALUES = {"1": True, "0": False, "true": True, "false": False}
# Looked up in this order: single, trace id, span id, sampled, flags, parent span id.
_ORDER = (SINGLE, TRACE_ID, SPAN_ID, SAMPLED, FLAGS, PARENT_SPAN_ID)
_KEYS = _ORDER
_ENVIRON_KEYS = tuple(environ_key(name) for name in _ORDER)
_NAMES = NameSet(_ORDER)
#: The headers whose presence means there may be a B3 context (a parent id alone does not).
PRESENCE = _ORDER[:5]


def _deny() -> TraceContext:
    # A sampling decision with no ids: local ids carry the "not sampled" decision onward.
    return TraceContext(new_trace_id(), new_span_id(), sampled=False)


def _first_of(value: str) -> str:
    # A WSGI server joins repeated headers with commas; B3's rule is that the first one wins.
    return value.split(",", 1)[0].strip() if "," in value else value


def parse_b3_single(value: str) -> TraceContext | None:
    """The context in a ``b3`` header value, or None if it is malformed.

    >>> parse_b3_single('80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90')
    TraceContext(trace_id=80f198ee56343ba864fe8b2a57d3eff7, span_id=e457b5a2e4d86bd1, \
parent_id=05e3ac9a4f6e3b90, sampled=True, debug=False)
    >>> parse_b3_single('0').sampled
    False
    """
    match = _SINGLE(value)
    if match is not None:
        trace_hex, span_hex, state_char, parent_hex = match.groups()
        trace = int(trace_hex, 16)
        span = int(span_hex, 16)
        parent = int(parent_hex, 16) if parent_hex is not None else None
        if trace and span and parent != 0:
            sampled_state, debug_state = _SINGLE_STATES[state_char]
            return new_context(trace, span, parent, sampled_state, debug_state)
        # an all-zero id: rejected below, with its log line
    value = _first_of(value)
    fields = value.split("-")
    count = len(fields)
    if count == 1:
        if value == "0":
            return _deny()
        if value in ("1", "d"):
            log.debug("b3 header %r: a sampling state without ids is honoured only for 0", value)
        else:
            log.debug("ignoring malformed b3 header %r", value)
        return None
    if count > 4:
        log.debug("ignoring b3 header with too many fields: %r", value)
        return None
    trace_id = parse_hex_id(fields[0], _TRACE_WIDTHS)
    span_id = parse_hex_id(fields[1], _SPAN_WIDTHS)
    if trace_id is None or span_id is None:
        log.debug("ignoring b3 header with malformed ids: %r", value)
        return None
    sampled: bool | None = None
    debug = False
    parent_id = None
    if count >= 3:
        state = fields[2]
        if state == "1":
            sampled = True
        elif state == "0":
            sampled = False
        elif state == "d":
            debug = True
        else:
            log.debug("ignoring b3 header with malformed sampling state: %r", value)
            return None
        if count == 4:
            parent_id = parse_hex_id(fields[3], _SPAN_WIDTHS)
            if parent_id is None:
                log.debug("ignoring b3 header with malformed parent id: %r", value)
                return None
    return new_context(trace_id, span_id, parent_id, sampled, debug)


def parse_b3_multi(
    trace_id: str | None,
    span_id: str | None,
    parent_span_id: str | None = None,
    sampled: str | None = None,
    flags: str | None = None,
) -> TraceContext | None:
    """The context in the values of the ``X-B3-*`` headers (None where a header is absent).

    >>> parse_b3_multi('463ac35c9f6413ad', 'a2fb4a1d1a96d312', sampled='true').sampled
    True
    >>> parse_b3_multi('463ac35c9f6413ad', None) is None
    True
    """
    sampled_value: bool | None = None
    if sampled is not None:
        # An exact hit is the common case (a value with a comma never is one).
        sampled_value = _SAMPLED_VALUES.get(sampled)
        if sampled_value is None:
            sampled = _first_of(sampled)
            sampled_value = _SAMPLED_VALUES.get(sampled)
            if sampled_value is None:
                sampled_value = _SAMPLED_VALUES.get(sampled.lower())
                if sampled_value is None:
                    log.debug("ignoring B3 headers: malformed X-B3-Sampled %r", sampled)
                    return None
    debug = False
    if flags is not None:
        flags = _first_of(flags)
        if flags == "1":
            debug = True
        elif flags != "0":
            log.debug("ignoring B3 headers: malformed X-B3-Flags %r", flags)
            return None
    if trace_id is None and span_id is None and parent_span_id is None:
        if sampled_value is False and not debug:
            return _deny()
        return None
    if trace_id is None or span_id is None:
        log.debug("ignoring B3 headers: X-B3-TraceId and X-B3-SpanId must come together")
        return None
    # Well-formed ids checked together, by one pattern; anything else (commas included) takes
    # parse_hex_id, id by id.
    if (
        len(span_id) == 16
        and len(trace_id) in _TRACE_WIDTHS
        and match_lower_hex(trace_id + span_id) is not None
    ):
        trace = int(trace_id, 16) or None
        span = int(span_id, 16) or None
    else:
        trace = parse_hex_id(_first_of(trace_id), _TRACE_WIDTHS)
        span = parse_hex_id(_first_of(span_id), _SPAN_WIDTHS)
    if trace is None or span is None:
        log.debug("ignoring B3 headers with malformed ids: %r, %r", trace_id, span_id)
        return None
    parent = None
    if parent_span_id is not None:
        parent = parse_hex_id(_first_of(parent_span_id), _SPAN_WIDTHS)
        if parent is None:
            log.debug("ignoring B3 headers: malformed X-B3-ParentSpanId %r", parent_span_id)
            return None
    return new_context(trace, span, parent, sampled_value, debug)


def format_b3_single(context: ContextLike) -> str:
    """The ``b3`` header value for ``context``.

    >>> format_b3_single(TraceContext(1, 2, 3, sampled=False))
    '0000000000000001-0000000000000002-0-0000000000000003'
    """
    trace_id = context.trace_id
    # Hex by %-formatting: a third fewer instructions than an f-string's format spec.
    value = "%016x" % trace_id if trace_id <= 0xFFFFFFFFFFFFFFFF else "%032x" % trace_id
    value = "%s-%016x" % (value, context.span_id)
    if context.debug:
        state = "-d"
    elif context.sampled is None:
        state = ""
    else:
        state = "-1" if context.sampled else "-0"
    parent_id = context.parent_id
    if parent_id and state:
        # The parent id is the fourth field: it cannot be sent when the decision is deferred.
        return "%s%s-%016x" % (value, state, parent_id)
    return value + state


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``context`` as ``X-B3-*`` headers (lower-case names) on ``carrier``.

    >>> headers = {}
    >>> inject(TraceContext(1, 2, sampled=True), headers)
    >>> headers['x-b3-sampled']
    '1'
    """
    trace_id = context.trace_id
    # Hex by %-formatting: a third fewer instructions than an f-string's format spec.
    trace = "%016x" % trace_id if trace_id <= 0xFFFFFFFFFFFFFFFF else "%032x" % trace_id
    parent_id = context.parent_id
    if carrier.__class__ is dict:
        # Written out for the common carrier; headers left from an earlier inject are removed.
        carrier[TRACE_ID] = trace
        carrier[SPAN_ID] = "%016x" % context.span_id
        if parent_id:
            carrier[PARENT_SPAN_ID] = "%016x" % parent_id
        elif PARENT_SPAN_ID in carrier:
            del carrier[PARENT_SPAN_ID]
        # "in" and "del" rather than dict.pop: no method call when the header is absent.
        if context.debug:
            carrier[FLAGS] = "1"
            if SAMPLED in carrier:
                del carrier[SAMPLED]
            return
        if FLAGS in carrier:
            del carrier[FLAGS]
        sampled = context.sampled
        if sampled is not None:
            carrier[SAMPLED] = "1" if sampled else "0"
        elif SAMPLED in carrier:
            del carrier[SAMPLED]
        return
    set_header(carrier, TRACE_ID, trace)
    set_header(carrier, SPAN_ID, "%016x" % context.span_id)
    if parent_id:
        set_header(carrier, PARENT_SPAN_ID, "%016x" % parent_id)
    if context.debug:
        set_header(carrier, FLAGS, "1")
    elif context.sampled is not None:
        set_header(carrier, SAMPLED, "1" if context.sampled else "0")


def inject_single(context: ContextLike, carrier: Any) -> None:
    """Write ``context`` as one ``b3`` header on ``carrier``."""
    set_header(carrier, SINGLE, format_b3_single(context))


def extract(carrier: Any) -> TraceContext | None:
    """The B3 context in ``carrier``'s headers (single header first), or None.

    >>> extract({'X-B3-TraceId': '463ac35c9f6413ad', 'X-B3-SpanId': 'a2fb4a1d1a96d312'}).sampled
    """
    if carrier.__class__ is dict:
        # is_environ, written out: a call less.
        context = extract_dict(carrier, "REQUEST_METHOD" in carrier or "wsgi.version" in carrier)
        if context is not SLOW:
            return context  # type: ignore[no-any-return]
    reader = reader_for(carrier)
    single = reader.first(SINGLE, MAX_LENGTH)
    if single is not None:
        context = parse_b3_single(single)
        if context is not None:
            return context
    first = reader.first
    trace_id = first(TRACE_ID, MAX_LENGTH)
    span_id = first(SPAN_ID, MAX_LENGTH)
    sampled = first(SAMPLED, MAX_LENGTH)
    flags = first(FLAGS, MAX_LENGTH)
    parent_id = first(PARENT_SPAN_ID, MAX_LENGTH) if trace_id is not None else None
    if trace_id is None and span_id is None and sampled is None and flags is None:
        return None
    return parse_b3_multi(trace_id, span_id, parent_id, sampled, flags)


def extract_dict(carrier: dict[Any, Any], environ: bool, exact: bool = False) -> Any:
    """:func:`extract` for a plain dict or WSGI environ, or :data:`~.carriers.SLOW`.

    ``exact``: the caller checked that no B3 name is spelled in another case, so a missing
    lower-case key means an absent header. Values that are not strings or are over the
    limit, and other-case names, give ``SLOW`` (the general reader decides).
    """
    keys = _ENVIRON_KEYS if environ else _KEYS
    get = carrier.get
    single = get(keys[0])
    if single is not None:
        if single.__class__ is not str or len(single) > MAX_LENGTH:
            return SLOW
        context = parse_b3_single(single)
        if context is not None:
            return context
    if not (environ or exact or _NAMES.names.issuperset(carrier)) and has_other_case(
        carrier, _NAMES
    ):
        return SLOW  # a name in another case: only the case-insensitive reader can tell
    _, trace_key, span_key, sampled_key, flags_key, parent_key = keys
    trace_id = get(trace_key)
    span_id = get(span_key)
    sampled = get(sampled_key)
    flags = get(flags_key)
    parent_id = get(parent_key)
    if (
        flags is None
        and parent_id is None
        and trace_id.__class__ is str
        and span_id.__class__ is str
        and sampled.__class__ is str
    ):
        # What a client span sends: ids and a decision, checked together by one pattern.
        match = _MULTI(f"{trace_id}-{span_id}-{sampled}")
        if match is not None:
            trace_hex, span_hex, decision = match.groups()
            trace = int(trace_hex, 16)
            span = int(span_hex, 16)
            if trace and span:
                return new_context(trace, span, None, decision == "1")
    for value in (trace_id, span_id, sampled, flags, parent_id):
        if value is not None and (value.__class__ is not str or len(value) > MAX_LENGTH):
            return SLOW
    if trace_id is None:
        if span_id is None and sampled is None and flags is None:
            return None
        parent_id = None
    return parse_b3_multi(trace_id, span_id, parent_id, sampled, flags)


#: The Python versions, also when the compiled ones are in use (tests compare the two).
PYTHON_FUNCTIONS = {"inject": inject, "extract": extract, "extract_dict": extract_dict}
_compiled = install_compiled(
    "b3",
    {
        **PYTHON_FUNCTIONS,
    },
)
if _compiled is not None:
    # About a third of the instructions of inject + extract (the numbers: docs/core.md).
    inject, extract, extract_dict = _compiled
