"""OpenTelemetry API spans that record into tomograph spans, and OpenTelemetry's values mapped
to tomograph's.

What maps to what (see docs/opentelemetry.md):

* attributes -> tags, with OpenTelemetry's rules: a str, bool, int or float, or a sequence of
  one of those types (``None`` items allowed); bytes are kept as the text they hold (UTF-8);
  anything else is dropped and logged once per key;
* events -> notes (:class:`~tomograph.model.EventNote` when they have attributes);
* ``record_exception`` -> an exception note; status ERROR -> a failed span (Zipkin's ``error``
  tag, OTLP's status) and the tag ``otel.status_code``; OK -> ``otel.status_code=OK``, final;
* links -> :class:`~tomograph.model.LinkNote` notes (OTLP links);
* the span context: tomograph's ids, ``sampled`` as the trace flags, tracestate as trace state.

The span counts of OpenTelemetry's SDK bound what a span keeps (:class:`SpanLimits`); what is
dropped past them is counted in the tags ``otel.dropped_attributes_count``,
``otel.dropped_events_count`` and ``otel.dropped_links_count``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from opentelemetry import trace as trace_api
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

from tomograph._cache import BoundedCache, memoize
from tomograph.clock import monotonic_ns
from tomograph.config import opentelemetry_variable
from tomograph.model import (
    STATUS_CODE_TAG,
    EventNote,
    ExceptionNote,
    LinkNote,
    SpanKind,
    TagValue,
    TraceContext,
)
from tomograph.propagation.w3c import TRACESTATE
from tomograph.span import Span as TomographSpan
from tomograph.text import printable
from tomograph.tracer import get_tracer

__all__ = [
    "RemoteParent",
    "RemoteSpan",
    "Span",
    "SpanLimits",
    "clean_attributes",
    "is_mapping",
    "kind_of",
    "parent_of",
    "span_context_of",
    "status_description",
    "text_of",
    "trace_context_of",
]

log = logging.getLogger("tomograph.opentelemetry")

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_EMPTY_STATE = TraceState()
#: Epoch nanoseconds a timestamp given through the API may take (the span API's own range,
#: whose microseconds stay below (2**63) // 1000).
_MAX_EPOCH_NS = (1 << 63) // 1000 * 1000 - 1

_KINDS: dict[Any, SpanKind | None] = {
    trace_api.SpanKind.INTERNAL: None,
    trace_api.SpanKind.SERVER: SpanKind.SERVER,
    trace_api.SpanKind.CLIENT: SpanKind.CLIENT,
    trace_api.SpanKind.PRODUCER: SpanKind.PRODUCER,
    trace_api.SpanKind.CONSUMER: SpanKind.CONSUMER,
}
_OTEL_KINDS = {value: key for key, value in _KINDS.items()}


def text_of(value: object) -> str:
    """``value`` (a name, a description) as text: its ``str()``; an object whose ``str()``
    fails is named by its type instead of raising into the application.

    >>> text_of(12), text_of('plain')
    ('12', 'plain')
    """
    return value if value.__class__ is str else printable(value)


def status_description(exc: BaseException) -> str:
    """The status description of a span an exception left: ``Type: message``, as the SDK
    writes it (an exception whose message cannot be read must still reach the application)."""
    return f"{type(exc).__name__}: {printable(exc)}"


def kind_of(kind: Any) -> SpanKind | None:
    """tomograph's kind for an OpenTelemetry ``SpanKind`` (anything else is a local span)."""
    try:
        return _KINDS[kind]
    except (KeyError, TypeError):
        log.debug("unknown span kind %r: recorded as a local span", kind)
        return None


def _env_limit(*names: str, default: Any = 128) -> Any:
    for name in names:
        text = opentelemetry_variable(name)
        if text:
            try:
                value = int(text)
            except ValueError:
                log.warning("%s=%r is not a number: using %s", name, text, default)
                return default
            return max(0, value)
    return default


