"""Plain data of the trace model: span kinds, endpoints, notes and trace contexts.

Nothing here does I/O or keeps global state (beyond a bounded cache of built endpoints). The
recording span itself lives in :mod:`tomograph.span`.
"""

from __future__ import annotations

import enum
import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from tomograph._cache import memoize
from tomograph.text import printable

__all__ = [
    "Endpoint",
    "EventNote",
    "ExceptionNote",
    "LinkNote",
    "Note",
    "STATUS_CODE_TAG",
    "SpanKind",
    "TagValue",
    "TraceContext",
    "coerce_kind",
    "endpoint_for",
    "exception_text",
]

#: The tag that carries a status set through the OpenTelemetry API (``OK`` or ``ERROR``), as
#: OpenTelemetry's Zipkin mapping writes it; OTLP exports it as the span's status.
STATUS_CODE_TAG = "otel.status_code"

#: Values a tag may take: a str, int, float or bool, or a list or tuple of them (OpenTelemetry's
#: attribute types). Zipkin encoders write strings ("true"/"false", a list as a JSON array of
#: strings), OTLP keeps the types; see :mod:`tomograph.encoding.values`.
TagValue = str | int | float | bool | Sequence[str | int | float | bool]


class SpanKind(str, enum.Enum):
    """The role of a span in an exchange between processes (Zipkin's ``kind``).

    A span with no kind (``None``) is a local operation.
    """

    CLIENT = "CLIENT"
    SERVER = "SERVER"
    PRODUCER = "PRODUCER"
    CONSUMER = "CONSUMER"


_KINDS_BY_NAME: dict[Any, SpanKind | None] = {k.value.lower(): k for k in SpanKind}
_KINDS_BY_NAME.update({k.value: k for k in SpanKind})
_KINDS_BY_NAME.update({k: k for k in SpanKind})
_KINDS_BY_NAME.update({None: None, "local": None, "LOCAL": None, "": None})


def coerce_kind(kind: SpanKind | str | None) -> SpanKind | None:
    """Map ``'client'``, ``'SERVER'``, ``SpanKind.CLIENT``, ``None``/``'local'`` to a kind.

    >>> coerce_kind('client')
    <SpanKind.CLIENT: 'CLIENT'>
    """
    try:
        return _KINDS_BY_NAME[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown span kind {kind!r}: use client, server, producer, consumer or None"
        ) from None


class Endpoint(NamedTuple):
    """A network endpoint of a span: the service and where it runs.

    >>> Endpoint('billing', ipv4='10.0.0.7', port=8080).service_name
    'billing'
    """

    service_name: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    port: int | None = None


def _new_endpoint(service_name: str | None, host: Any, port: int | None) -> Endpoint:
    """An :class:`Endpoint` for ``host:port``; a host that is not an IP address is left out.

    Zipkin endpoints carry IP addresses only, so integrations also tag the host name
    (``server.address``) when it is not an address. ``[::1]`` (as URLs write it) is read
    without its brackets; a port of 0 or ``None`` is no port.

    >>> endpoint_for('postgresql', '127.0.0.1', 5432)
    Endpoint(service_name='postgresql', ipv4='127.0.0.1', ipv6=None, port=5432)
    >>> endpoint_for(None, 'db.example', 5432)
    Endpoint(service_name=None, ipv4=None, ipv6=None, port=5432)
    """
    ipv4 = ipv6 = None
    if host and isinstance(host, str):
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass  # a host name: resolving it here would block the application
        else:
            if address.version == 4:
                ipv4 = str(address)
            else:
                ipv6 = str(address)
    return Endpoint(service_name, ipv4, ipv6, port or None)


#: The endpoint for ``(service_name, host, port)``, built once per distinct triple (see
#: :func:`_new_endpoint`): spans made for the same peer share one Endpoint, which encoders cache by.
endpoint_for = memoize(_new_endpoint, 1024)


