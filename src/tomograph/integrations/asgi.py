"""ASGI 3: a server span per HTTP request, for any framework (Starlette, FastAPI, Django, ...).

::

    from tomograph.integrations.asgi import TracingMiddleware
    app = TracingMiddleware(app, service_name='orders')

    # or, with Starlette / FastAPI
    app.add_middleware(TracingMiddleware, service_name='orders')

The same semantics as the WSGI middleware: the span continues the trace in the incoming
headers, is tagged ``http.method``, ``http.path``, ``http.status_code`` and ``http.route``
(Starlette and FastAPI put the matched route in the scope), is an error for 5xx responses and
exceptions (re-raised untouched), and ends when the application has sent the whole response.
It is current while the application runs, and is in ``scope['tomograph.span']``. WebSocket and
lifespan messages pass through untraced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tomograph._cache import memoize
from tomograph.context import CURRENT_SPAN
from tomograph.integrations._server import ServerMiddlewareBase
from tomograph.model import Endpoint, SpanKind
from tomograph.model import endpoint_for as peer_endpoint
from tomograph.propagation import default_propagator
from tomograph.propagation.baggage import adopt_baggage
from tomograph.span import CURRENT, Span
from tomograph.tracer import get_tracer

__all__ = ["SCOPE_KEY", "TracingMiddleware"]

#: Where the request's span is put in the ASGI scope, for the application to tag.
SCOPE_KEY = "tomograph.span"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_SERVER = SpanKind.SERVER


def _route_of(scope: Scope, span: Span) -> str | None:
    route = span.tags.get("http.route")
    if isinstance(route, str):
        return route
    matched = scope.get("route")  # Starlette and FastAPI: the matched Route object
    template = getattr(matched, "path", None) or getattr(matched, "path_format", None)
    return template if isinstance(template, str) and template else None


def _new_endpoint(service: str | None, address: Any) -> Endpoint | None:
    if not address:
        return None
    try:
        host, port = address[0], int(address[1])
    except (TypeError, ValueError, IndexError):
        return None
    base = peer_endpoint(service, host, None)
    return Endpoint(service, base.ipv4, base.ipv6, port) if port else base


# By (service, address): a keep-alive connection sends many requests from one client port, and
# the server address never changes.
_endpoint = memoize(_new_endpoint, 1024)


class TracingMiddleware(ServerMiddlewareBase[ASGIApp]):
    """ASGI 3 middleware that traces each HTTP request as a server span.

    ``service_name`` is the service the spans are reported under (default: the tracer's);
    ``name`` fixes the span name (default: the method, plus the route template when known).
    ``tracer`` and ``propagator`` default to the default ones, looked up per request.
    Requests whose path is in ``excluded_paths`` are not traced.

    >>> async def app(scope, receive, send): ...
    >>> app = TracingMiddleware(app, service_name='orders')
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if self.excluded_paths and path in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        tracer = self.tracer or get_tracer()
        method = scope.get("method", "GET")
        propagator = self.propagator or default_propagator()
        headers = scope.get("headers") or []
        parent: Any = propagator.extract(headers) or CURRENT
        service = self.service_name or tracer.local_endpoint.service_name
        span = Span(
            tracer,
            self.name or method,
            _SERVER,
            None,
            parent,
            _endpoint(service, scope.get("server")) or Endpoint(service),
            _endpoint(None, scope.get("client")),
        )
        if parent is CURRENT:
            adopt_baggage(span, propagator.extract_baggage(headers))
        if span.sampled:
            span.tags["http.method"] = method
            span.tags["http.path"] = path
        scope[SCOPE_KEY] = span

        async def traced_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status = message.get("status")
                code = status if isinstance(status, int) else 0
                if span.sampled:
                    span.tags["http.status_code"] = code
                    if code >= 500 and "error" not in span.tags:
                        span.tags["error"] = str(code)
                if code >= 500:
                    span.error = True
            await send(message)

        token = CURRENT_SPAN.set(span)
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            try:
                CURRENT_SPAN.reset(token)
            except ValueError:
                pass  # the app switched contexts under us: nothing of ours to restore
            if span.sampled:
                route = _route_of(scope, span)
                if route is not None:
                    span.tags["http.route"] = route
                    if self.name is None:
                        span.name = f"{method} {route}"
            span.finish()
