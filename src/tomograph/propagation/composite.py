"""The composite propagator: several wire formats at once, chosen by name.

Format names (for ``tomograph.configure(propagation=[...])`` and ``TOMOGRAPH_PROPAGATION``):

``w3c`` (alias ``tracecontext``)
    ``traceparent`` and ``tracestate`` (:mod:`tomograph.propagation.w3c`).
``baggage``
    W3C ``baggage`` (:mod:`tomograph.propagation.baggage`).
``b3`` (alias ``b3multi``)
    Writes the ``X-B3-*`` headers; reads those or the single ``b3`` header.
``b3single``
    Writes the single ``b3`` header; reads either form.
``xtraceinfo`` (alias ``x-trace-info``)
    tomograph's own ``X-Trace-Info`` header (:mod:`tomograph.propagation.xtraceinfo`).
``jaeger``
    ``uber-trace-id``, with baggage as ``uberctx-*`` (:mod:`tomograph.propagation.jaeger`).

Note that OpenTelemetry's ``OTEL_PROPAGATORS`` calls the single header ``b3``; here ``b3``
writes the multi-header form, which every B3 implementation reads.

``default``
    tomograph's defaults: when writing ``w3c, baggage, b3``, when reading
    ``w3c, b3, xtraceinfo, jaeger, baggage``. ``default,xtraceinfo`` also writes X-Trace-Info
    (what the default wrote before, for receivers that read nothing else).

Injecting writes every configured format. Extracting tries the configured id formats in order
and takes the first valid one; baggage is then added to it. The default injects
``w3c, baggage, b3`` (W3C for OpenTelemetry and most current tracers, B3 for Zipkin's: Brave,
zipkin-go, py_zipkin, Envoy; ``baggage`` only when there is some) and extracts
``w3c, b3, xtraceinfo, jaeger`` plus ``baggage``. X-Trace-Info is read but no longer written:
tracestate's ``tomograph`` member carries what it added to W3C (the debug flag and the parent
id).

Baggage is one set of entries, whatever carries it: ``baggage`` (W3C) and ``jaeger``
(``uberctx-*``) each write all of it, and extracting merges what each configured format read
into one baggage, a key present in both taking W3C's value (it keeps properties).

What travels in ``TraceContext.extra`` (and ``Span.extra``, inherited by child spans), so that
any format can pass it on:

``extra['tracestate']``
    Other vendors' W3C tracestate members: a tuple of ``(key, value)`` pairs, in order.
``extra['baggage']``
    W3C baggage: a tuple of :class:`~tomograph.propagation.baggage.BaggageEntry`.

``extra`` mappings are shared between a span and its children: replace them, never change them in
place.

>>> from tomograph.model import TraceContext
>>> propagator = Propagator(['w3c', 'b3'])
>>> headers = {}
>>> propagator.inject(TraceContext(1, 2, sampled=True), headers)
>>> sorted(headers)
['traceparent', 'tracestate', 'x-b3-sampled', 'x-b3-spanid', 'x-b3-traceid']
>>> propagator.extract(headers).span_id
2
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from tomograph.model import TraceContext
from tomograph.propagation import b3, baggage, jaeger, w3c, xtraceinfo
from tomograph.propagation._context import ContextLike, install_compiled, set_fresh_extra
from tomograph.propagation.baggage import BaggageEntry
from tomograph.propagation.carriers import (
    SLOW,
    NameSet,
    drop_other_cases,
    environ_key,
    has_other_case,
    is_environ,
    known_pairs,
    log,
    reader_for,
)
from tomograph.tracer import configure_from_environment

__all__ = [
    "DEFAULT_EXTRACT",
    "DEFAULT_INJECT",
    "DEFAULT_NAME",
    "FORMAT_NAMES",
    "Propagator",
    "default_propagator",
    "extract",
    "inject",
    "parse_format_names",
    "propagator_from",
    "set_default_propagator",
    "set_default_propagator_factory",
]

Injector = Callable[[ContextLike, Any], None]
Extractor = Callable[[Any], TraceContext | None]

_INJECTORS: dict[str, Injector] = {
    "w3c": w3c.inject,
    "baggage": baggage.inject,
    "b3": b3.inject,
    "b3single": b3.inject_single,
    "xtraceinfo": xtraceinfo.inject,
    "jaeger": jaeger.inject,
}
_EXTRACTORS: dict[str, Extractor] = {
    "w3c": w3c.extract,
    "b3": b3.extract,
    "b3single": b3.extract,
    "xtraceinfo": xtraceinfo.extract,
    "jaeger": jaeger.extract_ids,
}
#: The headers each format writes (lower case).
_HEADER_NAMES: dict[str, tuple[str, ...]] = {
    "w3c": (w3c.TRACEPARENT, w3c.TRACESTATE),
    "baggage": (baggage.BAGGAGE,),
    "b3": (b3.TRACE_ID, b3.SPAN_ID, b3.PARENT_SPAN_ID, b3.SAMPLED, b3.FLAGS),
    "b3single": (b3.SINGLE,),
    "xtraceinfo": (xtraceinfo.HEADER,),
    "jaeger": (jaeger.HEADER,),
}
#: Fast paths for dicts and WSGI environs: ``extract_dict(carrier, environ, exact)``.
_DICT_EXTRACTORS: dict[str, Callable[..., Any]] = {
    "w3c": w3c.extract_dict,
    "b3": b3.extract_dict,
    "b3single": b3.extract_dict,
    "xtraceinfo": xtraceinfo.extract_dict,
    "jaeger": jaeger.extract_dict,
}
#: The headers whose presence means a format may hold a context (lower case).
_PRESENCE: dict[str, tuple[str, ...]] = {
    "w3c": (w3c.TRACEPARENT,),
    "b3": b3.PRESENCE,
    "b3single": b3.PRESENCE,
    "xtraceinfo": (xtraceinfo.HEADER,),
    "jaeger": (jaeger.HEADER,),
}
_ENVIRON_BAGGAGE = environ_key(baggage.BAGGAGE)
#: Every name any format reads (``jaeger-baggage`` is read, never written).
_ALL_NAMES = NameSet(
    [*(header for names in _HEADER_NAMES.values() for header in names), jaeger.BAGGAGE_HEADER]
)
#: The headers whose presence means some format may carry baggage.
_BAGGAGE_NAMES = NameSet([baggage.BAGGAGE, jaeger.HEADER, jaeger.BAGGAGE_HEADER])
_BAGGAGE_ENVIRON_KEYS = frozenset(environ_key(name) for name in _BAGGAGE_NAMES.names)
#: The headers whose presence means Jaeger baggage may be there, as dict and environ keys.
_JAEGER_BAGGAGE_KEYS = (jaeger.HEADER, jaeger.BAGGAGE_HEADER)
_JAEGER_BAGGAGE_ENVIRON_KEYS = tuple(environ_key(name) for name in _JAEGER_BAGGAGE_KEYS)
_ALIASES = {
    "tracecontext": "w3c",
    "traceparent": "w3c",
    "b3multi": "b3",
    "x-trace-info": "xtraceinfo",
    "uber-trace-id": "jaeger",
}
#: Every format name understood (aliases included).
FORMAT_NAMES = frozenset(_INJECTORS) | frozenset(_ALIASES)

#: What the default propagator writes: one header set for OpenTelemetry and one for Zipkin.
DEFAULT_INJECT = ("w3c", "baggage", "b3")
#: What the default propagator reads: every format that carries trace ids, then baggage.
DEFAULT_EXTRACT = ("w3c", "b3", "xtraceinfo", "jaeger", "baggage")
#: The name that stands for the defaults in a list (``default,xtraceinfo``).
DEFAULT_NAME = "default"


def parse_format_names(
    names: str | Iterable[str], default: tuple[str, ...] = DEFAULT_INJECT
) -> tuple[str, ...]:
    """Canonical format names from a comma-separated string or a list; ValueError if unknown.

    The name ``default`` stands for the formats in ``default``.

    >>> parse_format_names('tracecontext, B3')
    ('w3c', 'b3')
    >>> parse_format_names('default, xtraceinfo')
    ('w3c', 'baggage', 'b3', 'xtraceinfo')
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    result: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"propagation format names are strings, not {item!r}")
        name = item.strip().lower()
        if not name:
            continue
        name = _ALIASES.get(name, name)
        if name == DEFAULT_NAME:
            result.extend(format for format in default if format not in result)
            continue
        if name not in _INJECTORS:
            known = ", ".join(sorted(FORMAT_NAMES | {DEFAULT_NAME}))
            raise ValueError(f"unknown propagation format {item.strip()!r} (known: {known})")
        if name not in result:
            result.append(name)
    if not result:
        raise ValueError("no propagation format named")
    return tuple(result)


