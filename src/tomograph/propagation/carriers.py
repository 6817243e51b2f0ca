"""Reading and writing HTTP headers on whatever object carries them, case-insensitively.

Extraction reads from:

- plain mappings (``dict``, ``requests``' ``CaseInsensitiveDict``, ...): names are matched
  case-insensitively; values may be ``str``, ``bytes`` or lists of them;
- WSGI environs (any mapping with ``REQUEST_METHOD`` or ``wsgi.version``): ``traceparent`` is read
  from ``HTTP_TRACEPARENT``, ``X-B3-TraceId`` from ``HTTP_X_B3_TRACEID``;
- sequences of ``(name, value)`` pairs (ASGI's raw headers, ``http.client`` header lists);
- objects with a ``headers`` attribute: WebOb and Werkzeug requests, Tornado's
  ``HTTPServerRequest``, ``http.server.BaseHTTPRequestHandler`` (an ``email.message.Message``),
  ``urllib.request.Request``;
- header containers themselves (``email.message.Message``, Tornado ``HTTPHeaders``, Werkzeug
  ``Headers``, multidicts).

Injection writes to mappings (lower-case names, replacing a value set before),
``urllib.request.Request`` (``add_header``), ``http.client.HTTPConnection`` between
``putrequest`` and ``endheaders`` (``putheader``), ``email.message.Message`` (replacing), lists of
pairs (appended), and objects whose ``headers`` is one of these (``requests.PreparedRequest``,
``httpx.Request``, Tornado ``HTTPRequest``).

Repeated headers: :meth:`HeaderReader.first` gives the first value (B3's rule),
:meth:`HeaderReader.all` every value in order (W3C ``tracestate`` and ``baggage`` are combined).
:meth:`HeaderReader.prefixed` lists the headers whose name starts with a prefix (Jaeger's
``uberctx-*``); in a WSGI environ, where ``-`` and ``_`` are both ``_``, it gives ``-``.
A value longer than the caller's limit is treated as absent and logged at debug level on the
``tomograph.propagation`` logger: hostile input costs no more than reading its length.

>>> reader = reader_for({'X-B3-TraceId': '80f198ee56343ba8'})
>>> reader.first('x-b3-traceid')
'80f198ee56343ba8'
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tomograph.propagation._context import install_compiled

__all__ = [
    "SingleHeaderExtractor",
    "HeaderReader",
    "MAX_HEADER_LENGTH",
    "NameSet",
    "SLOW",
    "drop_other_cases",
    "drop_prefixed",
    "environ_key",
    "has_other_case",
    "is_environ",
    "known_pairs",
    "reader_for",
    "set_header",
]

#: The longest header value read by default, in characters; longer values are ignored.
MAX_HEADER_LENGTH = 8192

log = logging.getLogger("tomograph.propagation")

#: What a format's ``extract_dict`` fast path returns when only the general reader can tell.
SLOW: Any = object()


def _text(value: Any) -> str | None:
    if value.__class__ is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        # HTTP header bytes are ISO-8859-1 (WSGI and ASGI agree); never fails.
        return bytes(value).decode("latin-1")
    return None


def _values(value: Any) -> list[str]:
    """One raw header value (a string, bytes, or a list of them) as a list of strings."""
    if value is None:
        return []
    text = _text(value)
    if text is not None:
        return [text]
    if isinstance(value, (list, tuple)):
        return [t for t in map(_text, value) if t is not None]
    return []


class HeaderReader:
    """Case-insensitive, read-only access to the headers of one carrier.

    Get one per request with :func:`reader_for` and read as many headers as needed: the
    composite propagator reads every format from one reader. Reading never raises.

    >>> reader_for({'HTTP_TRACEPARENT': 'x', 'REQUEST_METHOD': 'GET'}).first('traceparent')
    'x'
    """

    __slots__ = ()

    def all(self, name: str, limit: int = MAX_HEADER_LENGTH) -> list[str]:
        """Every value of header ``name`` (lower case), in order; values over ``limit`` dropped."""
        try:
            values = self._raw(name)
        except Exception as error:
            # A carrier of a kind we could not foresee: no context rather than a broken request.
            log.debug("reading %s header failed: %r", name, error)
            return []
        for value in values:
            if len(value) > limit:
                log.debug("ignoring %s header: %d characters (limit %d)", name, len(value), limit)
                return [v for v in values if len(v) <= limit]
        return values

    def first(self, name: str, limit: int = MAX_HEADER_LENGTH) -> str | None:
        """The first value of header ``name`` (lower case), or None; None if over ``limit``."""
        try:
            values = self._raw(name)
        except Exception as error:
            log.debug("reading %s header failed: %r", name, error)
            return None
        if not values:
            return None
        return _within(name, values[0], limit)

    def prefixed(
        self, prefix: str, limit: int = MAX_HEADER_LENGTH, max_count: int = 256
    ) -> list[tuple[str, str]]:
        """``(name, value)`` of the headers whose lower-case name starts with ``prefix`` (lower
        case), in the carrier's order, names in lower case: the first ``max_count`` of them,
        less those whose value is over ``limit``.

        Costs a pass over the header names: read it only when the format is known to be
        present.
        """
        try:
            found = self._prefixed(prefix, max_count)
        except Exception as error:
            log.debug("reading %s* headers failed: %r", prefix, error)
            return []
        kept = [(name, value) for name, value in found if len(value) <= limit]
        if len(kept) < len(found):
            log.debug(
                "ignoring %d %s* headers over %d characters", len(found) - len(kept), prefix, limit
            )
        return kept

    def _raw(self, name: str) -> list[str]:
        return []

    def _prefixed(self, prefix: str, max_count: int) -> list[tuple[str, str]]:
        return []


def _pairs_with_prefix(
    items: Iterable[tuple[Any, Any]], prefix: str, max_count: int
) -> list[tuple[str, str]]:
    """The first ``max_count`` ``(lower-case name, value)`` pairs among header ``items`` whose
    name has ``prefix``."""
    found: list[tuple[str, str]] = []
    for key, value in items:
        name = _name_with_prefix(key, prefix)
        if name is not None:
            found.extend((name, text) for text in _values(value))
            if len(found) >= max_count:
                return found[:max_count]
    return found


def _within(name: str, value: str, limit: int) -> str | None:
    if len(value) > limit:
        log.debug("ignoring %s header: %d characters (limit %d)", name, len(value), limit)
        return None
    return value


class _MappingReader(HeaderReader):
    """A dict or other mapping of header names (any case) to values."""

    __slots__ = ("_index", "_mapping")

    def __init__(self, mapping: Mapping[Any, Any]) -> None:
        self._mapping = mapping
        self._index: dict[str, Any] | None = None

    def first(self, name: str, limit: int = MAX_HEADER_LENGTH) -> str | None:
        mapping = self._mapping
        if mapping.__class__ is dict:
            # The common case, written out: one dict lookup for a lower-case key.
            value = mapping.get(name)
            if value is None:
                index = self._index
                if index is None:
                    index = self._index = _lower_index(mapping)
                value = index.get(name)
                if value is None:
                    return None
            if value.__class__ is str:
                return _within(name, value, limit)
        return super().first(name, limit)

    def all(self, name: str, limit: int = MAX_HEADER_LENGTH) -> list[str]:
        mapping = self._mapping
        if mapping.__class__ is dict:
            value = mapping.get(name)
            if value.__class__ is str and len(value) <= limit:
                return [value]
        return super().all(name, limit)

    def _raw(self, name: str) -> list[str]:
        value = self._mapping.get(name)
        if value is None:
            index = self._index
            if index is None:
                index = self._index = _lower_index(self._mapping)
            value = index.get(name)
        return _values(value)

    def _prefixed(self, prefix: str, max_count: int) -> list[tuple[str, str]]:
        return _pairs_with_prefix(self._mapping.items(), prefix, max_count)


def _lower_index(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    # Built once per reader, only when a lower-case lookup missed: headers written by hand as
    # "X-B3-TraceId" still match, and each further miss costs one dict lookup.
    index: dict[str, Any] = {
        key.lower(): value for key, value in mapping.items() if key.__class__ is str
    }
    if len(index) == len(mapping):
        return index  # string keys only, and no two names differ only in case
    index = {}
    for key, value in mapping.items():
        text = _text(key)
        if text is None:
            continue
        lowered = text.lower()
        if lowered in index:
            index[lowered] = [*_values(index[lowered]), *_values(value)]
        else:
            index[lowered] = value
    return index


_ENVIRON_KEYS: dict[str, str] = {}


def environ_key(name: str) -> str:
    """The WSGI environ key of header ``name``.

    >>> environ_key('x-b3-traceid')
    'HTTP_X_B3_TRACEID'
    """
    return _environ_key(name)


def _environ_key(name: str) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.upper().replace("-", "_")
        if len(_ENVIRON_KEYS) < 256:  # header names come from code, but stay bounded anyway
            _ENVIRON_KEYS[name] = key
    return key


class _EnvironReader(HeaderReader):
    """A WSGI environ: header ``X-B3-TraceId`` is key ``HTTP_X_B3_TRACEID``."""

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    def first(self, name: str, limit: int = MAX_HEADER_LENGTH) -> str | None:
        environ = self._environ
        if environ.__class__ is dict:
            value = environ.get(_environ_key(name))
            if value is None:
                return None
            if value.__class__ is str:
                return _within(name, value, limit)
        return super().first(name, limit)

    def all(self, name: str, limit: int = MAX_HEADER_LENGTH) -> list[str]:
        environ = self._environ
        if environ.__class__ is dict:
            value = environ.get(_environ_key(name))
            if value is None:
                return []
            if value.__class__ is str and len(value) <= limit:
                return [value]
        return super().all(name, limit)

    def _raw(self, name: str) -> list[str]:
        return _values(self._environ.get(_environ_key(name)))

    def _prefixed(self, prefix: str, max_count: int) -> list[tuple[str, str]]:
        key_prefix = _environ_key(prefix)
        found: list[tuple[str, str]] = []
        for key, value in self._environ.items():
            if key.__class__ is str and key.startswith(key_prefix):
                name = key[5:].lower().replace("_", "-")
                found.extend((name, text) for text in _values(value))
                if len(found) >= max_count:
                    return found[:max_count]
        return found


class _ListReader(HeaderReader):
    """A header container with a per-name list method (Tornado, Werkzeug, multidict, email)."""

    __slots__ = ("_container", "_getlist")

    def __init__(self, container: Any, getlist: Any) -> None:
        self._container = container
        self._getlist = getlist

    def _raw(self, name: str) -> list[str]:
        found = self._getlist(name)
        return _values(found) if found else []

    def _prefixed(self, prefix: str, max_count: int) -> list[tuple[str, str]]:
        # Each name once, whatever its case or how often it repeats; the list method gives
        # its values (these containers look names up case-insensitively).
        names: dict[str, Any] = {}
        for key in self._container.keys():  # noqa: SIM118  # iterating Werkzeug Headers gives pairs
            name = _name_with_prefix(key, prefix)
            if name is not None:
                names.setdefault(name, key)
                if len(names) >= max_count:
                    break
        found = [(name, value) for name, key in names.items() for value in self._raw(key)]
        return found[:max_count]


class _MultiDictReader(_ListReader):
    """multidict's ``CIMultiDict`` and proxies (aiohttp's headers): ``getall`` with a default.

    Without the default, ``getall`` raises ``KeyError`` for each header a propagator looks for
    and does not find; catching those cost an aiohttp request about 30 µs.
    """

    __slots__ = ()

    def _raw(self, name: str) -> list[str]:
        found = self._getlist(name, ())
        return _values(found) if found else []


class _PairsReader(HeaderReader):
    """A sequence of ``(name, value)`` pairs, e.g. ASGI's raw headers."""

    __slots__ = ("_pairs",)

    def __init__(self, carrier: Any) -> None:
        pairs = []
        for item in carrier:
            if isinstance(item, (list, tuple)) and len(item) == 2:
                name, value = _text(item[0]), _text(item[1])
                if name is not None and value is not None:
                    pairs.append((name.lower(), value))
        self._pairs = pairs

    def _raw(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def _prefixed(self, prefix: str, max_count: int) -> list[tuple[str, str]]:
        return _pairs_with_prefix(self._pairs, prefix, max_count)


_NOTHING = HeaderReader()


def _is_environ(carrier: Mapping[Any, Any]) -> bool:
    return "REQUEST_METHOD" in carrier or "wsgi.version" in carrier


#: Whether a mapping is a WSGI environ (headers under ``HTTP_*`` keys).
is_environ = _is_environ


class NameSet:
    """Lower-case header names, prepared for :func:`has_other_case` (built once, at import).

    >>> NameSet(['b3', 'x-b3-traceid']).lengths == frozenset({2, 12})
    True
    """

    __slots__ = ("lengths", "names")

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.lengths = frozenset(len(name) for name in self.names)


def known_pairs(pairs: list[Any] | tuple[Any, ...], names: NameSet) -> dict[str, Any]:
    """The headers among ``names`` in a sequence of ``(name, value)`` pairs (ASGI's raw headers).

    Keys are lower-case names; a value is a string, or a list of strings when the header is
    repeated (in order). Pairs are read as the general reader reads them: bytes are ISO-8859-1,
    items that are not pairs of text are skipped. Every other header costs a length check.

    >>> known_pairs([(b'Traceparent', b'x'), (b'accept', b'*/*')], NameSet(['traceparent']))
    {'traceparent': 'x'}
    """
    lengths = names.lengths
    wanted = names.names
    found: dict[str, Any] = {}
    for item in pairs:
        if item.__class__ is tuple or item.__class__ is list or isinstance(item, (list, tuple)):
            if len(item) != 2:
                continue
            raw_name = item[0]
            if (raw_name.__class__ is bytes or raw_name.__class__ is str) and len(
                raw_name
            ) not in lengths:
                continue  # cannot be a wanted name: skipped without decoding
            name = _text(raw_name)
            if name is None:
                continue
            name = name.lower()
            if name not in wanted:
                continue
            value = _text(item[1])
            if value is None:
                continue
            earlier = found.get(name)
            if earlier is None:
                found[name] = value
            elif earlier.__class__ is list:
                earlier.append(value)
            else:
                found[name] = [earlier, value]
    return found


def has_other_case(carrier: dict[Any, Any], names: NameSet) -> bool:
    """Whether a dict may hold one of ``names`` under a key that is not that exact name.

    True for a key spelling a name in another case (``X-B3-TraceId``), and for any non-string
    key (bytes names are decoded by the general reader). When this is False, a missing
    lower-case key means the header is absent: fast paths need no case-insensitive index.

    >>> has_other_case({'X-B3-TraceId': '1', 'accept': '*/*'}, NameSet(['x-b3-traceid']))
    True
    >>> has_other_case({'x-b3-traceid': '1', 'Accept': '*/*'}, NameSet(['x-b3-traceid']))
    False
    """
    wanted = names.names
    if wanted.issuperset(carrier):
        return False  # only exact names (headers a propagator just wrote): one C-level pass
    lengths = names.lengths
    for key in carrier:
        if key.__class__ is not str:
            return True
        # Only a key of a wanted length can match: most keys cost one set lookup.
        if len(key) in lengths and key not in wanted and key.lower() in wanted:
            return True
    return False


def reader_for(carrier: Any) -> HeaderReader:
    """A :class:`HeaderReader` for ``carrier`` (returned as is if it already is one).

    >>> reader_for({'X-B3-TraceId': '80f198ee56343ba8'}).first('x-b3-traceid')
    '80f198ee56343ba8'
    """
    if carrier.__class__ is dict:  # the common case, decided without attribute probes
        return _EnvironReader(carrier) if _is_environ(carrier) else _MappingReader(carrier)
    if isinstance(carrier, HeaderReader):
        return carrier
    try:
        return _reader_for_object(carrier)
    except Exception as error:
        log.debug("cannot read headers from a %s: %r", type(carrier).__name__, error)
        return _NOTHING


def _reader_for_object(carrier: Any) -> HeaderReader:
    if not isinstance(carrier, Mapping):
        # A request object: prefer its WSGI environ (WebOb, Werkzeug), else its headers.
        environ = getattr(carrier, "environ", None)
        if isinstance(environ, Mapping) and "REQUEST_METHOD" in environ:
            return _EnvironReader(environ)
        headers = getattr(carrier, "headers", None)
        if headers is not None:
            carrier = headers
    if isinstance(carrier, Mapping) and _is_environ(carrier):
        return _EnvironReader(carrier)
    # Multi-valued header containers, recognised by their per-name list method.
    for method in ("get_list", "getlist", "getall"):
        getlist = getattr(carrier, method, None)
        if getlist is not None:
            if method == "getall" and type(carrier).__module__.startswith("multidict"):
                return _MultiDictReader(carrier, getlist)
            return _ListReader(carrier, getlist)
    if hasattr(carrier, "get_all") and hasattr(carrier, "keys"):  # email.message.Message
        return _ListReader(carrier, carrier.get_all)
    if isinstance(carrier, Mapping):
        return _MappingReader(carrier)
    if isinstance(carrier, (list, tuple)):
        return _PairsReader(carrier)
    log.debug("cannot read headers from a %s: no trace context", type(carrier).__name__)
    return _NOTHING


def set_header(carrier: Any, name: str, value: str) -> None:
    """Write header ``name`` (lower case) on ``carrier``, replacing an earlier value.

    >>> headers = {}
    >>> set_header(headers, 'b3', '0')
    >>> headers
    {'b3': '0'}
    """
    if carrier.__class__ is dict:
        carrier[name] = value
        return
    add_header = getattr(carrier, "add_header", None)
    if add_header is not None and hasattr(carrier, "full_url"):  # urllib.request.Request
        add_header(name, value)
        return
    putheader = getattr(carrier, "putheader", None)
    if putheader is not None:  # http.client.HTTPConnection, between putrequest and endheaders
        putheader(name, value)
        return
    if hasattr(carrier, "get_all") and hasattr(carrier, "replace_header"):
        # email.message.Message: item assignment appends, so delete every old value first.
        del carrier[name]
        carrier[name] = value
        return
    if isinstance(carrier, list):
        raw = bool(carrier) and isinstance(carrier[0], (list, tuple)) and bool(carrier[0])
        raw = raw and isinstance(carrier[0][0], bytes)
        carrier[:] = [item for item in carrier if not _same_name(item, name)]
        if raw:
            carrier.append((name.encode("latin-1"), value.encode("latin-1")))  # ASGI-style
        else:
            carrier.append((name, value))
        return
    if hasattr(carrier, "__setitem__"):
        carrier[name] = value
        return
    headers = getattr(carrier, "headers", None)
    if headers is not None and headers is not carrier:
        set_header(headers, name, value)
        return
    raise TypeError(f"cannot write headers to a {type(carrier).__name__}")


def drop_other_cases(carrier: dict[Any, Any], names: frozenset[str]) -> None:
    """Remove keys of ``carrier`` that spell one of ``names`` (lower case) in another case.

    Injection writes lower-case names; without this a dict holding ``Traceparent`` from
    elsewhere would send two traceparent headers.

    >>> headers = {'X-B3-TraceId': 'old', 'Accept': '*/*'}
    >>> drop_other_cases(headers, frozenset({'x-b3-traceid'}))
    >>> headers
    {'Accept': '*/*'}
    """
    stale = [
        key for key in carrier if key.__class__ is str and key.lower() in names and key not in names
    ]
    for key in stale:
        del carrier[key]


def drop_prefixed(carrier: Any, prefix: str) -> None:
    """Remove the headers whose name starts with ``prefix`` (lower case) from a dict or a list of
    pairs; other carriers are left as they are.

    Injection writes a variable set of names under a prefix (Jaeger's ``uberctx-*``): injecting
    again into the same headers must not leave names written the first time.

    >>> headers = {'uberctx-user': 'a', 'Uberctx-Old': 'b', 'accept': '*/*'}
    >>> drop_prefixed(headers, 'uberctx-')
    >>> headers
    {'accept': '*/*'}
    """
    if carrier.__class__ is dict:
        stale = [key for key in carrier if _name_with_prefix(key, prefix) is not None]
        for key in stale:
            del carrier[key]
    elif isinstance(carrier, list):
        carrier[:] = [
            item
            for item in carrier
            if not (
                isinstance(item, (list, tuple))
                and item
                and _name_with_prefix(item[0], prefix) is not None
            )
        ]


def _name_with_prefix(key: Any, prefix: str) -> str | None:
    """Header name ``key`` in lower case if it starts with ``prefix`` (lower case), else None."""
    if key.__class__ is str:  # the common case, without a call
        return key.lower() if key[: len(prefix)].lower() == prefix else None
    name = _text(key)
    if name is None or name[: len(prefix)].lower() != prefix:
        return None
    return name.lower()


def _same_name(item: Any, name: str) -> bool:
    if isinstance(item, (list, tuple)) and item:
        key = _text(item[0])
        return key is not None and key.lower() == name
    return False


class SingleHeaderExtractor:
    """``extract`` and ``extract_dict`` for a format carried in one header (X-Trace-Info, Jaeger).

    ``extract(carrier)`` reads the header (at most ``max_length`` characters) and returns
    ``parse(value)``; ``extract_dict(carrier, environ, exact)`` is its fast path for a plain
    dict or WSGI environ, returning :data:`SLOW` when the case-insensitive reader must decide.
    """

    __slots__ = ("_environ_key", "_names", "header", "max_length", "parse")

    def __init__(self, header: str, max_length: int, parse: Callable[[str], Any]) -> None:
        self.header = header
        self.max_length = max_length
        self.parse = parse
        self._environ_key = environ_key(header)
        self._names = NameSet([header])

    def extract(self, carrier: Any) -> Any:
        """The parsed header on ``carrier``, or None if it is absent or invalid."""
        if carrier.__class__ is dict:
            context = self.extract_dict(carrier, is_environ(carrier))
            if context is not SLOW:
                return context
        value = reader_for(carrier).first(self.header, self.max_length)
        return None if value is None else self.parse(value)

    def extract_dict(self, carrier: dict[Any, Any], environ: bool, exact: bool = False) -> Any:
        """:meth:`extract` for a plain dict or WSGI environ, or :data:`SLOW`.

        ``exact``: the caller checked that the name is not spelled in another case.
        """
        value = carrier.get(self._environ_key if environ else self.header)
        if value is None:
            if environ or exact or not has_other_case(carrier, self._names):
                return None
            return SLOW
        if value.__class__ is not str or len(value) > self.max_length:
            return SLOW
        return self.parse(value)


#: The Python versions, also when the compiled ones are in use (tests compare the two).
PYTHON_FUNCTIONS = {"known_pairs": known_pairs}
_compiled = install_compiled("carriers", {**PYTHON_FUNCTIONS, "NameSet": NameSet})
if _compiled is not None:
    # An ASGI request's headers read in C: 13,000 of the 25,000 instructions of extracting
    # from its list of pairs (the numbers: docs/core.md).
    (known_pairs,) = _compiled
