"""OpenTracing spans and span contexts backed by tomograph spans."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import opentracing
from opentracing import logs as ot_logs
from opentracing import tags as ot_tags

from tomograph.model import Endpoint, TagValue, TraceContext, coerce_kind
from tomograph.opentracing._text import with_baggage_extra
from tomograph.span import Span as TomographSpan

if TYPE_CHECKING:
    from tomograph.opentracing._tracer import Tracer

__all__ = ["Span", "SpanContext", "format_log_fields", "tag_value"]

_EMPTY: Mapping[str, str] = MappingProxyType({})
_PLAIN_TAG_TYPES = frozenset((str, int, float, bool))
_PEER_FIELDS = {
    ot_tags.PEER_SERVICE: "service_name",
    ot_tags.PEER_HOST_IPV4: "ipv4",
    ot_tags.PEER_HOST_IPV6: "ipv6",
    ot_tags.PEER_PORT: "port",
}


class SpanContext(opentracing.SpanContext):
    """The propagated part of a span: tomograph's :class:`TraceContext` plus baggage.

    Immutable: setting a baggage item on a span gives the span a new context.

    >>> from tomograph.model import TraceContext
    >>> ctx = SpanContext(TraceContext(1, 2, sampled=True), {'user': 'alice'})
    >>> ctx.trace_id, ctx.baggage
    (1, {'user': 'alice'})
    """

    __slots__ = ("_baggage", "_span", "trace_context")

    def __init__(
        self,
        trace_context: TraceContext,
        baggage: Mapping[str, str] | None = None,
        span: TomographSpan | None = None,
    ) -> None:
        self.trace_context = trace_context
        self._baggage: Mapping[str, str] = MappingProxyType(dict(baggage)) if baggage else _EMPTY
        #: The live local span this context belongs to; None for extracted (remote) contexts.
        self._span = span

    @property
    def baggage(self) -> dict[str, str]:
        """The baggage items (a copy: change baggage with ``span.set_baggage_item``)."""
        return dict(self._baggage)

    @property
    def trace_id(self) -> int:
        """The trace id (int)."""
        return self.trace_context.trace_id

    @property
    def span_id(self) -> int:
        """The span id (int)."""
        return self.trace_context.span_id

    @property
    def parent_id(self) -> int | None:
        """The parent span id, or None for a root span."""
        return self.trace_context.parent_id

    @property
    def sampled(self) -> bool | None:
        """The sampling decision, or None if deferred."""
        return self.trace_context.sampled

    def __repr__(self) -> str:
        return f"SpanContext({self.trace_context!r}, baggage={dict(self._baggage)!r})"


def tag_value(value: Any) -> TagValue:
    """An OpenTracing tag value as a tomograph tag value (str, int, float or bool).

    >>> tag_value(3), tag_value(['a'])
    (3, "['a']")
    """
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def format_log_fields(key_values: Mapping[str, Any]) -> str:
    """The note a log record becomes: the event alone, else ``key=value`` pairs.

    >>> format_log_fields({'event': 'cache miss'})
    'cache miss'
    >>> format_log_fields({'event': 'retry', 'attempt': 2})
    'event=retry attempt=2'
    """
    if len(key_values) == 1 and ot_logs.EVENT in key_values:
        return str(key_values[ot_logs.EVENT])
    return " ".join(f"{key}={value}" for key, value in key_values.items())


class Span(opentracing.Span):
    """An OpenTracing span recording into a tomograph span (:attr:`tomograph_span`).

    Tags become tags (``span.kind`` sets the kind, ``peer.*`` the remote endpoint, ``error``
    marks the span failed), logs become notes, baggage lives in the span context.
    """

    def __init__(self, tracer: Tracer, span: TomographSpan, baggage: Mapping[str, str] | None):
        # opentracing.Span.__init__ is not called: it would build the context eagerly, and most
        # spans never have their context read.
        self._tracer = tracer
        #: The tomograph span underneath: use it with tomograph's own API.
        self.tomograph_span = span
        self._baggage: Mapping[str, str] = _EMPTY
        self._context: SpanContext | None = None
        if baggage:
            self._baggage = baggage
            # Baggage lives in the tomograph span too, so its tomograph-instrumented children
            # inherit it and tomograph's propagators send it.
            span.extra = with_baggage_extra(span.context, baggage).extra

    # -- the OpenTracing 2 API --------------------------------------------------------------

    @property
    def context(self) -> SpanContext:
        """This span's :class:`SpanContext` (ids and baggage)."""
        context = self._context
        if context is None:
            span = self.tomograph_span
            context = self._context = SpanContext(span.context, self._baggage, span)
        return context

    @property
    def operation_name(self) -> str:
        """The span's name."""
        return self.tomograph_span.name

    def set_operation_name(self, operation_name: str) -> Span:
        """Rename the span; returns the span."""
        self.tomograph_span.name = operation_name
        return self

    def finish(self, finish_time: float | None = None) -> None:
        """Finish the span, at ``finish_time`` (epoch seconds) if given."""
        self.tomograph_span.finish(None if finish_time is None else int(finish_time * 1_000_000))

    def set_tag(self, key: str, value: Any) -> Span:
        """Set a tag; the standard ``span.kind``, ``peer.*``, ``error`` and
        ``sampling.priority`` tags change the span itself. Returns the span."""
        span = self.tomograph_span
        special = _SPECIAL_TAGS.get(key)
        if special is not None and special(self, value):
            return self
        if span.sampled:
            if value.__class__ not in _PLAIN_TAG_TYPES:
                value = tag_value(value)
            span.tags[key] = value
        return self

    def log_kv(self, key_values: Mapping[str, Any], timestamp: float | None = None) -> Span:
        """Record a log as a note; an ``error`` event with an exception marks the span failed."""
        span = self.tomograph_span
        event = key_values.get(ot_logs.EVENT)
        if event == ot_tags.ERROR:
            error = key_values.get(ot_logs.ERROR_OBJECT)
            if isinstance(error, BaseException):
                span.record_exception(error)
                return self
        if not span.sampled or not key_values:
            return self
        if event is not None and len(key_values) == 1:
            value = str(event)
        else:
            value = format_log_fields(key_values)
        if timestamp is None:
            span.annotate(value)
        else:
            span.annotate_at(value, int(timestamp * 1_000_000))
        return self

    def set_baggage_item(self, key: str, value: str) -> Span:
        """Set a baggage item that travels with this span's context; returns the span."""
        span = self.tomograph_span
        baggage = {**self._baggage, str(key): str(value)}
        if not span.finished:
            span.extra = with_baggage_extra(span.context, baggage).extra
        self._baggage = baggage
        self._context = None
        return self

    def get_baggage_item(self, key: str) -> str | None:
        """A baggage item of this span's context, or None."""
        return self._baggage.get(key)

    # -- the early OpenTracing API ----------------------------------------------------------

    def start_child(self, operation_name: str, tags: Mapping[str, Any] | None = None) -> Span:
        """Start a child span (early OpenTracing API)."""
        tracer: Tracer = self._tracer
        return tracer.start_span(operation_name, child_of=self, tags=tags)

    def add_tag(self, key: str, value: Any) -> Span:
        """Set a tag (early OpenTracing API for :meth:`set_tag`)."""
        return self.set_tag(key, value)

    def add_tags(self, tags: Mapping[str, Any]) -> Span:
        """Set several tags (early OpenTracing API)."""
        for key, value in tags.items():
            self.set_tag(key, value)
        return self

    def set_trace_attribute(self, key: str, value: str) -> Span:
        """Set a baggage item (early OpenTracing name for baggage)."""
        return self.set_baggage_item(key, value)

    def get_trace_attribute(self, key: str) -> str | None:
        """A baggage item (early OpenTracing name for baggage)."""
        return self.get_baggage_item(key)

    def info(self, message: str, *args: Any) -> Span:
        """Record a note, formatted like a logging call (early OpenTracing API)."""
        self.tomograph_span.annotate(message % args if args else message)
        return self

    def error(self, message: str, *args: Any) -> Span:
        """Record a note and mark the span failed (early OpenTracing API)."""
        text = message % args if args else message
        span = self.tomograph_span
        span.error = True
        span.tag("error", text)
        span.annotate(text)
        return self

    @property
    def trace_context(self) -> SpanContext:
        """This span's context (early OpenTracing name)."""
        return self.context

    def __repr__(self) -> str:
        return f"<opentracing Span over {self.tomograph_span!r}>"


