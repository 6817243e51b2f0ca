"""``tomograph.opentracing.Tracer``: the OpenTracing 2 API over a tomograph tracer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import opentracing
from opentracing import Format, Reference, ReferenceType
from opentracing import tags as ot_tags
from opentracing.scope_managers import ThreadLocalScopeManager

from tomograph.context import CURRENT_SPAN
from tomograph.model import SpanKind, TraceContext, coerce_kind
from tomograph.opentracing import binary
from tomograph.opentracing._span import Span, SpanContext
from tomograph.opentracing._text import extract_text, inject_text
from tomograph.propagation import Propagator
from tomograph.span import Span as TomographSpan
from tomograph.tracer import Tracer as TomographTracer
from tomograph.tracer import get_tracer

__all__ = ["Tracer"]

_TEXT_FORMATS = (Format.TEXT_MAP, Format.HTTP_HEADERS)


class Tracer(opentracing.Tracer):
    """An OpenTracing 2.4 tracer that records tomograph spans.

    ``tracer`` is the tomograph tracer to record with; by default the one
    :func:`tomograph.configure` set up (looked up at each span, so configuring later works).
    ``scope_manager`` defaults to OpenTracing's thread-local one; pass
    :class:`~tomograph.opentracing.ContextVarsScopeManager` for asyncio code and to make
    OpenTracing spans tomograph's current span. ``propagator`` (a
    :class:`tomograph.propagation.Propagator`, e.g. ``Propagator(['b3', 'baggage'])``) chooses
    the header formats of ``Format.TEXT_MAP``/``HTTP_HEADERS``; tomograph's default propagator
    otherwise.

    >>> import tomograph
    >>> from tomograph.reporting.memory import MemoryBackend
    >>> memory = MemoryBackend()
    >>> ot_tracer = Tracer(tomograph.Tracer('shop', backends=[memory]))
    >>> with ot_tracer.start_active_span('checkout', tags={'items': 3}) as scope:
    ...     _ = scope.span.log_kv({'event': 'paid'})
    >>> [(s.name, s.tags, [n.value for n in s.annotations]) for s in memory.spans]
    [('checkout', {'items': 3}, ['paid'])]

    Spans started with no parent in reach continue tomograph's current span, so OpenTracing
    instrumentation nests under tomograph's own (WSGI middleware, ``tomograph.span``).
    """

    def __init__(
        self,
        tracer: TomographTracer | None = None,
        scope_manager: opentracing.ScopeManager | None = None,
        propagator: Propagator | None = None,
    ) -> None:
        super().__init__(scope_manager if scope_manager is not None else ThreadLocalScopeManager())
        self._tomograph = tracer
        self.propagator = propagator

    @property
    def tomograph_tracer(self) -> TomographTracer:
        """The tomograph tracer spans are recorded with."""
        return self._tomograph if self._tomograph is not None else get_tracer()

    # -- starting spans ---------------------------------------------------------------------

    def start_active_span(
        self,
        operation_name: str,
        child_of: Span | SpanContext | None = None,
        references: Sequence[Reference] | None = None,
        tags: Mapping[str, Any] | None = None,
        start_time: float | None = None,
        ignore_active_span: bool = False,
        finish_on_close: bool = True,
    ) -> opentracing.Scope:
        """Start a span and make it active; close the returned scope (or use ``with``)."""
        span = self.start_span(
            operation_name, child_of, references, tags, start_time, ignore_active_span
        )
        return self.scope_manager.activate(span, finish_on_close)

    def start_span(
        self,
        operation_name: str | None = None,
        child_of: Span | SpanContext | None = None,
        references: Sequence[Reference] | None = None,
        tags: Mapping[str, Any] | None = None,
        start_time: float | None = None,
        ignore_active_span: bool = False,
    ) -> Span:
        """Start a span (not made active); ``start_time`` is in epoch seconds.

        The parent is ``child_of``, else the first ``child_of`` reference, else the first
        ``follows_from`` reference (Zipkin has one parent per span), else the active span,
        else tomograph's current span; ``ignore_active_span=True`` skips the last two.
        """
        parent: TomographSpan | TraceContext | None
        baggage: Mapping[str, str] | None = None
        if child_of is not None or references:
            parent_context = _parent_of(child_of, references)
            if parent_context is None:
                parent = None
            else:
                parent = parent_context._span or parent_context.trace_context
                baggage = parent_context._baggage
        elif ignore_active_span:
            parent = None
        else:
            active = self._scope_manager.active
            active_span = active.span if active is not None else None
            if active_span.__class__ is Span:
                parent = active_span.tomograph_span
                baggage = active_span._baggage
            else:
                parent = CURRENT_SPAN.get()
        kind: SpanKind | None = None
        if tags and ot_tags.SPAN_KIND in tags:
            try:
                kind = coerce_kind(str(tags[ot_tags.SPAN_KIND]))
            except ValueError:
                pass  # an unknown kind stays a plain tag
        inner = TomographSpan(
            self._tomograph or get_tracer(), operation_name or "", kind, None, parent
        )
        if start_time is not None:
            inner.start(int(start_time * 1_000_000))
        span = Span(self, inner, baggage)
        if tags:
            for key, value in tags.items():
                if key != ot_tags.SPAN_KIND or kind is None:
                    span.set_tag(key, value)
        return span

    # -- propagation ------------------------------------------------------------------------

    def inject(self, span_context: SpanContext, format: str, carrier: Any) -> None:
        """Write ``span_context`` into ``carrier``.

        ``Format.TEXT_MAP`` and ``Format.HTTP_HEADERS``: a dict of headers, written by
        tomograph's propagators (B3, W3C ``traceparent``/``baggage`` ...). ``Format.BINARY``: a
        ``bytearray`` extended with :mod:`tomograph.opentracing.binary`'s encoding.
        """
        if not isinstance(span_context, SpanContext):
            raise opentracing.InvalidCarrierException(
                f"cannot inject {span_context!r}: not a tomograph.opentracing SpanContext"
            )
        if format in _TEXT_FORMATS:
            if not hasattr(carrier, "__setitem__"):
                raise opentracing.InvalidCarrierException(
                    f"{format} needs a dict-like carrier, not {type(carrier).__name__}"
                )
            inject_text(span_context.trace_context, span_context._baggage, carrier, self.propagator)
        elif format == Format.BINARY:
            if not isinstance(carrier, bytearray):
                raise opentracing.InvalidCarrierException(
                    f"binary format needs a bytearray carrier, not {type(carrier).__name__}"
                )
            carrier.extend(binary.encode(span_context.trace_context, span_context._baggage))
        else:
            raise opentracing.UnsupportedFormatException(format)

    def extract(self, format: str, carrier: Any) -> SpanContext | None:
        """Read a span context from ``carrier``; None if it holds none.

        A carrier holding a malformed binary context raises
        :class:`opentracing.SpanContextCorruptedException`; malformed text headers are ignored
        (as HTTP servers must tolerate what clients send), giving None.
        """
        if format in _TEXT_FORMATS:
            if not isinstance(carrier, Mapping) and not hasattr(carrier, "get"):
                raise opentracing.InvalidCarrierException(
                    f"{format} needs a dict-like carrier, not {type(carrier).__name__}"
                )
            found = extract_text(carrier, self.propagator)
            if found is None:
                return None
            context, baggage = found
            return SpanContext(context, baggage)
        if format == Format.BINARY:
            if not isinstance(carrier, bytes | bytearray | memoryview):
                raise opentracing.InvalidCarrierException(
                    f"binary format needs bytes or a bytearray, not {type(carrier).__name__}"
                )
            if not carrier:
                return None
            try:
                context, baggage = binary.decode(carrier)
            except binary.BinaryFormatError as error:
                raise opentracing.SpanContextCorruptedException(str(error)) from None
            return SpanContext(context, baggage)
        raise opentracing.UnsupportedFormatException(format)

    # -- the early OpenTracing API ----------------------------------------------------------

    def start_trace(self, operation_name: str, tags: Mapping[str, Any] | None = None) -> Span:
        """Start a new trace (early OpenTracing API): a root span, whatever is active."""
        return self.start_span(operation_name, tags=tags, ignore_active_span=True)

    def join_trace(
        self,
        operation_name: str,
        parent_trace_context: SpanContext | None,
        tags: Mapping[str, Any] | None = None,
    ) -> Span:
        """Continue a trace from a context received from elsewhere (early OpenTracing API).

        With no context (nothing was propagated) this starts a new trace.
        """
        return self.start_span(
            operation_name, child_of=parent_trace_context, tags=tags, ignore_active_span=True
        )

    def trace_context_to_text(
        self, trace_context: SpanContext
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The context as (ids, attributes) dicts of text (early OpenTracing API).

        ``ids`` holds the propagation headers without baggage; ``attributes`` the baggage.
        """
        ids: dict[str, str] = {}
        inject_text(trace_context.trace_context, None, ids, self.propagator)
        return ids, trace_context.baggage

    def trace_context_from_text(
        self, trace_context_id: Mapping[str, str], trace_attributes: Mapping[str, str] | None
    ) -> SpanContext | None:
        """The context :meth:`trace_context_to_text` wrote (early OpenTracing API)."""
        found = extract_text(trace_context_id, self.propagator)
        if found is None:
            return None
        context, baggage = found
        return SpanContext(context, {**baggage, **(trace_attributes or {})})


def _parent_of(
    child_of: Span | SpanContext | None, references: Sequence[Reference] | None
) -> SpanContext | None:
    if child_of is not None:
        return _context_of(child_of)
    if not references:
        return None
    follows: SpanContext | None = None
    for reference in references:
        context = _context_of(reference.referenced_context)
        if context is None:
            continue
        if reference.type == ReferenceType.CHILD_OF:
            return context
        follows = follows or context
    return follows


def _context_of(parent: Any) -> SpanContext | None:
    if isinstance(parent, Span):
        return parent.context
    if isinstance(parent, SpanContext):
        return parent
    if parent is None:
        return None
    raise TypeError(f"{parent!r} is not a tomograph.opentracing Span or SpanContext")