class Note(NamedTuple):
    """A timestamped event on a span (a Zipkin annotation).

    ``timestamp`` is in epoch microseconds; ``duration`` (microseconds) is optional, as classic
    tomograph allowed for notes that measure something.
    """

    timestamp: int
    value: str
    duration: int | None = None


def exception_text(type_name: str, message: str) -> str:
    """The note text of an exception: ``"Type: message"``, or the type alone without a message.

    >>> exception_text('ValueError', 'bad input'), exception_text('KeyboardInterrupt', '')
    ('ValueError: bad input', 'KeyboardInterrupt')
    """
    return f"{type_name}: {message}" if message else type_name


class ExceptionNote(str):
    """The note that records an exception on a span: its text is what Zipkin shows.

    The text is :func:`exception_text`; ``type_name``, ``message`` and the traceback's
    ``frames`` are kept beside it for backends that record exceptions as structured events
    (OTLP's ``exception`` event with ``exception.stacktrace``). Frames are ``(file name, line
    number, function name)``, outermost first, at most :data:`MAX_FRAMES` of the innermost;
    ``omitted`` counts the outer frames left out. Capturing reads no source lines and keeps no
    reference to the frames, so a recorded exception holds no locals alive.

    >>> try:
    ...     raise ValueError('bad input')
    ... except ValueError as error:
    ...     note = ExceptionNote.of(error)
    >>> note, note.type_name, note.message, len(note.frames)
    ('ValueError: bad input', 'ValueError', 'bad input', 1)
    """

    #: Most traceback frames kept (the innermost ones, where the exception was raised).
    MAX_FRAMES = 32

    type_name: str
    message: str
    frames: tuple[tuple[str, int, str], ...]
    omitted: int
    #: Attributes given with the exception (OpenTelemetry's ``record_exception(attributes=)``),
    #: exported on OTLP's ``exception`` event; ``None`` for tomograph's own.
    attributes: Mapping[str, TagValue] | None = None
    #: The module of the exception's class (``builtins`` for Python's own).
    module: str = "builtins"

    #: The attribute :meth:`first_line_only` sets on an exception.
    _FIRST_LINE_ONLY = "__tomograph_first_line_only__"
    #: How far :meth:`of` follows ``__cause__``/``__context__`` looking for that mark.
    _CHAIN_LIMIT = 8

    @property
    def qualified_type(self) -> str:
        """The class's fully-qualified name, as Python prints it under a traceback
        (``json.decoder.JSONDecodeError``; ``ValueError`` for Python's own): OTLP's
        ``exception.type``, as OpenTelemetry's semantic conventions ask."""
        if self.module in ("builtins", ""):
            return self.type_name
        return f"{self.module}.{self.type_name}"

    @classmethod
    def first_line_only(cls, exc: BaseException) -> None:
        """Record ``exc``, and exceptions raised from it or while handling it, with the first
        line of their message only, on every span that records them.

        For database errors, whose later lines may hold a statement's values (PostgreSQL's
        ``DETAIL: Key (email)=(...)``, SQLAlchemy's ``[parameters: ...]``): the SQL
        integrations mark them, and a request's or a task's span the error reaches keeps no
        more than the statement's span did.
        """
        try:
            setattr(exc, cls._FIRST_LINE_ONLY, True)
        except Exception:  # an exception type that takes no attributes: nothing to mark
            pass

    @classmethod
    def _wants_first_line_only(cls, exc: BaseException | None) -> bool:
        for _ in range(cls._CHAIN_LIMIT):
            if exc is None:
                return False
            if getattr(exc, "__dict__", {}).get(cls._FIRST_LINE_ONLY) is True:
                return True
            exc = exc.__cause__ or exc.__context__
        return False

    @classmethod
    def of(cls, exc: BaseException) -> ExceptionNote:
        """The note for ``exc``, with its type, message and traceback frames (the message's
        first line only if :meth:`first_line_only` marked it or an exception it came from)."""
        type_name = type(exc).__qualname__
        try:
            message = str(exc)
        except Exception:  # a broken __str__ must not replace the application's exception
            message = f"<unprintable {type_name}>"
        if cls._wants_first_line_only(exc):
            message = message.strip().split("\n", 1)[0].strip()
        frames: list[tuple[str, int, str]] = []
        traceback = exc.__traceback__
        while traceback is not None:
            code = traceback.tb_frame.f_code
            frames.append((code.co_filename, traceback.tb_lineno, code.co_name))
            traceback = traceback.tb_next
        note = cls(exception_text(type_name, message))
        note.type_name = type_name
        note.module = str(type(exc).__module__)
        note.message = message
        note.frames = tuple(frames[-cls.MAX_FRAMES :])
        note.omitted = max(0, len(frames) - cls.MAX_FRAMES)
        return note