@dataclass(frozen=True)
class SpanLimits:
    """How much one span keeps: OpenTelemetry's SDK limits, from the same environment variables
    (``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` or ``OTEL_ATTRIBUTE_COUNT_LIMIT``,
    ``OTEL_SPAN_EVENT_COUNT_LIMIT``, ``OTEL_SPAN_LINK_COUNT_LIMIT``,
    ``OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT``, ``OTEL_LINK_ATTRIBUTE_COUNT_LIMIT``), 128 each by
    default; and the characters an attribute's text keeps
    (``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`` or ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``),
    unlimited by default."""

    attributes: int = 128
    events: int = 128
    links: int = 128
    event_attributes: int = 128
    link_attributes: int = 128
    #: Characters an attribute's text keeps (None: all of it, the SDK's default).
    attribute_length: int | None = None

    @classmethod
    def from_environment(cls) -> SpanLimits:
        """The limits the environment sets, the SDK's defaults otherwise."""
        common = ("OTEL_ATTRIBUTE_COUNT_LIMIT",)
        return cls(
            attributes=_env_limit("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", *common),
            events=_env_limit("OTEL_SPAN_EVENT_COUNT_LIMIT"),
            links=_env_limit("OTEL_SPAN_LINK_COUNT_LIMIT"),
            event_attributes=_env_limit("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", *common),
            link_attributes=_env_limit("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", *common),
            attribute_length=_env_limit(
                "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                default=None,
            ),
        )


# -- attribute values ---------------------------------------------------------------------------

_INVALID: Any = object()
_SCALARS = (bool, str, int, float)
#: Keys already warned about: one warning per key, not one per call.
_WARNED: BoundedCache[str, bool] = BoundedCache(256)


def _warn_once(key: object, reason: str) -> None:
    text = repr(key)[:100]
    if text not in _WARNED:
        _WARNED[text] = True
        log.warning("OpenTelemetry attribute %s dropped: %s", text, reason)


def _plain(value: bool | str | int | float) -> bool | str | int | float:
    """The plain ``str``, ``int`` or ``float`` of a subclass's value (an enum member, a
    subclass with its own ``__str__``): what encoders write is the value, never a method
    that might fail when the span is sent."""
    cls = value.__class__
    if cls is str or cls is int or cls is float or cls is bool:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    return float.__float__(value)


_BYTES = (bytes, bytearray)


def _bytes_text(value: bytes | bytearray) -> str:
    """A bytes value as the text it holds: OpenTelemetry keeps bytes attributes (a message
    key), tags are text (bytes that are not UTF-8 keep the rest, U+FFFD in their place)."""
    return bytes(value).decode("utf-8", "replace")


def _scalar_kind(item: object) -> type | None:
    return next((t for t in _SCALARS if isinstance(item, t)), None)


def _clean_value(key: object, value: object, max_length: int | None = None) -> Any:
    """``value`` as a tag value, or :data:`_INVALID` (logged): OpenTelemetry's attribute rules,
    text cut to ``max_length`` characters if given (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``)."""
    if key.__class__ is not str and not isinstance(key, str):
        _warn_once(key, "keys must be strings")
        return _INVALID
    if not key:
        _warn_once(key, "keys must not be empty")
        return _INVALID
    cls = value.__class__
    if cls is str:
        return value if max_length is None else value[:max_length]  # type: ignore[index]
    if cls is int or cls is float or cls is bool:
        return value
    if isinstance(value, _SCALARS):
        clean: Any = _plain(value)
    elif isinstance(value, _BYTES):
        clean = _bytes_text(value)
    elif isinstance(value, Sequence):
        kind: type | None = None
        for item in value:
            if item is None:
                continue
            item_kind = str if isinstance(item, _BYTES) else _scalar_kind(item)
            if item_kind is None:
                _warn_once(key, f"{type(item).__name__} is not an attribute value type")
                return _INVALID
            if kind is None:
                kind = item_kind
            elif item_kind is not kind:
                _warn_once(key, "sequence items must all have one type")
                return _INVALID
        # A copy (the caller may change its list afterwards), of plain values.
        clean = tuple(
            item
            if item is None
            else _bytes_text(item)
            if isinstance(item, _BYTES)
            else _plain(item)
            for item in value
        )
        if kind is str and max_length is not None:
            return tuple(item if item is None else item[:max_length] for item in clean)
        return clean
    else:
        _warn_once(key, f"{type(value).__name__} is not an attribute value type")
        return _INVALID
    if max_length is not None and clean.__class__ is str:
        return clean[:max_length]
    return clean


def is_mapping(attributes: object) -> bool:
    """Whether ``attributes`` is a mapping, as the API requires (a list of pairs, a common slip,
    is dropped and logged instead of raising into the application)."""
    if isinstance(attributes, Mapping):
        return True
    log.warning("OpenTelemetry attributes dropped: %s is not a mapping", type(attributes).__name__)
    return False