def _set_kind(span: Span, value: Any) -> bool:
    try:
        span.tomograph_span.kind = coerce_kind(str(value) if value is not None else None)
    except ValueError:
        return False  # an unknown kind stays visible as a plain tag
    return True


def _set_peer(field: str) -> Any:
    def set_peer(span: Span, value: Any) -> bool:
        target = span.tomograph_span
        endpoint = target.remote_endpoint or Endpoint()
        if field == "port":
            try:
                value = int(value)
            except (TypeError, ValueError):
                return False
        else:
            value = str(value)
        target.remote_endpoint = endpoint._replace(**{field: value})
        return True

    return set_peer


def _set_error(span: Span, value: Any) -> bool:
    target = span.tomograph_span
    if value in (True, "true", "True", 1, "1"):
        target.error = True
        if target.sampled and "error" not in target.tags:
            target.tags["error"] = "true"
        return True
    if value in (False, "false", "False", 0, "0"):
        target.error = False
        if target.sampled:
            target.tags.pop("error", None)
        return True
    return False


def _set_sampling_priority(span: Span, value: Any) -> bool:
    """``sampling.priority`` > 0 records the span (as debug); 0 drops it."""
    try:
        priority = int(value)
    except (TypeError, ValueError):
        return False
    target = span.tomograph_span
    if target.finished:
        return True
    if priority > 0:
        target.set_sampling(True, debug=True)
    elif priority == 0:
        target.set_sampling(False)
    span._context = None  # the sampling flags changed: rebuild the context when next read
    return True


_SPECIAL_TAGS: dict[str, Any] = {
    ot_tags.SPAN_KIND: _set_kind,
    ot_tags.ERROR: _set_error,
    ot_tags.SAMPLING_PRIORITY: _set_sampling_priority,
    **{tag: _set_peer(field) for tag, field in _PEER_FIELDS.items()},
}
