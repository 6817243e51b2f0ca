"""OpenTelemetry's ``TracerProvider`` and ``Tracer``, making tomograph spans."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context.context import Context
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.util import types

from tomograph._cache import BoundedCache
from tomograph.context import CURRENT_SPAN
from tomograph.model import Endpoint, TraceContext
from tomograph.opentelemetry import _context
from tomograph.opentelemetry._context import (
    RuntimeContext,
    baggage_entries,
    install_context,
    same_baggage,
)
from tomograph.opentelemetry._span import (
    _INVALID,
    Span,
    SpanLimits,
    _add_link,
    _clean_value,
    _count_dropped,
    _is_epoch_ns,
    is_mapping,
    kind_of,
    parent_of,
    status_description,
    text_of,
)
from tomograph.propagation.baggage import entries_of, replace_baggage
from tomograph.span import Span as TomographSpan
from tomograph.tracer import Tracer as TomographTracer
from tomograph.tracer import get_tracer

__all__ = ["Tracer", "TracerProvider"]

log = logging.getLogger("tomograph.opentelemetry")

F = TypeVar("F", bound=Callable[..., Any])

_get_current_span = CURRENT_SPAN.get
_set_current_span = CURRENT_SPAN.set
_reset_current_span = CURRENT_SPAN.reset
_INTERNAL = trace_api.SpanKind.INTERNAL


def _service_name(resource: object) -> str | None:
    """``service.name`` of an SDK ``Resource``, of anything with ``attributes``, or of a mapping."""
    attributes = getattr(resource, "attributes", resource)
    if isinstance(attributes, Mapping):
        name = attributes.get("service.name")
        if isinstance(name, str) and name:
            return name
    return None


class TracerProvider(trace_api.TracerProvider):
    """OpenTelemetry's tracer provider, recording through tomograph.

    ``tracer``: the tomograph tracer spans are made with; by default tomograph's default tracer
    of the moment (what :func:`tomograph.configure` set), so the provider can be made before
    tomograph is configured. ``resource``: an SDK ``Resource``, anything with ``attributes``,
    or a mapping; its ``service.name`` names the service of the spans made through
    OpenTelemetry (tomograph's service otherwise). ``limits``: how much a span keeps (by
    default the SDK's limits, from the same environment variables).

    Making one installs the context bridge (see :mod:`tomograph.opentelemetry`): from then on
    OpenTelemetry's current span and tomograph's are one.

    >>> provider = TracerProvider(resource={'service.name': 'checkout'})
    >>> tracer = provider.get_tracer('my.library', '1.2')
    >>> with tracer.start_as_current_span('charge', attributes={'amount': 12.5}) as span:
    ...     span.tomograph_span.service_name
    'checkout'
    """

    def __init__(
        self,
        tracer: TomographTracer | None = None,
        resource: object = None,
        *,
        limits: SpanLimits | None = None,
    ) -> None:
        install_context()
        self.tomograph_tracer = tracer
        self.resource = resource
        self.limits = limits if limits is not None else SpanLimits.from_environment()
        service = _service_name(resource)
        self.local_endpoint: Endpoint | None = Endpoint(service) if service else None
        self._tracers: BoundedCache[tuple[Any, ...], Tracer] = BoundedCache(1024)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes | None = None,
    ) -> Tracer:
        """The tracer of one instrumentation scope (a library, by name and version)."""
        name, version = instrumenting_module_name, instrumenting_library_version
        if name.__class__ is not str and name is not None:
            name = text_of(name)  # a scope of another type (a list) must not raise: its text
        if version.__class__ is not str and version is not None:
            version = text_of(version)
        key = (name, version)
        tracer = self._tracers.get(key)
        if tracer is None:
            tracer = self._tracers[key] = Tracer(self, name, version)
        return tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until tomograph's backends have sent what they hold; False on timeout."""
        return self._tracer().flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Send what is held (tomograph's tracer stays usable: it belongs to the application)."""
        self.force_flush()

    def _tracer(self) -> TomographTracer:
        return self.tomograph_tracer or get_tracer()

    def __repr__(self) -> str:
        return f"tomograph.opentelemetry.TracerProvider(tracer={self.tomograph_tracer!r})"


def _parent_in(context: Context) -> tuple[TomographSpan | TraceContext | None, Any]:
    """The parent a span started with ``context=context`` gets, and the context's baggage."""
    if not _context.SPAN_KEY:
        _context._bind()
    return parent_of(context.get(_context.SPAN_KEY)), context.get(_context.BAGGAGE_KEY)


class Tracer(trace_api.Tracer):
    """OpenTelemetry's tracer for one instrumentation scope, making tomograph spans.

    Each span gets the tags ``otel.scope.name`` and ``otel.scope.version`` (as OpenTelemetry's
    Zipkin mapping writes the scope).
    """

    __slots__ = ("_provider", "_scope_tags")

    def __init__(self, provider: TracerProvider, name: str, version: str | None) -> None:
        self._provider = provider
        tags: dict[str, str] = {}
        if name:
            tags["otel.scope.name"] = text_of(name)
        if version:
            tags["otel.scope.version"] = text_of(version)
        self._scope_tags = tags

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: trace_api.SpanKind = _INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        """Start a span (not made current); the parent is ``context``'s span, else the
        current span."""
        provider = self._provider
        tracer = provider.tomograph_tracer or get_tracer()
        parent: TomographSpan | TraceContext | None
        if context is not None and not isinstance(cast(object, context), Context):
            log.debug("start_span(context=%r) needs a Context: the current one is used", context)
            context = None
        if context is None and context_api._RUNTIME_CONTEXT.__class__ is RuntimeContext:
            # The bridge keeps tomograph's current span, and for a new trace the baggage
            # attached with no span current (ROOT_EXTRA): Span takes both from there.
            parent = _get_current_span()
            baggage = None
        else:
            parent, baggage = _parent_in(
                context if context is not None else context_api.get_current()
            )
        if name.__class__ is not str:
            name = text_of(name)
        span = TomographSpan(
            tracer,
            name,
            None if kind is _INTERNAL else kind_of(kind),
            None,
            parent,
            provider.local_endpoint,
        )
        if span.sampled:
            if start_time is not None:
                if _is_epoch_ns(start_time):
                    span.start(int(start_time) // 1000)
                else:
                    log.debug(
                        "start time %r is not epoch nanoseconds: the span starts now", start_time
                    )
            tags = span.tags
            tags.update(self._scope_tags)
            limits = provider.limits
            if attributes and (attributes.__class__ is dict or is_mapping(attributes)):
                limit = limits.attributes
                max_length = limits.attribute_length
                for key, value in attributes.items():
                    cls = value.__class__
                    # The usual attribute written out; _clean_value decides the rest (and cuts
                    # text when a length limit is set).
                    if not (
                        key.__class__ is str
                        and key
                        and (
                            cls is int
                            or cls is float
                            or cls is bool
                            or (cls is str and max_length is None)
                        )
                    ):
                        value = _clean_value(key, value, max_length)  # noqa: PLW2901
                        if value is _INVALID:
                            continue
                    if len(tags) >= limit and key not in tags:
                        _count_dropped(span, "attributes")
                        continue
                    tags[key] = value  # type: ignore[assignment]  # checked above
            if links:
                try:
                    given_links = tuple(links)
                except TypeError:  # one Link where a sequence of them was due
                    given_links = (links,)  # type: ignore[assignment]
                for link in given_links:
                    # Anything but a Link (a bare SpanContext, None) has no context: dropped.
                    context_of = getattr(link, "context", None)
                    _add_link(span, limits, context_of, getattr(link, "attributes", None))
        if (
            baggage is not None
            and isinstance(baggage, Mapping)
            and not same_baggage(entries_of(span.extra), baggage)
        ):
            replace_baggage(span, baggage_entries(baggage))
        return Span(span, provider.limits, record_exception, set_status_on_exception)

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: trace_api.SpanKind = _INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _CurrentSpan:
        """Start a span and make it current in a ``with`` block (or around each call of a
        function it decorates); an exception leaving the block is recorded and fails the span."""
        return _CurrentSpan(
            self,
            (
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            ),
            end_on_exit,
        )


class _CurrentSpan:
    """What ``start_as_current_span`` returns: a context manager, and a decorator (each call in
    a new span), as the API's own is.

    Entering it again while it is in use (nested, or from another thread when one object is
    kept at module level) starts one more span: each exit ends the span that is current where
    it runs, so no span is left open and every thread gets its own context back.
    """

    __slots__ = ("_args", "_end_on_exit", "_entered", "_tracer")

    def __init__(self, tracer: Tracer, args: tuple[Any, ...], end_on_exit: bool) -> None:
        self._tracer = tracer
        self._args = args
        self._end_on_exit = end_on_exit
        #: (span, bridge, inner token, token) of each entry not yet exited (list.append and
        #: remove are thread-safe).
        self._entered: list[tuple[Span, RuntimeContext | None, Any, Any]] = []

    def __enter__(self) -> Span:
        span = self._tracer.start_span(*self._args)
        bridge = context_api._RUNTIME_CONTEXT
        if bridge.__class__ is RuntimeContext:
            # RuntimeContext.attach for a span of ours, written out (it runs once per span):
            # the span becomes tomograph's current span and the span of OpenTelemetry's context.
            context = Context(bridge._get_inner())
            dict.__setitem__(context, _context.SPAN_KEY, span)
            inner_token = bridge._set_inner(context)  # the ContextVar's own set: no frame
            token = _set_current_span(span.tomograph_span)
            self._entered.append((span, bridge, inner_token, token))
        else:
            attached = context_api.attach(trace_api.set_span_in_context(span))
            self._entered.append((span, None, None, attached))
        return span

    def _exiting(self) -> tuple[Span, RuntimeContext | None, Any, Any]:
        entered = self._entered
        if len(entered) > 1:
            current = _get_current_span()
            for entry in reversed(entered):
                if entry[0].tomograph_span is current:
                    try:
                        entered.remove(entry)  # by identity first: this very entry
                    except ValueError:  # another thread's exit took it meanwhile
                        break
                    return cast(tuple[Span, RuntimeContext | None, Any, Any], entry)
        return entered.pop()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        entered = self._entered
        span, bridge, inner_token, token = entered.pop() if len(entered) == 1 else self._exiting()
        if bridge is not None:
            try:
                _reset_current_span(token)
            except ValueError:
                pass  # left in another context: the inner detach logs it, as the API does
            try:
                bridge._reset_inner(inner_token)
            except Exception:
                log.exception("Failed to detach context")
        else:
            context_api.detach(token)
        if exc is not None and isinstance(exc, Exception) and span.is_recording():
            if span._record_exception:
                span.record_exception(exc)
            if span._set_status_on_exception:
                span.set_status(Status(StatusCode.ERROR, status_description(exc)))
        if self._end_on_exit:
            recorded = span.tomograph_span
            if recorded.end_ns:
                span.end()  # ended inside the block: end() says so
            else:
                recorded.finish()  # what end() does, one Python call less

    def __call__(self, func: F) -> F:
        tracer, args, end_on_exit = self._tracer, self._args, self._end_on_exit
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*a: Any, **kw: Any) -> Any:
                with _CurrentSpan(tracer, args, end_on_exit):
                    return await func(*a, **kw)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*a: Any, **kw: Any) -> Any:
            with _CurrentSpan(tracer, args, end_on_exit):
                return func(*a, **kw)

        return cast(F, wrapper)
