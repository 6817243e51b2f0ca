"""OpenTelemetry's text map propagator over tomograph's: ``opentelemetry.propagate.inject`` and
``extract`` read and write the headers tomograph's middlewares and clients do."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry.context.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    DefaultGetter,
    DefaultSetter,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

from tomograph.model import TraceContext
from tomograph.opentelemetry import _context
from tomograph.opentelemetry._context import baggage_entries, same_baggage
from tomograph.opentelemetry._span import RemoteSpan, parent_of
from tomograph.propagation import baggage as w3c_baggage
from tomograph.propagation.baggage import BAGGAGE, entries_of, with_baggage
from tomograph.propagation.composite import Propagator as TomographPropagator
from tomograph.propagation.composite import default_propagator

__all__ = ["Propagator"]

log = logging.getLogger("tomograph.opentelemetry")


class _BaggageOnly:
    """A context with baggage and no trace: what W3C baggage injection reads."""

    __slots__ = ("extra",)

    def __init__(self, extra: Mapping[str, Any]) -> None:
        self.extra = extra


def _headers_from(
    carrier: Any, getter: Getter[Any], propagator: TomographPropagator
) -> dict[str, Any]:
    """The headers ``propagator`` reads, fetched one by one through ``getter``."""
    names, prefixes = propagator.extracted_headers
    headers: dict[str, Any] = {}
    for name in names:
        values = getter.get(carrier, name)
        if values:
            headers[name] = list(values)
    if prefixes:
        try:
            keys = list(getter.keys(carrier))
        except Exception:  # a getter without keys(): prefixed headers cannot be listed
            keys = []
        for key in keys:
            if isinstance(key, str) and key.lower().startswith(prefixes):
                values = getter.get(carrier, key)
                if values:
                    headers[key.lower()] = list(values)
    return headers


#: OpenTelemetry's WSGI getter (module, class name), which the instrumentations of WSGI
#: frameworks (Flask, Django, Falcon, Pyramid) read a request's environ with: it reads the
#: ``HTTP_*`` keys tomograph's propagator reads from an environ itself, in one pass instead of
#: one getter call per header name (about a fifth of what extracting costs per request).
_ENVIRON_GETTER = ("opentelemetry.instrumentation.wsgi", "WSGIGetter")


def _is_environ_getter(getter: object) -> bool:
    cls = getter.__class__
    return cls.__name__ == _ENVIRON_GETTER[1] and cls.__module__ == _ENVIRON_GETTER[0]


class Propagator(TextMapPropagator):
    """OpenTelemetry's ``TextMapPropagator`` that reads and writes with tomograph's propagator.

    ``propagator``: a :class:`tomograph.propagation.Propagator`; by default tomograph's default
    of the moment (``tomograph.configure(propagation=...)``, ``TOMOGRAPH_PROPAGATION``), so both
    APIs speak the same formats. Extracted baggage is OpenTelemetry baggage in the returned
    context; injected baggage is the context's.

    >>> from opentelemetry.context import Context
    >>> from opentelemetry.trace import get_current_span
    >>> headers = {'traceparent': '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'}
    >>> context = Propagator().extract(headers)
    >>> format(get_current_span(context).get_span_context().span_id, '016x')
    'b7ad6b7169203331'
    """

    def __init__(self, propagator: TomographPropagator | None = None) -> None:
        self.propagator = propagator

    def _tomograph(self) -> TomographPropagator:
        return self.propagator if self.propagator is not None else default_propagator()

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        """``context`` (or a new one) with the span context and baggage ``carrier`` holds."""
        if context is None:
            context = Context()
        propagator = self._tomograph()
        if getter is default_getter or getter.__class__ is DefaultGetter:
            headers: Any = carrier
        elif _is_environ_getter(getter) and carrier.__class__ is dict:
            headers = carrier  # a WSGI environ: tomograph's propagator reads it in one pass
        else:
            try:
                headers = _headers_from(carrier, getter, propagator)
            except Exception as error:  # a getter that fails: no context, as for bad headers
                log.debug("reading headers through %r failed: %r", getter, error)
                return context
        if not _context.SPAN_KEY:
            _context._bind()
        trace_context = propagator.extract(headers)
        if trace_context is not None:
            context = Context({**context, _context.SPAN_KEY: RemoteSpan(trace_context)})
            entries = entries_of(trace_context.extra)
        else:
            entries = propagator.extract_baggage(headers)
        if entries:
            existing = context.get(_context.BAGGAGE_KEY)
            baggage = dict(existing) if isinstance(existing, Mapping) else {}
            baggage.update((entry.key, entry.value) for entry in entries)
            context = Context({**context, _context.BAGGAGE_KEY: baggage})
        return context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        """Write ``context``'s (or the current) span context and baggage onto ``carrier``."""
        if context is None:
            context = context_api.get_current()
        if not _context.SPAN_KEY:
            _context._bind()
        source: Any = parent_of(context.get(_context.SPAN_KEY))
        baggage = context.get(_context.BAGGAGE_KEY)
        propagator = self._tomograph()
        if source is None:
            if not baggage or not isinstance(baggage, Mapping):
                return
            if BAGGAGE not in propagator.inject_formats:
                return
            entries = tuple(baggage_entries(baggage))
            self._write(_BaggageOnly({BAGGAGE: entries}), carrier, setter, w3c_baggage.inject)
            return
        if (
            baggage is not None
            and isinstance(baggage, Mapping)
            and not same_baggage(entries_of(source.extra), baggage)
        ):
            plain = source if isinstance(source, TraceContext) else source.context
            source = with_baggage(plain, baggage_entries(baggage))
        self._write(source, carrier, setter, propagator.inject)

    @staticmethod
    def _write(source: Any, carrier: Any, setter: Setter[Any], inject: Any) -> None:
        if setter is default_setter or setter.__class__ is DefaultSetter:
            inject(source, carrier)
            return
        headers: dict[str, str] = {}
        inject(source, headers)
        for name, value in headers.items():
            setter.set(carrier, name, value)

    @property
    def fields(self) -> set[str]:
        """The header names :meth:`inject` writes."""
        return set(self._tomograph().injected_headers)

    def __repr__(self) -> str:
        return f"tomograph.opentelemetry.Propagator({self.propagator!r})"
