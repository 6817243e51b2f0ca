"""The HTTP server contract: what every server integration does around a request.

A server integration (WSGI, ASGI, Tornado, eventlet, a framework's middleware) is an adapter:
it reads the request the way its framework hands it over and calls one
:class:`HttpServerHandler`, which does the rest the same way for all of them:

1. **extract** the caller's trace context from the headers (every format the propagator
   reads; a request without a valid context starts a new trace but keeps the caller's
   baggage), obeying the caller's sampling decision;
2. **start** a ``SERVER`` span named after the method (or the handler's fixed ``name``), with
   the server as local endpoint and the client as remote endpoint, tagged ``http.method`` and
   ``http.path``;
3. **status**: tag ``http.status_code``; 5xx marks the span an error, 4xx does not (see
   :mod:`tomograph.integrations.http_status`);
4. **exceptions** raised by the application are recorded (``error``, ``exception.type`` and a
   note) — the adapter re-raises them untouched;
5. **finish**, tagging ``http.route`` when the framework matched a route template, and naming
   the span ``"<METHOD> <route>"`` unless the name is fixed.

An adapter, in outline (see ``docs/http-contract.md`` for a whole one)::

    handler = HttpServerHandler(service_name='orders')
    span = handler.start(method, path, headers, server_host=..., client_host=...)
    token = CURRENT_SPAN.set(span)            # the application's spans become children
    try:
        response = call_the_application()
        handler.status(span, response.status_code)
    except BaseException as exc:
        handler.record_exception(span, exc)
        raise
    finally:
        CURRENT_SPAN.reset(token)
        handler.finish(span, route=matched_route_template)

The handler never raises for what a client sends: bad headers start a new trace, bad
addresses leave the endpoint without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Generic, TypeVar

import tomograph.propagation.composite as _propagation_defaults
import tomograph.tracer as _tracer_defaults
from tomograph._cache import BoundedCache, memoize
from tomograph.context import CURRENT_SPAN
from tomograph.integrations.http_status import record_status
from tomograph.model import Endpoint, SpanKind, TraceContext
from tomograph.model import endpoint_for as peer_endpoint
from tomograph.propagation import Propagator, default_propagator
from tomograph.propagation.baggage import adopt_baggage
from tomograph.span import CURRENT, Span, make_span
from tomograph.tracer import Tracer, get_tracer

__all__ = ["EXTRACT", "HttpServerHandler", "ServerMiddlewareBase", "enclosing_server_span"]


class _Extract:
    """The type of :data:`EXTRACT`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EXTRACT"


#: ``context=EXTRACT`` (the default of :meth:`HttpServerHandler.start`): read the caller's
#: context from the headers with the handler's propagator.
EXTRACT: Final = _Extract()

_SERVER = SpanKind.SERVER
App = TypeVar("App")


def _port(value: Any) -> int:
    # A port a server reports wrongly is left out, never an error: the encoders write ports
    # as 16-bit numbers, and a request must not cost the span.
    try:
        port = int(value or 0)
    except (TypeError, ValueError):
        return 0
    return port if 0 < port <= 65535 else 0


def _new_client_endpoint(host: Any, port: Any) -> Endpoint | None:
    if not host:
        return None
    number = _port(port)
    # peer_endpoint is cached by address only: client ports change with every connection.
    base = peer_endpoint(None, host, None)
    return Endpoint(None, base.ipv4, base.ipv6, number) if number else base


def _new_endpoints(
    service: str | None, server_host: Any, server_port: Any, client_host: Any, client_port: Any
) -> tuple[Endpoint, Endpoint | None]:
    return peer_endpoint(service, server_host, _port(server_port)), _new_client_endpoint(
        client_host, client_port
    )


# Both endpoints of a request in one lookup (one cache call less per request, about 0.05 µs):
# a server has few names and ports, and a keep-alive connection sends many requests from one
# client port. Read in start() itself, not through a memoized function: one Python call less.
_ENDPOINTS: BoundedCache[tuple[Any, ...], tuple[Endpoint, Endpoint | None]] = BoundedCache(1024)
_client_endpoint = memoize(_new_client_endpoint, 1024)


