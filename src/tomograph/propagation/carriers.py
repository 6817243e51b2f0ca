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
A value longer than the caller's limit is treated as absent and logged at debug level on the
``tomograph.propagation`` logger: hostile input costs no more than reading its length.

>>> reader = HeaderReader({'X-B3-TraceId': '80f198ee56343ba8'})
>>> reader.first('x-b3-traceid')
'80f198ee56343ba8'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["HeaderReader", "MAX_HEADER_LENGTH", "reader_for", "set_header"]

#: The longest header value read by default, in characters; longer values are ignored.
MAX_HEADER_LENGTH = 8192

log = logging.getLogger("tomograph.propagation")

_NOT_INDEXED: Any = object()


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
    """Case-insensitive, read-only access to the headers of any supported carrier.

    Build one per request with :func:`reader_for` (or the constructor) and read as many
    headers as needed: the composite propagator reads every format from one reader.

    >>> HeaderReader({'HTTP_TRACEPARENT': 'x', 'REQUEST_METHOD': 'GET'}).first('traceparent')
    'x'
    """

    __slots__ = ("_environ", "_getlist", "_index", "_mapping", "_pairs")

    def __init__(self, carrier: Any) -> None:
        self._mapping: Mapping[Any, Any] | None = None
        self._environ: Mapping[str, Any] | None = None
        self._getlist: Any = None
        self._pairs: list[tuple[str, str]] | None = None
        self._index: Any = _NOT_INDEXED
        if isinstance(carrier, HeaderReader):
            self._mapping, self._environ = carrier._mapping, carrier._environ
            self._getlist, self._pairs = carrier._getlist, carrier._pairs
            return
        if carrier.__class__ is dict:  # the common case, decided without attribute probes
            if "REQUEST_METHOD" in carrier or "wsgi.version" in carrier:
                self._environ = carrier
            else:
                self._mapping = carrier
            return
        if not isinstance(carrier, Mapping):
            # A request object: prefer its WSGI environ (WebOb, Werkzeug), else its headers.
            environ = getattr(carrier, "environ", None)
            if isinstance(environ, Mapping) and "REQUEST_METHOD" in environ:
                self._environ = environ
                return
            headers = getattr(carrier, "headers", None)
            if headers is not None:
                carrier = headers
        if isinstance(carrier, Mapping) and (
            "REQUEST_METHOD" in carrier or "wsgi.version" in carrier
        ):
            self._environ = carrier
            return
        # Multi-valued header containers, checked by the name of their per-name list method.
        for method in ("get_list", "getlist", "getall"):
            getlist = getattr(carrier, method, None)
            if getlist is not None:
                self._getlist = getlist
                return
        if hasattr(carrier, "get_all") and hasattr(carrier, "keys"):  # email.message.Message
            self._getlist = carrier.get_all
            return
        if isinstance(carrier, Mapping):
            self._mapping = carrier
            return
        if isinstance(carrier, (list, tuple)):
            pairs = []
            for item in carrier:
                if isinstance(item, (list, tuple)) and len(item) == 2:
                    name, value = _text(item[0]), _text(item[1])
                    if name is not None and value is not None:
                        pairs.append((name.lower(), value))
            self._pairs = pairs
            return
        log.debug("cannot read headers from a %s: no trace context", type(carrier).__name__)
        self._pairs = []

    def all(self, name: str, limit: int = MAX_HEADER_LENGTH) -> list[str]:
        """Every value of header ``name`` (lower case), in order; values over ``limit`` dropped."""
        values = self._raw(name)
        if not values:
            return values
        for value in values:
            if len(value) > limit:
                log.debug("ignoring %s header: %d characters (limit %d)", name, len(value), limit)
                return [v for v in values if len(v) <= limit]
        return values

    def first(self, name: str, limit: int = MAX_HEADER_LENGTH) -> str | None:
        """The first value of header ``name`` (lower case), or None; None if over ``limit``."""
        values = self._raw(name)
        if not values:
            return None
        value = values[0]
        if len(value) > limit:
            log.debug("ignoring %s header: %d characters (limit %d)", name, len(value), limit)
            return None
        return value

    def _raw(self, name: str) -> list[str]:
        try:
            if self._mapping is not None:
                mapping = self._mapping
                value = mapping.get(name)
                if value is None:
                    index = self._index
                    if index is _NOT_INDEXED:
                        index = self._index = self._lower_index(mapping)
                    if index is None:
                        return []
                    value = index.get(name)
                return _values(value)
            if self._environ is not None:
                return _values(self._environ.get("HTTP_" + name.upper().replace("-", "_")))
            if self._getlist is not None:
                found = self._getlist(name)
                return _values(found) if found else []
            if self._pairs is not None:
                return [value for key, value in self._pairs if key == name]
        except Exception as error:
            # A carrier of a kind we could not foresee: no context rather than a broken request.
            log.debug("reading %s header failed: %r", name, error)
        return []

    @staticmethod
    def _lower_index(mapping: Mapping[Any, Any]) -> dict[str, Any] | None:
        # Built once per reader, only when a lower-case lookup missed: headers written by hand
        # as "X-B3-TraceId" still match, and a missing header costs one dict lookup afterwards.
        index: dict[str, Any] = {}
        for key, value in mapping.items():
            text = _text(key)
            if text is None:
                continue
            lowered = text.lower()
            if lowered in index:
                index[lowered] = [*_values(index[lowered]), *_values(value)]
            else:
                index[lowered] = value
        return index or None


def reader_for(carrier: Any) -> HeaderReader:
    """A :class:`HeaderReader` for ``carrier`` (returned as is if it already is one).

    >>> reader_for({'b3': '0'}).first('b3')
    '0'
    """
    if carrier.__class__ is HeaderReader:
        return carrier
    return HeaderReader(carrier)


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
        carrier[:] = [item for item in carrier if not _same_name(item, name)]
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


def _same_name(item: Any, name: str) -> bool:
    if isinstance(item, (list, tuple)) and item:
        key = _text(item[0])
        return key is not None and key.lower() == name
    return False