class Propagator:
    """Injects and extracts trace context in several formats.

    ``inject`` and ``extract`` are lists (or comma-separated strings) of format names (see the
    module docstring). ``extract`` defaults to the ``inject`` list when that is given; each
    defaults to tomograph's defaults otherwise. ``default`` in a list means the defaults of
    its side.

    >>> Propagator(['w3c', 'baggage'])
    Propagator(inject=['w3c', 'baggage'], extract=['w3c', 'baggage'])
    >>> Propagator('default,xtraceinfo').inject_formats
    ('w3c', 'baggage', 'b3', 'xtraceinfo')
    """

    __slots__ = (
        "_baggage_in",
        "_dict_plan",
        "_dict_state",
        "_environ_keys",
        "_environ_plan",
        "_extractors",
        "_header_keys",
        "_injectors",
        "_jaeger_baggage_in",
        "_known",
        "_names",
        "extract_formats",
        "inject_formats",
    )

    def __init__(
        self,
        inject: str | Iterable[str] | None = None,
        extract: str | Iterable[str] | None = None,
    ) -> None:
        if extract is None:
            extract = DEFAULT_EXTRACT if inject is None else inject
        self.inject_formats = parse_format_names(DEFAULT_INJECT if inject is None else inject)
        self.extract_formats = parse_format_names(extract, DEFAULT_EXTRACT)
        self._injectors = tuple(_INJECTORS[name] for name in self.inject_formats)
        self._names = frozenset(
            header for name in self.inject_formats for header in _HEADER_NAMES[name]
        )
        extractors = []
        for name in self.extract_formats:
            extractor = _EXTRACTORS.get(name)
            if extractor is not None and extractor not in extractors:
                extractors.append(extractor)
        self._extractors = tuple(extractors)
        self._baggage_in = "baggage" in self.extract_formats
        self._jaeger_baggage_in = "jaeger" in self.extract_formats
        # Per format, once: the keys that show it is present, its fast path and its general
        # extractor. A request that carries none of the keys costs a few dict lookups.
        dict_plan: list[tuple[tuple[str, ...], Callable[..., Any], Extractor]] = []
        environ_plan: list[tuple[tuple[str, ...], Callable[..., Any], Extractor]] = []
        seen: list[Extractor] = []
        for name in self.extract_formats:
            if name not in _EXTRACTORS or _EXTRACTORS[name] in seen:
                continue
            seen.append(_EXTRACTORS[name])
            keys = _PRESENCE[name]
            dict_plan.append((keys, _DICT_EXTRACTORS[name], _EXTRACTORS[name]))
            environ_keys = tuple(environ_key(key) for key in keys)
            environ_plan.append((environ_keys, _DICT_EXTRACTORS[name], _EXTRACTORS[name]))
        self._dict_plan = tuple(dict_plan)
        self._environ_plan = tuple(environ_plan)
        self._header_keys = frozenset(key for keys, _, _ in dict_plan for key in keys)
        self._environ_keys = frozenset(key for keys, _, _ in environ_plan for key in keys)
        # Every name any format reads (b3single reads the X-B3-* headers too): a superset
        # only sends more dicts to the general reader, never fewer.
        self._known = _ALL_NAMES
        self._dict_state = (
            self._dict_plan,
            self._environ_plan,
            self._header_keys,
            self._environ_keys,
            _ALL_NAMES,
            _ALL_NAMES.names,
            baggage.extract_dict if self._baggage_in else None,
            baggage.extract,
            jaeger.extract_baggage if self._jaeger_baggage_in else None,
            baggage.merge_baggage,
            has_other_case,
            _with_entries,
        )

    @property
    def injected_headers(self) -> frozenset[str]:
        """The header names :meth:`inject` writes (lower case).

        >>> sorted(Propagator(['w3c']).injected_headers)
        ['traceparent', 'tracestate']
        """
        return self._names

    @property
    def extracted_headers(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """The header names :meth:`extract` reads (lower case), and the prefixes of the
        names it reads by prefix (Jaeger's ``uberctx-`` baggage): for callers that must fetch
        headers one by one.

        >>> names, prefixes = Propagator(['w3c', 'jaeger']).extracted_headers
        >>> sorted(names), prefixes
        (['jaeger-baggage', 'traceparent', 'tracestate', 'uber-trace-id'], ('uberctx-',))
        """
        formats = set(self.extract_formats)
        if formats & {"b3", "b3single"}:
            formats |= {"b3", "b3single"}  # either reads both forms
        names = {header for name in formats for header in _HEADER_NAMES[name]}
        prefixes: tuple[str, ...] = ()
        if self._jaeger_baggage_in:
            names.add(jaeger.BAGGAGE_HEADER)
            prefixes = (jaeger.BAGGAGE_PREFIX,)
        return frozenset(names), prefixes

    def inject(self, context: ContextLike, carrier: Any) -> None:
        """Write ``context`` (a ``TraceContext`` or a span) in every format onto ``carrier``.

        Raises TypeError if ``carrier`` is not something headers can be written to. Names are
        written in lower case; in a dict, the same names in another case are removed first.
        """
        if carrier.__class__ is dict and carrier:
            drop_other_cases(carrier, self._names)
        for injector in self._injectors:
            injector(context, carrier)

    def extract(self, carrier: Any) -> TraceContext | None:
        """The first valid context in ``carrier`` (with baggage added), or None.

        Never raises: bad input means None, and the reason is logged at debug level on the
        ``tomograph.propagation`` logger.
        """
        try:
            kind = type(carrier)
            if kind is dict:
                context = _extract_dict(self._dict_state, carrier, False, None)
            elif kind is list or kind is tuple:
                context = _extract_pairs(self._dict_state, carrier)
            else:
                context = SLOW
        except Exception as error:
            return _extraction_failed(error)
        return _extract_read(self, carrier) if context is SLOW else context

    def extract_baggage(self, carrier: Any) -> tuple[BaggageEntry, ...]:
        """The baggage in ``carrier`` if baggage is configured (for requests with no trace ids).

        Never raises. A dict, environ or list of pairs without any header that may carry
        baggage costs a few lookups.
        """
        if not (self._baggage_in or self._jaeger_baggage_in):
            return ()
        try:
            if not _may_carry_baggage(carrier):
                return ()
            return self._baggage(carrier, self._baggage_in, self._jaeger_baggage_in)
        except Exception as error:
            log.debug("extracting baggage failed: %r", error)
            return ()

    @staticmethod
    def _baggage(carrier: Any, w3c_in: bool, jaeger_in: bool) -> tuple[BaggageEntry, ...]:
        """The baggage of every configured format in ``carrier``, merged (W3C's wins)."""
        entries = baggage.extract(carrier) if w3c_in else ()
        if jaeger_in:
            found = jaeger.extract_baggage(carrier)
            if found:
                entries = baggage.merge_baggage(entries, found) if entries else found
        return entries

    def __repr__(self) -> str:
        return (
            f"Propagator(inject={list(self.inject_formats)!r}, "
            f"extract={list(self.extract_formats)!r})"
        )


def _extract_read(propagator: Propagator, carrier: Any) -> TraceContext | None:
    """:meth:`Propagator.extract` of any carrier, through a case-insensitive header reader:
    for what the dict and pair fast paths leave to it."""
    try:
        reader = reader_for(carrier)
        for extractor in propagator._extractors:
            context = extractor(reader)
            if context is not None:
                break
        else:
            return None
        entries = propagator._baggage(reader, propagator._baggage_in, propagator._jaeger_baggage_in)
        return _with_entries(context, entries) if entries else context
    except Exception as error:
        return _extraction_failed(error)


def _extraction_failed(error: Exception) -> TraceContext | None:
    """What :meth:`Propagator.extract` answers when reading raised: None, logged."""
    log.debug("extracting trace context failed: %r", error)
    return None


def _may_carry_baggage(carrier: Any) -> bool:
    """False only when ``carrier`` surely has no header any format reads baggage from."""
    kind = carrier.__class__
    if kind is dict:
        if is_environ(carrier):
            return not carrier.keys().isdisjoint(_BAGGAGE_ENVIRON_KEYS)
        return not carrier.keys().isdisjoint(_BAGGAGE_NAMES.names) or has_other_case(
            carrier, _BAGGAGE_NAMES
        )
    if kind is list or kind is tuple:
        return bool(known_pairs(carrier, _BAGGAGE_NAMES))
    return True


def _with_entries(context: TraceContext, entries: tuple[BaggageEntry, ...]) -> TraceContext:
    """``context``, which a format's extractor has just made for this call, with ``entries`` as
    its baggage."""
    extra = context.extra
    return set_fresh_extra(
        context, {**extra, baggage.BAGGAGE: entries} if extra else {baggage.BAGGAGE: entries}
    )


def _extract_dict(state: tuple[Any, ...], carrier: dict[Any, Any], known: bool, source: Any) -> Any:
    """:meth:`Propagator.extract` for a dict or WSGI environ, or SLOW when the general path must
    decide. ``state`` is the propagator's ``_dict_state``.

    Formats whose headers are absent are skipped before any parsing. ``known``: the dict
    holds lower-case header names only, those :func:`known_pairs` found in ``source``.
    """
    (
        dict_plan,
        environ_plan,
        header_keys,
        environ_keys,
        names,
        known_names,
        baggage_extract_dict,
        baggage_extract,
        jaeger_extract_baggage,
        merge_baggage,
        other_case,
        with_entries,
    ) = state
    if known:
        if carrier.keys().isdisjoint(header_keys):
            return None
        plan = dict_plan
        environ = False
    elif "REQUEST_METHOD" in carrier or "wsgi.version" in carrier:
        # A WSGI environ: HTTP_* keys are exact, so absence is one dict lookup per key.
        if carrier.keys().isdisjoint(environ_keys):
            return None
        plan = environ_plan
        environ = True
    else:
        # A plain dict: lower-case keys are looked up exactly; a name spelled in another
        # case (or a non-string key) sends the request to the case-insensitive reader.
        # A dict of exact names only (headers a propagator wrote) is told by one C call.
        if not known_names.issuperset(carrier) and other_case(carrier, names):
            return SLOW
        if carrier.keys().isdisjoint(header_keys):
            return None
        plan = dict_plan
        environ = False
    for keys, fast, general in plan:
        for key in keys:
            if key in carrier:
                break
        else:
            continue
        context = fast(carrier, environ, True)
        if context is SLOW:
            context = general(carrier)
        if context is not None:
            break
    else:
        return None
    entries: tuple[BaggageEntry, ...] = ()
    if (
        baggage_extract_dict is not None
        and (_ENVIRON_BAGGAGE if environ else baggage.BAGGAGE) in carrier
    ):
        entries = baggage_extract_dict(carrier, environ, True)
        if entries is SLOW:
            entries = baggage_extract(carrier)
    if jaeger_extract_baggage is not None:
        for key in _JAEGER_BAGGAGE_ENVIRON_KEYS if environ else _JAEGER_BAGGAGE_KEYS:
            if key in carrier:
                # uberctx-* names are not among the known ones: read the carrier itself.
                found = jaeger_extract_baggage(source if known else carrier)
                if found:
                    entries = merge_baggage(entries, found) if entries else found
                break
    return with_entries(context, entries) if entries else context


def _extract_pairs(state: tuple[Any, ...], pairs: list[Any] | tuple[Any, ...]) -> Any:
    """:meth:`Propagator.extract` for a list or tuple of ``(name, value)`` pairs (ASGI's raw
    headers), or SLOW: the known headers read in one pass, then read as a dict of them."""
    return _extract_dict(state, known_pairs(pairs, state[_NAMES_IN_STATE]), True, pairs)


#: Where ``_dict_state`` holds the NameSet of every name read (see :func:`_extract_dict`).
_NAMES_IN_STATE = 4

#: The Python versions, also when the compiled ones are in use (tests compare the two).
PYTHON_FUNCTIONS = {"_extract_dict": _extract_dict, "_extract_pairs": _extract_pairs}
#: The Python :meth:`Propagator.extract`, also when the compiled one is in use.
PYTHON_EXTRACT = Propagator.extract
_compiled = install_compiled(
    "composite",
    {
        **PYTHON_FUNCTIONS,
        "extract": PYTHON_EXTRACT,
        "Propagator": Propagator,
        "extract_read": _extract_read,
        "extraction_failed": _extraction_failed,
        "SLOW": SLOW,
        "environ_baggage": _ENVIRON_BAGGAGE,
        "baggage": baggage.BAGGAGE,
        "jaeger_keys": _JAEGER_BAGGAGE_KEYS,
        "jaeger_environ_keys": _JAEGER_BAGGAGE_ENVIRON_KEYS,
    },
)
if _compiled is not None:
    # The same steps without the interpreter: 7,300 -> 4,600 instructions for an environ with a
    # traceparent (the numbers: docs/core.md). Propagator.extract in C saves the Python frame
    # every server request pays for it (with the name tables' byte matching, an ASGI request
    # with a traceparent went from 35,000 to 32,500 instructions).
    _extract_dict, _extract_pairs, Propagator.extract = _compiled  # type: ignore[method-assign]


_default: Propagator | None = None
_default_lock = threading.Lock()


def _configure_tracing() -> Propagator:
    """The first default before a factory is installed: configuring tracing from the environment
    (``tomograph.config``) installs the factory used from then on."""
    configure_from_environment()
    factory = _default_factory
    return Propagator() if factory is _configure_tracing else factory()


_default_factory: Callable[[], Propagator] = _configure_tracing


def propagator_from(value: Propagator | str | Iterable[str] | None) -> Propagator:
    """The propagator ``configure(propagation=value)`` means; ValueError for a bad value.

    ``None`` (or an empty string) means the default formats.

    >>> propagator_from('w3c,b3').inject_formats
    ('w3c', 'b3')
    """
    if isinstance(value, Propagator):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        return Propagator()
    return Propagator(value)


def default_propagator() -> Propagator:
    """The propagator set by ``tomograph.configure()``, else one made on first use (from the
    environment's ``TOMOGRAPH_PROPAGATION``: see :mod:`tomograph.config`).

    >>> default_propagator() is default_propagator()
    True
    """
    global _default
    propagator = _default
    if propagator is not None:
        return propagator
    propagator = _default_factory()
    with _default_lock:
        # configure() may have set one while the first was made: that one wins.
        if _default is None:
            _default = propagator
        return _default


def set_default_propagator(propagator: Propagator | None) -> None:
    """Make ``propagator`` the default (``None``: make one again on next use)."""
    global _default
    with _default_lock:
        _default = propagator


def set_default_propagator_factory(factory: Callable[[], Propagator]) -> None:
    """How :func:`default_propagator` makes the default when none is set (``factory`` must not
    raise). :mod:`tomograph.config` installs one that reads ``TOMOGRAPH_PROPAGATION``; without
    it, the default formats are used.
    """
    global _default_factory
    _default_factory = factory


def inject(context: ContextLike, carrier: Any) -> None:
    """Write ``context`` onto ``carrier`` in every configured format.

    >>> from tomograph.model import TraceContext
    >>> headers = {}
    >>> inject(TraceContext(1, 2, sampled=True), headers)
    >>> headers['traceparent']
    '00-00000000000000000000000000000001-0000000000000002-01'
    """
    default_propagator().inject(context, carrier)


def extract(carrier: Any) -> TraceContext | None:
    """The first valid context in ``carrier`` in a configured format, or None. Never raises.

    >>> extract({'b3': '0000000000000001-0000000000000002-1'}).sampled
    True
    """
    return default_propagator().extract(carrier)