class HttpServerHandler:
    """Starts, tags and finishes the ``SERVER`` span of each request an adapter hands it.

    ``service_name`` is the service the spans are reported under (default: the tracer's);
    ``name`` fixes the span name (default: the method, then ``"<METHOD> <route>"`` once the
    route template is known). ``tracer`` and ``propagator`` default to the default ones,
    looked up per request, so ``tomograph.configure()`` may run after the handler is built.

    One handler serves any number of requests at once: it keeps no per-request state.

    >>> import tomograph
    >>> from tomograph.reporting.memory import MemoryBackend
    >>> memory = MemoryBackend()
    >>> handler = HttpServerHandler('orders', tracer=tomograph.Tracer('svc', [memory]))
    >>> span = handler.start('GET', '/orders/7', {'b3': '0af7651916cd43dd-b7ad6b7169203331-1'},
    ...                      server_host='127.0.0.1', server_port=8000, client_host='10.0.0.2')
    >>> handler.status(span, 404)
    >>> handler.finish(span, route='/orders/{id}')
    >>> done = memory.spans[0]
    >>> done.name, done.tags['http.status_code'], done.error, done.service_name
    ('GET /orders/{id}', 404, False, 'orders')
    """

    def __init__(
        self,
        service_name: str | None = None,
        name: str | None = None,
        *,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
    ) -> None:
        self.service_name = service_name
        self.name = name
        self.tracer = tracer
        self.propagator = propagator

    def start(
        self,
        method: str,
        path: str,
        headers: Any,
        server_host: Any = None,
        server_port: Any = None,
        client_host: Any = None,
        client_port: Any = None,
        *,
        context: TraceContext | _Extract | None = EXTRACT,
        sampling: tuple[bool, bool] | None = None,
    ) -> Span:
        """Start the request's span (not made current: the adapter does that).

        ``headers`` is what the propagator reads: a dict, a WSGI environ, a list of
        ``(name, value)`` pairs (bytes or text), or any mapping with ``get``. ``path`` is
        the request path without the query string. The addresses are as the server reports
        them (text or numbers; unparsable ones are left out); an adapter that knows neither
        ``server_host`` nor ``server_port`` leaves the local endpoint to the tracer.

        ``context`` replaces extraction for adapters with propagation of their own: the
        caller's context, or None for a new trace (no baggage is adopted then).
        ``sampling`` is ``(sampled, debug)`` for a request that asks for a decision without
        sending ids (B3's ``X-Sampled: 1`` or ``X-B3-Flags: 1`` alone): it overrides the
        sampler's decision for the new trace.
        """
        # The defaults read where they are held, get_tracer() and default_propagator() called
        # only to make them: two Python calls less per request (about 300 instructions).
        tracer = self.tracer or _tracer_defaults._default_tracer or get_tracer()
        if context is EXTRACT:
            propagator = self.propagator or _propagation_defaults._default or default_propagator()
            parent: Any = propagator.extract(headers) or CURRENT
        else:
            propagator = None
            parent = context
        service = self.service_name
        if server_host is None and server_port is None and service is None:
            local = None  # the tracer's own endpoint
            remote = _client_endpoint(client_host, client_port)
        else:
            addresses = (
                service or tracer.local_endpoint.service_name,
                server_host,
                server_port,
                client_host,
                client_port,
            )
            try:
                endpoints = _ENDPOINTS.get(addresses)
            except TypeError:  # an address that cannot be hashed (a server passing a list)
                endpoints = _new_endpoints(*addresses)
            else:
                if endpoints is None:
                    endpoints = _ENDPOINTS[addresses] = _new_endpoints(*addresses)
            local, remote = endpoints
        span = make_span(tracer, self.name or method, _SERVER, None, parent, local, remote)
        if propagator is not None and parent is CURRENT:
            adopt_baggage(span, propagator.extract_baggage(headers))
        if sampling is not None:
            span.set_sampling(*sampling)
        if span.sampled:
            tags = span.tags
            tags["http.method"] = method
            tags["http.path"] = path
        return span

    #: ``status(span, code)``: tag the response status; 5xx makes the span an error, 4xx does
    #: not. The rule itself, not a method calling it: one Python call less per request
    #: (about 0.1 µs; a partial with a keyword argument would cost 0.5 µs).
    status = staticmethod(record_status)

    @staticmethod
    def record_exception(span: Span, exc: BaseException) -> None:
        """Record an exception the application raised (the adapter re-raises it)."""
        span.record_exception(exc)

    def finish(self, span: Span, route: str | None = None, timestamp_us: int | None = None) -> None:
        """Tag ``http.route`` (and name the span after it) when known, and finish the span
        (at ``timestamp_us``, epoch microseconds, when the response ended before the call).

        Finishing twice is harmless: the first call wins.
        """
        if span.end_ns:
            return
        if route is not None and span.sampled:
            span.tags["http.route"] = route
            if self.name is None:
                span.name = f"{span.tags.get('http.method', 'GET')} {route}"
        span.finish(timestamp_us)


class ServerMiddlewareBase(HttpServerHandler, Generic[App]):
    """A server middleware: an :class:`HttpServerHandler` wrapped around an application.

    Adds the wrapped ``app`` and ``excluded_paths``: requests whose path is in it (health
    checks) are passed to the application untraced.
    """

    def __init__(
        self,
        app: App,
        service_name: str | None = None,
        name: str | None = None,
        *,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
        excluded_paths: Iterable[str] = (),
    ) -> None:
        super().__init__(service_name, name, tracer=tracer, propagator=propagator)
        self.app = app
        self.excluded_paths = frozenset(excluded_paths)


def enclosing_server_span() -> Span | None:
    """The server span this process is already serving the request in, if any.

    An application served by another one in the same process, through a bridge (FastAPI or
    Starlette mounting a WSGI application with ``WSGIMiddleware``), runs inside the outer
    application's request span. An adapter that finds one starts no span of its own: it tags
    the route on that one, as it does when a tomograph layer stacks over it. (A span of its own
    would never end there: that bridge never closes the response body the span ends with.)
    """
    current = CURRENT_SPAN.get()
    if current is not None and current.kind is _SERVER and not current.end_ns:
        return current
    return None