def clean_attributes(
    attributes: types.Attributes | Mapping[str, Any], limit: int, max_length: int | None = None
) -> dict[str, TagValue]:
    """The valid ones of ``attributes``, at most ``limit`` of them, as tag values (text cut to
    ``max_length`` characters if given).

    >>> clean_attributes({'a': 1, 'b': [1, 2], 'c': {'no': 'maps'}, 'd': [1, 'x']}, 128)
    {'a': 1, 'b': (1, 2)}
    """
    clean: dict[str, TagValue] = {}
    if not attributes or (attributes.__class__ is not dict and not is_mapping(attributes)):
        return clean
    for key, given in attributes.items():
        value = _clean_value(key, given, max_length)
        if value is not _INVALID and (len(clean) < limit or key in clean):
            clean[key] = value
    return clean


def _count_dropped(span: TomographSpan, what: str) -> None:
    tags = span.tags
    key = f"otel.dropped_{what}_count"
    count = tags.get(key, 0)
    tags[key] = (count if isinstance(count, int) else 0) + 1


def _is_epoch_ns(timestamp: object) -> bool:
    return (
        isinstance(timestamp, (int, float))
        and not isinstance(timestamp, bool)
        and 0 <= timestamp <= _MAX_EPOCH_NS  # "not" also refuses NaN
    )


def _monotonic_at(span: TomographSpan, timestamp: object) -> int:
    """Monotonic ns of the span's clock for epoch ns ``timestamp`` (now if None or invalid)."""
    if timestamp is None:
        return monotonic_ns()
    if _is_epoch_ns(timestamp):
        return int(cast(float, timestamp)) - span.epoch_offset_ns
    log.debug("timestamp %r is not epoch nanoseconds from 0 to 2**63 - 1: now used", timestamp)
    return monotonic_ns()


# -- span contexts ------------------------------------------------------------------------------


def _trace_state(members: tuple[tuple[str, str], ...]) -> TraceState:
    return TraceState(list(members))


_trace_state_of = memoize(_trace_state, 256)


def span_context_of(span: TomographSpan, is_remote: bool = False) -> SpanContext:
    """OpenTelemetry's ``SpanContext`` for a tomograph span (or a remote context's stand-in)."""
    extra = span.extra
    members = extra.get(TRACESTATE) if extra else None
    return SpanContext(
        span.trace_id,
        span.span_id,
        is_remote,
        _SAMPLED if span.sampled else _NOT_SAMPLED,
        _trace_state_of(tuple(members)) if members else _EMPTY_STATE,
    )


def trace_context_of(context: SpanContext) -> TraceContext | None:
    """tomograph's ``TraceContext`` for an OpenTelemetry ``SpanContext`` (None if invalid)."""
    if not context.is_valid:
        return None
    state = context.trace_state
    extra = {TRACESTATE: tuple(state.items())} if state else None
    try:
        return TraceContext(
            context.trace_id,
            context.span_id,
            sampled=context.trace_flags.sampled,
            shared=False,
            extra=extra,
        )
    except ValueError:  # ids out of tomograph's ranges: not a context anything can carry
        return None


class RemoteSpan(NonRecordingSpan):
    """The OpenTelemetry span of a context extracted by tomograph's propagator: it keeps the
    whole ``TraceContext`` (debug flag, baggage, tracestate), so a span started under it gets
    all of it, not only what ``SpanContext`` carries."""

    def __init__(self, trace_context: TraceContext) -> None:
        self.trace_context = trace_context
        state = trace_context.extra.get(TRACESTATE) if trace_context.extra else None
        super().__init__(
            SpanContext(
                trace_context.trace_id,
                trace_context.span_id,
                True,
                _SAMPLED if trace_context.sampled else _NOT_SAMPLED,
                _trace_state_of(tuple(state)) if state else _EMPTY_STATE,
            )
        )


def parent_of(otel_span: object) -> TomographSpan | TraceContext | None:
    """What an OpenTelemetry span found in a context stands for as a parent, or as what to
    inject: the tomograph span under one made by tomograph, the whole extracted context of a
    :class:`RemoteSpan`, the span context of any other valid span, else None (as the API reads
    anything that is not a span as no span)."""
    if otel_span is None:
        return None
    if isinstance(otel_span, Span):
        return otel_span.tomograph_span
    if otel_span.__class__ is RemoteSpan:
        return otel_span.trace_context
    if not isinstance(otel_span, trace_api.Span):
        return None
    return trace_context_of(otel_span.get_span_context())