def _attributes_json(name: str, attributes: Mapping[str, TagValue]) -> str:
    """``{"name": {attributes}}`` as JSON: how Zipkin shows an event or link with attributes
    (OpenTelemetry's Zipkin mapping, and what the collector makes of OTLP events).

    An int with more digits than Python writes in decimal is written in hex, as encoders do.
    """
    shown = {key: list(v) if isinstance(v, tuple) else v for key, v in attributes.items()}
    try:
        return _ATTRIBUTES_JSON({name: shown})
    except ValueError:  # an int past sys.get_int_max_str_digits(): rare, so checked only now
        return _ATTRIBUTES_JSON({name: {k: _decimal_or_hex(v) for k, v in shown.items()}})


def _decimal_or_hex(value: Any) -> Any:
    if isinstance(value, list):
        return [_decimal_or_hex(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            str(int(value))
        except ValueError:
            return hex(value)
    return value


#: One encoder for every event: json.dumps with options builds a JSONEncoder per call, which
#: is most of an event's cost (about 12,000 instructions of 20,000 for two attributes).
_ATTRIBUTES_JSON = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=printable).encode


class EventNote(str):
    """A note made from an OpenTelemetry event that has attributes.

    Its text, what Zipkin shows, is ``{"name": {attributes}}`` as JSON; ``name`` and
    ``attributes`` are kept beside it for OTLP, which exports them as an event with typed
    attributes. An event without attributes is a plain note.

    >>> note = EventNote.of('cache miss', {'key.count': 3})
    >>> note, note.name, note.attributes
    ('{"cache miss": {"key.count": 3}}', 'cache miss', {'key.count': 3})
    """

    name: str
    attributes: Mapping[str, TagValue]

    @classmethod
    def of(cls, name: str, attributes: Mapping[str, TagValue]) -> EventNote:
        """The note of event ``name`` with ``attributes`` (kept as given: pass a copy)."""
        note = cls(_attributes_json(name, attributes))
        note.name = name
        note.attributes = attributes
        return note


class LinkNote(str):
    """A link from a span to another span (OpenTelemetry's span links), kept as a note.

    Zipkin has no links: there it shows as the note ``{"link": {"spanId": ..., "traceId":
    ...}}`` (with the link's attributes), at the span's start. OTLP exports it as a link, with
    the linked span's ``tracestate`` (``extra['tracestate']`` pairs) and attributes.

    >>> note = LinkNote.of(TraceContext(0xABC, 0x12), {'reason': 'batch'})
    >>> print(note)  # doctest: +NORMALIZE_WHITESPACE
    {"link": {"reason": "batch", "spanId": "0000000000000012",
              "traceId": "00000000000000000000000000000abc"}}
    >>> note.context.span_id
    18
    """

    context: TraceContext
    attributes: Mapping[str, TagValue]

    @staticmethod
    def text(trace_id: str, span_id: str, attributes: Mapping[str, Any]) -> str:
        """The note's text for a link to hex ids ``trace_id``/``span_id`` (the collector writes
        the links of OTLP spans it receives the same way)."""
        shown = dict(attributes)
        shown["traceId"] = trace_id
        shown["spanId"] = span_id
        return _attributes_json("link", shown)

    @classmethod
    def of(cls, context: TraceContext, attributes: Mapping[str, TagValue]) -> LinkNote:
        """The note of a link to ``context``, with ``attributes`` (kept as given)."""
        note = cls(cls.text(f"{context.trace_id:032x}", f"{context.span_id:016x}", attributes))
        note.context = context
        note.attributes = attributes
        return note


class TraceContext:
    """The identity of a span as it crosses a boundary: what propagation reads and writes.

    Immutable. ``trace_id`` is an int from 1 to 2**128 - 1, ``span_id`` and ``parent_id`` ints
    from 1 to 2**64 - 1 (anything else is a ValueError: every format must be able to carry
    them). ``sampled`` is ``True``/``False``, or ``None`` when the decision is deferred to the
    receiver. ``extra`` carries format-specific state that must travel on unchanged (W3C
    ``tracestate``, baggage), keyed by format name.

    >>> ctx = TraceContext(trace_id=1, span_id=2, sampled=True)
    >>> ctx.trace_id, ctx.span_id, ctx.parent_id
    (1, 2, None)
    """

    __slots__ = ("debug", "extra", "parent_id", "sampled", "shared", "span_id", "trace_id")

    trace_id: int
    span_id: int
    parent_id: int | None
    sampled: bool | None
    debug: bool
    shared: bool
    extra: Mapping[str, Any] | None

    def __init__(
        self,
        trace_id: int,
        span_id: int,
        parent_id: int | None = None,
        sampled: bool | None = None,
        debug: bool = False,
        shared: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if trace_id.__class__ is not int or not 0 < trace_id <= _MAX_TRACE_ID:
            raise ValueError(f"trace_id must be an int from 1 to 2**128 - 1, not {trace_id!r}")
        if span_id.__class__ is not int or not 0 < span_id <= _MAX_SPAN_ID:
            raise ValueError(f"span_id must be an int from 1 to 2**64 - 1, not {span_id!r}")
        if parent_id is not None and (
            parent_id.__class__ is not int or not 0 < parent_id <= _MAX_SPAN_ID
        ):
            raise ValueError(
                f"parent_id must be None or an int from 1 to 2**64 - 1, not {parent_id!r}"
            )
        setter = object.__setattr__
        setter(self, "trace_id", trace_id)
        setter(self, "span_id", span_id)
        setter(self, "parent_id", parent_id)
        setter(self, "sampled", True if debug else sampled)
        setter(self, "debug", debug)
        setter(self, "shared", shared)
        setter(self, "extra", extra)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TraceContext is immutable; use replace()")

    def replace(self, **changes: Any) -> TraceContext:
        """A copy with some fields changed.

        >>> TraceContext(1, 2).replace(sampled=False).sampled
        False
        """
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return TraceContext(**fields)

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain values only: a context may be handed to another process (classic tomograph
        # passed trace info in RPC messages). Propagation formats never use pickle.
        return (TraceContext, tuple(getattr(self, name) for name in _INIT_ORDER))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceContext):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash((self.trace_id, self.span_id, self.parent_id, self.sampled))

    def __repr__(self) -> str:
        parent = f"{self.parent_id:016x}" if self.parent_id else None
        return (
            f"TraceContext(trace_id={self.trace_id:x}, span_id={self.span_id:016x}, "
            f"parent_id={parent}, sampled={self.sampled}, debug={self.debug})"
        )


_MAX_TRACE_ID = (1 << 128) - 1
_MAX_SPAN_ID = (1 << 64) - 1
_INIT_ORDER = ("trace_id", "span_id", "parent_id", "sampled", "debug", "shared", "extra")
