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

from tomograph.context import CURRENT_SPAN
from tomograph.integrations.http_server import ServerMiddlewareBase
from tomograph.span import Span

__all__ = ["SCOPE_KEY", "TracingMiddleware"]

#: Where the request's span is put in the ASGI scope, for the application to tag.
SCOPE_KEY = "tomograph.span"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _route_of(scope: Scope, span: Span) -> str | None:
    route = span.tags.get("http.route")
    if isinstance(route, str):
        return route
    matched = scope.get("route")  # Starlette and FastAPI: the matched Route object
    template = getattr(matched, "path", None) or getattr(matched, "path_format", None)
    return template if isinstance(template, str) and template else None


def _address(address: Any) -> tuple[Any, Any]:
    """(host, port) of an ASGI ``server`` or ``client`` entry (None, None if unusable)."""
    try:
        host, port = address
    except (TypeError, ValueError):
        return None, None
    return host, port


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
        server_host, server_port = _address(scope.get("server"))
        client_host, client_port = _address(scope.get("client"))
        span = self.start(
            scope.get("method", "GET"),
            path,
            scope.get("headers") or [],
            server_host=server_host,
            server_port=server_port,
            client_host=client_host,
            client_port=client_port,
        )
        scope[SCOPE_KEY] = span
        status = self.status

        async def traced_send(message: Message) -> None:
            if message.get("type") == "http.response.start":
                code = message.get("status")
                status(span, code if isinstance(code, int) else 0)
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
            self.finish(span, _route_of(scope, span) if span.sampled else None)