class RemoteParent(TomographSpan):
    """tomograph's current span while OpenTelemetry has a context whose span is not a
    tomograph one made current (an extracted remote context, another SDK's span).

    It is never reported. A span started under it is its remote child: it continues the trace
    under the stand-in's span id, and its sampler sees the stand-in's decision, as for a
    ``TraceContext`` parent (``Span`` treats any parent that is not exactly a ``Span`` so).
    """

    __slots__ = ("otel_span",)

    def __init__(self, otel_span: trace_api.Span, context: TraceContext) -> None:
        # Not Span.__init__: nothing is timed or recorded. Every field a child or a reader of
        # the current span looks at is set here.
        tracer = get_tracer()  # the default tracer of the moment
        self.otel_span = otel_span
        self._tracer = tracer
        self._token = None
        self._classic = False
        self.name = "remote parent"
        self.kind = None
        self.local_endpoint = tracer.local_endpoint
        self.remote_endpoint = None
        self.trace_id = context.trace_id
        self.span_id = context.span_id
        self.parent_id = context.parent_id
        self.sampled = context.sampled  # type: ignore[assignment]  # None: deferred downstream
        self.debug = context.debug
        self.shared = False
        self.extra = context.extra
        self.error = False
        self.tags = {}
        self.notes_raw = []
        self.start_ns = self.epoch_offset_ns = 0
        self.end_ns = -1  # finished: finish() and __exit__ report nothing


# -- the span -----------------------------------------------------------------------------------


