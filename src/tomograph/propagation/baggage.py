"""W3C Baggage: application-defined key/value pairs that travel with the trace.

``baggage: userId=alice,serverNode=DF%2028,isProduction=false;ttl=60``

Each list member is ``key=value`` with optional ``;property`` parts. Keys are HTTP tokens;
values are percent-encoded UTF-8 (decoded on read, with U+FFFD for invalid sequences, and encoded
on write); properties are kept exactly as given. A ``+`` is a plain plus sign (W3C), so we write
it as ``%2B`` and spaces as ``%20`` for peers that decode ``+`` as a space.

Reading: repeated ``baggage`` headers are combined; a malformed member is dropped on its own;
members past the 64th, or past 8192 bytes in total, are dropped (a header over 64 KiB is ignored
as hostile); a repeated key keeps its first position and its last value. Writing keeps the same
limits, dropping whole members from the end.

Baggage lives in ``TraceContext.extra['baggage']`` (and ``Span.extra``) as a tuple of
:class:`BaggageEntry`; child spans inherit it. Read and change it with :func:`get_baggage`,
:func:`get_baggage_item`, :func:`set_baggage` and :func:`remove_baggage`:

>>> import tomograph
>>> with tomograph.Tracer('shop').span('checkout') as span:
...     set_baggage('user.id', 'alice')
...     with tomograph.Tracer('shop').span('charge', parent=span) as child:
...         get_baggage(child)
{'user.id': 'alice'}
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, unquote

from tomograph._cache import BoundedCache
from tomograph.context import CURRENT_SPAN
from tomograph.model import TraceContext
from tomograph.propagation._context import ContextLike, install_compiled
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
from tomograph.text import utf8

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = [
    "BAGGAGE",
    "BaggageEntry",
    "adopt_baggage",
    "extract",
    "format_baggage",
    "get_baggage",
    "get_baggage_entries",
    "get_baggage_item",
    "inject",
    "is_sendable",
    "is_valid_key",
    "merge_baggage",
    "parse_baggage",
    "percent_decode",
    "remove_baggage",
    "replace_baggage",
    "set_baggage",
    "with_baggage",
]

BAGGAGE = "baggage"
#: Most list members kept or sent.
MAX_MEMBERS = 64
#: Most bytes of baggage kept or sent (the header value, UTF-8).
MAX_BYTES = 8192
#: A combined baggage header longer than this is not read at all.
MAX_READ_LENGTH = 65536

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# baggage-octet: printable ASCII except space, DQUOTE, comma, semicolon and backslash.
_OCTETS = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('",;\\')
# Written unencoded: baggage octets, less "%" (an escape) and "+" (a space to some decoders).
_SAFE = "".join(sorted(_OCTETS - set("%+")))
_SAFE_SET = frozenset(_SAFE)
# OWS key OWS "=" OWS value OWS [";" properties]: properties are checked on their own.
_MEMBER = re.compile(
    r"[ \t]*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)[ \t]*=[ \t]*"
    r"([\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*)[ \t]*(?:;(.*))?",
    re.DOTALL,
).fullmatch
# Percent-encoding of ASCII by str.translate, and decoding of ASCII escapes by table: both
# give what urllib's quote/unquote give, several times faster; other text takes urllib.
_QUOTE_ASCII = {code: f"%{code:02X}" for code in range(128) if chr(code) not in _SAFE_SET}
_UNQUOTE_ASCII = {
    f"{high}{low}": chr(int(high + low, 16))
    for high in "01234567"
    for low in "0123456789abcdefABCDEF"
}


def _quote(value: str) -> str:
    """``quote(value, safe=_SAFE)``."""
    if value.isascii():
        return value.translate(_QUOTE_ASCII)
    return quote(utf8(value), safe=_SAFE)


def percent_decode(value: str) -> str:
    """``urllib.parse.unquote(value, errors='replace')``, faster for ASCII escapes.

    >>> percent_decode('DF%2028'), percent_decode('M%C3%BCnchen'), percent_decode('%FF 100%')
    ('DF 28', 'München', '\ufffd 100%')
    """
    parts = value.split("%")
    decoded = [parts[0]]
    for part in parts[1:]:
        char = _UNQUOTE_ASCII.get(part[:2])
        if char is None:  # a non-ASCII byte or a malformed escape: urllib's rules apply
            return unquote(value, errors="replace")
        decoded.append(char)
        decoded.append(part[2:])
    return "".join(decoded)


# A NamedTuple made without its Python-level __new__.
_entry = tuple.__new__
_OWS = " \t"


class BaggageEntry(NamedTuple):
    """One baggage member: ``key``, decoded ``value``, raw ``properties`` (``;``-joined, or '')."""

    key: str
    value: str
    properties: str = ""


def is_valid_key(text: str) -> bool:
    """Whether ``text`` can be a baggage key: a non-empty HTTP token (so also a header name).

    >>> is_valid_key('user.id'), is_valid_key('user id'), is_valid_key('')
    (True, False, False)
    """
    return bool(text) and _TOKEN.issuperset(text)


def _parse_properties(parts: list[str]) -> str | None:
    kept = []
    for part in parts:
        name, equals, value = part.partition("=")
        name = name.strip(_OWS)
        value = value.strip(_OWS)
        if not is_valid_key(name) or (equals and not _OCTETS.issuperset(value)):
            return None
        kept.append(f"{name}={value}" if equals else name)
    return ";".join(kept)


def _size(text: str) -> int:
    return len(text) if text.isascii() else len(utf8(text))


# Parsed baggage by header value: the same baggage arrives request after request. Only values
# that parsed whole are kept, so a malformed member is logged every time it arrives; at most
# 256 values of 8192 bytes.
_PARSED: BoundedCache[str, tuple[BaggageEntry, ...]] = BoundedCache(256)


def parse_baggage(values: str | Iterable[str]) -> tuple[BaggageEntry, ...]:
    """The members of one or more ``baggage`` values; malformed members are left out.

    >>> parse_baggage('userId=alice,serverNode=DF%2028,isProduction=false;ttl=60')
    (BaggageEntry(key='userId', value='alice', properties=''), \
BaggageEntry(key='serverNode', value='DF 28', properties=''), \
BaggageEntry(key='isProduction', value='false', properties='ttl=60'))
    """
    combined = values if isinstance(values, str) else ",".join(values)
    if len(combined) > MAX_READ_LENGTH:
        log.debug("ignoring baggage of %d characters", len(combined))
        return ()
    entries = _PARSED.get(combined)
    if entries is None:
        entries, complete = _parse(combined)
        if complete and len(combined) <= MAX_BYTES:
            _PARSED[combined] = entries
    return entries


def _parse(combined: str) -> tuple[tuple[BaggageEntry, ...], bool]:
    """:func:`parse_baggage` of one value, and whether every member was kept (nothing logged)."""
    members = combined.split(",")
    complete = True
    # Sizes are counted member by member only when the whole header could be over a limit.
    small = len(members) <= MAX_MEMBERS and _size(combined) <= MAX_BYTES
    entries: dict[str, BaggageEntry] = {}
    size = count = 0
    for member in members:
        # _parse_member, written out: this loop runs for every member of every request.
        match = _MEMBER(member)
        properties: str | None = ""
        if match is not None:
            key, value, raw_properties = match.groups()
            if raw_properties is not None:
                properties = _parse_properties(raw_properties.split(";"))
        if match is None or properties is None:
            if member.strip(_OWS):
                log.debug("dropping malformed baggage member %r", member[:200])
                complete = False
            continue
        if "%" in value:
            value = percent_decode(value)
        if not small:
            size += _size(member.strip(_OWS)) + (1 if count else 0)
            count += 1
            if count > MAX_MEMBERS or size > MAX_BYTES:
                log.debug(
                    "baggage over %d members or %d bytes: rest dropped", MAX_MEMBERS, MAX_BYTES
                )
                complete = False
                break
        entries[key] = _entry(BaggageEntry, (key, value, properties))
    return tuple(entries.values()), complete


def _format_member(entry: BaggageEntry) -> str:
    value = entry.value
    if not _SAFE_SET.issuperset(value):
        value = _quote(value)
    text = f"{entry.key}={value}"
    return f"{text};{entry.properties}" if entry.properties else text


def format_baggage(entries: Iterable[BaggageEntry]) -> str:
    """The ``baggage`` value for ``entries``, within 64 members and 8192 bytes.

    Members that do not fit, or whose key is not a token, are left out.

    >>> format_baggage([BaggageEntry('user', 'alice smith'), BaggageEntry('ttl', '1', 'p')])
    'user=alice%20smith,ttl=1;p'
    """
    return _format(entries)[0]


def is_sendable(entry: Any) -> bool:
    """Whether ``entry`` can go into a header as it is: a :class:`BaggageEntry` whose key is an
    HTTP token, whose value is text and whose properties are well-formed.

    Entries normally come from :func:`set_baggage` or :func:`parse_baggage`, which check this;
    hand-made ones (:func:`with_baggage`) must not make inject raise or write a header broken
    across lines.

    >>> is_sendable(BaggageEntry('k', 'v', 'ttl=60'))
    True
    >>> is_sendable(BaggageEntry('k', 'v', 'a\\r\\nX-Injected: 1'))
    False
    """
    if not isinstance(entry, BaggageEntry):
        return False
    key, value, properties = entry
    if not (isinstance(key, str) and is_valid_key(key) and isinstance(value, str)):
        return False
    if not properties:
        return True
    return isinstance(properties, str) and _parse_properties(properties.split(";")) is not None


def _format(entries: Iterable[BaggageEntry]) -> tuple[str, bool]:
    """:func:`format_baggage`, and whether every entry was written (nothing was logged)."""
    members: list[str] = []
    size = 0
    complete = True
    for entry in entries:
        if not is_sendable(entry):
            log.debug(
                "not sending baggage entry %r: its key is not an HTTP token, or its value or "
                "properties are malformed",
                entry,
            )
            complete = False
            continue
        member = _format_member(entry)
        added = _size(member) + (1 if members else 0)
        if len(members) >= MAX_MEMBERS or size + added > MAX_BYTES:
            log.debug("baggage over %d members or %d bytes: rest not sent", MAX_MEMBERS, MAX_BYTES)
            complete = False
            break
        members.append(member)
        size += added
    return ",".join(members), complete


# Formatted baggage by entries: a span's children share one tuple, so each outgoing request of
# a traced request formats it once. Only what formatted in full (nothing logged) is kept.
_FORMATTED: BoundedCache[Any, str] = BoundedCache(256)


def _formatted(entries: tuple[BaggageEntry, ...]) -> str:
    try:
        text = _FORMATTED.get(entries)
    except TypeError:  # unhashable values in hand-made entries: format without the cache
        return format_baggage(entries)
    if text is None:
        text, complete = _format(entries)
        if complete:
            _FORMATTED[entries] = text
    return text


def merge_baggage(*sources: Iterable[BaggageEntry]) -> tuple[BaggageEntry, ...]:
    """One baggage from several formats' entries: a key keeps the first source's entry (and
    place); later sources only add keys. Entries that would take it past 64 members or 8192
    bytes (as the ``baggage`` header writes them) are left out.

    >>> merge_baggage([BaggageEntry('user', 'alice', 'p')], [BaggageEntry('user', 'bob'),
    ...               BaggageEntry('tenant', 'acme')])
    (BaggageEntry(key='user', value='alice', properties='p'), \
BaggageEntry(key='tenant', value='acme', properties=''))
    """
    if len(sources) == 1:
        single = tuple(sources[0])
        # Surely within the limits (a character takes at most 12 bytes percent-encoded), with
        # no key twice: the common case needs no formatting.
        if len(single) <= MAX_MEMBERS and (
            sum(len(e.key) + 12 * len(e.value) + len(e.properties) + 3 for e in single) <= MAX_BYTES
            and len({entry.key for entry in single}) == len(single)
        ):
            return single
        sources = (single,)
    merged: dict[str, BaggageEntry] = {}
    size = 0
    for entries in sources:
        for entry in entries:
            if entry.key in merged:
                continue
            if len(merged) >= MAX_MEMBERS:
                log.debug("baggage over %d members: the rest left out", MAX_MEMBERS)
                return tuple(merged.values())
            added = _size(_format_member(entry)) + (1 if merged else 0)
            if size + added > MAX_BYTES:
                log.debug("baggage over %d bytes: %r left out", MAX_BYTES, entry.key)
                continue
            merged[entry.key] = entry
            size += added
    return tuple(merged.values())


def entries_of(extra: Mapping[str, Any] | None) -> tuple[BaggageEntry, ...]:
    """The baggage carried in a context's or span's ``extra``.

    >>> entries_of({'baggage': (BaggageEntry('a', '1'),)})
    (BaggageEntry(key='a', value='1', properties=''),)
    """
    if not extra:
        return ()
    entries: Any = extra.get(BAGGAGE, ())
    if entries.__class__ is tuple or isinstance(entries, (tuple, list)):
        return entries  # type: ignore[return-value]  # a hand-made list is read as a tuple
    log.debug("ignoring extra['baggage'] of type %s", type(entries).__name__)
    return ()


def inject(context: ContextLike, carrier: Any) -> None:
    """Write the baggage of ``context`` (if any) as a ``baggage`` header on ``carrier``."""
    extra = context.extra
    entries = entries_of(extra) if extra else ()
    text = _formatted(entries) if entries else ""
    if carrier.__class__ is dict:
        if text:
            carrier[BAGGAGE] = text
        else:
            carrier.pop(BAGGAGE, None)  # left from an earlier inject into the same headers
    elif text:
        set_header(carrier, BAGGAGE, text)


def extract(carrier: Any) -> tuple[BaggageEntry, ...]:
    """The baggage in ``carrier``'s headers (an empty tuple if none).

    Baggage carries no trace ids, so unlike the other formats this returns the entries; use
    :func:`with_baggage` to attach them to a context.

    >>> extract({'baggage': 'a=1'})
    (BaggageEntry(key='a', value='1', properties=''),)
    """
    if carrier.__class__ is dict:
        entries = extract_dict(carrier, is_environ(carrier))
        if entries is not SLOW:
            return entries  # type: ignore[no-any-return]
    values = reader_for(carrier).all(BAGGAGE, MAX_READ_LENGTH)
    return parse_baggage(values) if values else ()


_ENVIRON_KEY = environ_key(BAGGAGE)
_NAMES = NameSet([BAGGAGE])


def extract_dict(carrier: dict[Any, Any], environ: bool, exact: bool = False) -> Any:
    """:func:`extract` for a plain dict or WSGI environ, or :data:`~.carriers.SLOW`.

    ``exact``: the caller checked that the name is not spelled in another case.
    """
    value = carrier.get(_ENVIRON_KEY if environ else BAGGAGE)
    if value is None:
        if environ or exact or not has_other_case(carrier, _NAMES):
            return ()
        return SLOW
    if value.__class__ is not str or len(value) > MAX_READ_LENGTH:
        return SLOW
    return parse_baggage(value) if value else ()


def _replace_entries(
    extra: Mapping[str, Any] | None, entries: tuple[BaggageEntry, ...]
) -> dict[str, Any] | None:
    new_extra = dict(extra) if extra else {}
    if entries:
        new_extra[BAGGAGE] = entries
    else:
        new_extra.pop(BAGGAGE, None)
    return new_extra or None


def adopt_baggage(span: Span, entries: tuple[BaggageEntry, ...]) -> None:
    """Give ``span``, just started for a request that carried no valid trace context, the
    baggage that request carried: baggage travels on even when the trace starts anew.

    >>> import tomograph
    >>> span = tomograph.Tracer('api').start_span('handle')
    >>> adopt_baggage(span, (BaggageEntry('user', 'alice'),))
    >>> get_baggage(span)
    {'user': 'alice'}
    """
    if entries and not span.end_ns:
        # Children share their parent's extra mapping: replace it, never change it in place.
        span.extra = _replace_entries(span.extra, entries)


def replace_baggage(span: Span, entries: Iterable[BaggageEntry]) -> None:
    """Give the open ``span`` exactly ``entries`` as its baggage (within the limits of
    :func:`merge_baggage`); a finished span is never changed.

    For code that keeps baggage elsewhere and hands it over whole (the OpenTelemetry bridge).

    >>> import tomograph
    >>> span = tomograph.Tracer('api').start_span('handle')
    >>> replace_baggage(span, [BaggageEntry('user', 'alice')])
    >>> replace_baggage(span, [BaggageEntry('tenant', 'acme')])
    >>> get_baggage(span)
    {'tenant': 'acme'}
    """
    if not span.end_ns:
        # Children share their parent's extra mapping: replace it, never change it in place.
        span.extra = _replace_entries(span.extra, merge_baggage(entries))


def with_baggage(context: TraceContext, entries: Iterable[BaggageEntry]) -> TraceContext:
    """A copy of ``context`` whose baggage is ``entries``.

    >>> with_baggage(TraceContext(1, 2), [BaggageEntry('a', '1')]).extra
    {'baggage': (BaggageEntry(key='a', value='1', properties=''),)}
    """
    return context.replace(extra=_replace_entries(context.extra, tuple(entries)))


def _target(span: Span | None) -> Span | None:
    return CURRENT_SPAN.get() if span is None else span


def get_baggage_entries(span: Span | TraceContext | None = None) -> tuple[BaggageEntry, ...]:
    """The baggage entries (with properties) of ``span``, or of the current span."""
    target = CURRENT_SPAN.get() if span is None else span
    return entries_of(target.extra) if target is not None else ()


def get_baggage(span: Span | TraceContext | None = None) -> dict[str, str]:
    """The baggage of ``span`` (default: the current span) as a new ``{key: value}`` dict.

    Empty outside any span.
    """
    return {entry.key: entry.value for entry in get_baggage_entries(span)}


def get_baggage_item(key: str, span: Span | TraceContext | None = None) -> str | None:
    """One baggage value of ``span`` (default: the current span), or None."""
    for entry in get_baggage_entries(span):
        if entry.key == key:
            return entry.value
    return None


def set_baggage(key: str, value: str, properties: str = "", span: Span | None = None) -> None:
    """Set baggage ``key`` to ``value`` on ``span`` (default: the current span).

    Spans started afterwards under it inherit the baggage; it is sent on every inject. Does
    nothing outside any open span (logged at debug level): a finished span is never changed.
    Raises ValueError if ``key`` is not an HTTP token or ``properties`` are malformed.
    """
    if not is_valid_key(key):
        raise ValueError(f"baggage key {key!r} must be a non-empty HTTP token")
    if not isinstance(value, str):
        raise TypeError(f"baggage values must be str, not {type(value).__name__}")
    if properties and _parse_properties(properties.split(";")) is None:
        raise ValueError(f"malformed baggage properties {properties!r}")
    target = _target(span)
    if target is None or target.end_ns:
        log.debug("set_baggage(%r) outside any open span: ignored", key)
        return
    entries = entries_of(target.extra)
    new = BaggageEntry(key, value, properties)
    if any(entry.key == key for entry in entries):
        updated = tuple(new if entry.key == key else entry for entry in entries)
    else:
        updated = (*entries, new)
    # Children share their parent's extra mapping: replace it, never change it in place.
    target.extra = _replace_entries(target.extra, updated)


def remove_baggage(key: str, span: Span | None = None) -> None:
    """Remove baggage ``key`` from ``span`` (default: the current span), if present."""
    target = _target(span)
    if target is None or target.end_ns:
        return
    entries = entries_of(target.extra)
    if any(entry.key == key for entry in entries):
        remaining = tuple(entry for entry in entries if entry.key != key)
        target.extra = _replace_entries(target.extra, remaining)


#: The Python versions, also when the compiled ones are in use (tests compare the two).
PYTHON_FUNCTIONS = {"inject": inject, "extract_dict": extract_dict}
_compiled = install_compiled(
    "baggage", {**PYTHON_FUNCTIONS, "parsed_cache": _PARSED, "formatted_cache": _FORMATTED}
)
if _compiled is not None:
    # Cache hits without a Python frame: the numbers are in docs/core.md.
    inject, extract_dict = _compiled