class Span(trace_api.Span):
    """An OpenTelemetry API span recording into a tomograph span (:attr:`tomograph_span`).

    Unsampled tomograph spans are OpenTelemetry's non-recording spans: :meth:`is_recording`
    is False and everything but :meth:`end` does nothing, while the span context stays valid
    for propagation.
    """

    __slots__ = (
        "_context",
        "_limits",
        "_record_exception",
        "_set_status_on_exception",
        "tomograph_span",
    )

    def __init__(
        self,
        span: TomographSpan,
        limits: SpanLimits,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self.tomograph_span = span
        self._limits = limits
        self._context: SpanContext | None = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    # -- reading

    def get_span_context(self) -> SpanContext:
        """The span's ids, sampling flag and trace state."""
        context = self._context
        span = self.tomograph_span
        # Made again if the sampling decision changed since (tomograph's set_sampling: a debug
        # request, OpenTracing's sampling.priority): the flags are the span's of the moment.
        if context is None or context.trace_flags is not (
            _SAMPLED if span.sampled else _NOT_SAMPLED
        ):
            context = self._context = span_context_of(span)
        return context

    def is_recording(self) -> bool:
        """True while the span is sampled and not ended."""
        span = self.tomograph_span
        return bool(span.sampled) and not span.end_ns

    @property
    def name(self) -> str:
        """The span's name."""
        return self.tomograph_span.name

    @property
    def kind(self) -> trace_api.SpanKind:
        """The span's kind, as OpenTelemetry names it."""
        kind: trace_api.SpanKind = _OTEL_KINDS[self.tomograph_span.kind]
        return kind

    @property
    def attributes(self) -> Mapping[str, TagValue]:
        """The span's attributes (tomograph's tags), read-only."""
        from types import MappingProxyType

        return MappingProxyType(self.tomograph_span.tags)

    # -- recording

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """Set one attribute (a tag); invalid values are dropped and logged once per key."""
        span = self.tomograph_span
        if not span.sampled or span.end_ns:
            return
        cls = value.__class__
        clean: Any
        max_length = self._limits.attribute_length
        if (
            key.__class__ is str
            and key
            and (cls is int or cls is float or cls is bool or (cls is str and max_length is None))
        ):
            clean = value  # valid as it is: no call, ~700 instructions less (instrumentations
            # set a dozen attributes per request this way)
        else:
            clean = _clean_value(key, value, max_length)
            if clean is _INVALID:
                return
        tags = span.tags
        if len(tags) >= self._limits.attributes and key not in tags:
            _count_dropped(span, "attributes")
            return
        tags[key] = clean

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """Set several attributes."""
        span = self.tomograph_span
        if not span.sampled or span.end_ns or not attributes:
            return
        if attributes.__class__ is not dict and not is_mapping(attributes):
            return
        tags = span.tags
        limit = self._limits.attributes
        max_length = self._limits.attribute_length
        for key, given in attributes.items():
            value = _clean_value(key, given, max_length)
            if value is _INVALID:
                continue
            if len(tags) >= limit and key not in tags:
                _count_dropped(span, "attributes")
                continue
            tags[key] = value

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        """Add a note; an event with attributes keeps them (see :class:`EventNote`)."""
        span = self.tomograph_span
        if not span.sampled or span.end_ns:
            return
        notes = span.notes_raw
        if len(notes) >= self._limits.events and _events(notes) >= self._limits.events:
            _count_dropped(span, "events")
            return
        if name.__class__ is not str:
            name = text_of(name)
        at = monotonic_ns() if timestamp is None else _monotonic_at(span, timestamp)
        if attributes:
            clean = clean_attributes(
                attributes, self._limits.event_attributes, self._limits.attribute_length
            )
            notes.append((at, EventNote.of(name, clean) if clean else name, None))
        else:
            notes.append((at, name, None))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Link this span to another span (kept as a :class:`LinkNote`)."""
        span = self.tomograph_span
        if span.sampled and not span.end_ns:
            _add_link(span, self._limits, context, attributes)

    def update_name(self, name: str) -> None:
        """Rename the span."""
        span = self.tomograph_span
        if span.sampled and not span.end_ns:
            span.name = text_of(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """Set the status: ERROR fails the span, OK is final, UNSET is ignored (the SDK's rules)."""
        span = self.tomograph_span
        if not span.sampled or span.end_ns:
            return
        if isinstance(status, Status):
            code = status.status_code
            description = status.description
        else:
            code = status
        tags = span.tags
        if code is StatusCode.UNSET or tags.get(STATUS_CODE_TAG) == "OK":
            return
        if code is StatusCode.OK:
            if tags.get(STATUS_CODE_TAG) == "ERROR":
                tags.pop("error", None)
            span.error = False
            tags[STATUS_CODE_TAG] = "OK"
        elif code is StatusCode.ERROR:
            span.error = True
            tags[STATUS_CODE_TAG] = "ERROR"
            if description:
                tags["error"] = text_of(description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Add an exception note (OTLP: an ``exception`` event with its stack trace).

        As in OpenTelemetry, this alone does not fail the span: :meth:`set_status` does.
        """
        span = self.tomograph_span
        if not span.sampled or span.end_ns:
            return
        if not isinstance(cast(object, exception), BaseException):  # a misuse, seen in the wild
            log.debug("record_exception(%r) needs an exception: ignored", type(exception))
            return
        note = ExceptionNote.of(exception)
        if attributes:
            note.attributes = clean_attributes(
                attributes, self._limits.event_attributes, self._limits.attribute_length
            )
        at = monotonic_ns() if timestamp is None else _monotonic_at(span, timestamp)
        span.notes_raw.append((at, note, None))

    def end(self, end_time: int | None = None) -> None:
        """End the span (at ``end_time``, epoch ns, if given) and report it if sampled."""
        span = self.tomograph_span
        if span.end_ns:
            log.debug("end() called again on %r: ignored", span)
            return
        if end_time is None or not span.sampled:
            span.finish()
        elif _is_epoch_ns(end_time):
            span.finish(int(end_time) // 1000)
        else:
            log.debug("end time %r is not epoch nanoseconds: the span ends now", end_time)
            span.finish()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        # As the SDK's span: an exception leaving ``with span:`` is recorded and fails it.
        if exc is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, status_description(exc)))
        self.end()

    def __eq__(self, other: object) -> bool:
        # A tomograph span seen through OpenTelemetry may get a new view on each look.
        if isinstance(other, Span):
            return other.tomograph_span is self.tomograph_span
        return NotImplemented

    def __hash__(self) -> int:
        return id(self.tomograph_span)

    def __repr__(self) -> str:
        return f"<OpenTelemetry span over {self.tomograph_span!r}>"


def _events(notes: Iterable[tuple[int, str, int | None]]) -> int:
    return sum(1 for _, value, _ in notes if not isinstance(value, LinkNote))


def _add_link(
    span: TomographSpan,
    limits: SpanLimits,
    context: object,
    attributes: types.Attributes | Mapping[str, Any],
) -> None:
    """Keep a link to ``context`` on ``span`` (an invalid context with no attributes is not a link,
    as in the SDK)."""
    target = trace_context_of(context) if isinstance(context, SpanContext) else None
    if target is None:
        log.debug("link to an invalid span context %r: dropped", context)
        return
    notes = span.notes_raw
    if len(notes) >= limits.links and len(notes) - _events(notes) >= limits.links:
        _count_dropped(span, "links")
        return
    clean = (
        clean_attributes(attributes, limits.link_attributes, limits.attribute_length)
        if attributes
        else {}
    )
    notes.append((span.start_ns, LinkNote.of(target, clean), None))
