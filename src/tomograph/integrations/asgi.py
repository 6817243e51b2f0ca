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
It is current while the application runs (work it does after the response, such as Starlette's
background tasks, makes children of it), and is in ``scope['tomograph.span']``.

A WebSocket connection is one ``SERVER`` span from the handshake to the close, named
``WEBSOCKET <route>``, tagged with the messages received and sent (counts, never contents) and
the close code. Lifespan messages pass through untraced. A request another tomograph layer
already traces (``scope['tomograph.span']`` is set) is passed on untraced: one span per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tomograph.clock import monotonic_ns
from tomograph.context import CURRENT_SPAN
from tomograph.integrations.http_server import ServerMiddlewareBase
from tomograph.span import Span

__all__ = ["SCOPE_KEY", "TracingMiddleware", "WEBSOCKET_CLOSE_CODES_IN_ERROR"]

#: Where the request's span is put in the ASGI scope, for the application to tag.
SCOPE_KEY = "tomograph.span"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: WebSocket close codes (RFC 6455, 7.4.1) that make a connection's span an error: the server's
#: failures (1011 internal error, 1014 bad gateway), not a client going away or a policy refusal.
WEBSOCKET_CLOSE_CODES_IN_ERROR = frozenset({1011, 1014})

_TRACED_SCOPES = frozenset({"http", "websocket"})

_new_object = object.__new__


def _route_of(scope: Scope, span: Span) -> str | None:
    route = span.tags.get("http.route")
    if isinstance(route, str):
        return route
    matched = scope.get("route")  # Starlette and FastAPI: the matched Route object
    template = getattr(matched, "path", None) or getattr(matched, "path_format", None)
    return template if isinstance(template, str) and template else None


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
        kind = scope.get("type")
        path = scope.get("path", "")
        if (
            kind not in _TRACED_SCOPES
            or SCOPE_KEY in scope  # an outer tomograph layer traces this request
            or (self.excluded_paths and path in self.excluded_paths)
        ):
            await self.app(scope, receive, send)
            return
        # Unpacked here, and the arguments positional: this runs once per request.
        try:
            server_host, server_port = scope.get("server")  # type: ignore[misc]
        except (TypeError, ValueError):
            server_host = server_port = None
        try:
            client_host, client_port = scope.get("client")  # type: ignore[misc]
        except (TypeError, ValueError):
            client_host = client_port = None
        span = self.start(
            scope.get("method", "GET"),  # a WebSocket handshake is a GET
            path,
            scope.get("headers") or [],
            server_host,
            server_port,
            client_host,
            client_port,
        )
        scope[SCOPE_KEY] = span
        if kind == "websocket":
            await _WebSocketConnection(self, span, scope).run(receive, send)
            return
        # Filled in here rather than by an __init__: one Python call less per request.
        exchange = _new_object(_HttpExchange)
        exchange.handler = self
        exchange.span = span
        exchange.scope = scope
        exchange.send = send
        exchange.code = exchange.completed_us = 0
        token = CURRENT_SPAN.set(span)
        try:
            await self.app(scope, receive, exchange.traced_send)
        except BaseException as exc:
            if not span.end_ns:  # else the request was answered: not the request's failure
                span.record_exception(exc)
            raise
        finally:
            try:
                CURRENT_SPAN.reset(token)
            except ValueError:
                pass  # the app switched contexts under us: nothing of ours to restore
            if not span.end_ns:  # most responses ended the span in traced_send already
                self.finish(
                    span,
                    _route_of(scope, span) if span.sampled else None,
                    exchange.completed_us or None,
                )


class _HttpExchange:
    """One traced HTTP request: its ``traced_send`` is what the application sends through.

    The span ends when the whole response has been sent: what the application does after it
    (background tasks) is not the request's latency, and the span is reported then, not after
    the last task. Only after a 5xx it waits for the app to return: Starlette re-raises the
    exception behind its 500 page once the page is sent (``completed_us`` keeps when the
    response ended).
    """

    __slots__ = ("code", "completed_us", "handler", "scope", "send", "span")

    handler: TracingMiddleware
    span: Span
    scope: Scope
    send: Send
    code: int
    completed_us: int

    def traced_send(self, message: Message) -> Awaitable[None]:
        # A plain function handing back the server's awaitable for every message but a body:
        # one coroutine less per response (about 1,000 instructions of 3 us per request).
        kind = message.get("type")
        if kind == "http.response.body":
            return self._send_body(message)
        # A response started again after the span ended (the server refuses it) leaves the
        # finished span, already handed to the reporter, as the client saw it.
        if kind == "http.response.start" and not self.span.end_ns:
            value = message.get("status")
            code = self.code = value if isinstance(value, int) else 0
            self.handler.status(self.span, code)
        return self.send(message)

    async def _send_body(self, message: Message) -> None:
        await self.send(message)
        if not message.get("more_body"):
            span = self.span
            if self.code < 500:
                self.handler.finish(span, _route_of(self.scope, span) if span.sampled else None)
            else:
                self.completed_us = (monotonic_ns() + span.epoch_offset_ns) // 1000


class _WebSocketConnection:
    """One traced WebSocket connection: counts messages, keeps the close code and status."""

    __slots__ = ("close_code", "middleware", "received", "scope", "sent", "span")

    def __init__(self, middleware: TracingMiddleware, span: Span, scope: Scope) -> None:
        self.middleware = middleware
        self.span = span
        self.scope = scope
        self.received = 0
        self.sent = 0
        self.close_code: int | None = None

    async def run(self, receive: Receive, send: Send) -> None:
        span = self.span
        token = CURRENT_SPAN.set(span)
        try:
            await self.middleware.app(self.scope, self._receiver(receive), self._sender(send))
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            try:
                CURRENT_SPAN.reset(token)
            except ValueError:
                pass  # the app switched contexts under us: nothing of ours to restore
            self._finish()

    def _receiver(self, receive: Receive) -> Receive:
        async def traced_receive() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "websocket.receive":
                self.received += 1
            elif kind == "websocket.disconnect" and self.close_code is None:
                self.close_code = _close_code(message, 1005)  # 1005: no code was given
            return message

        return traced_receive

    def _sender(self, send: Send) -> Send:
        status = self.middleware.status

        async def traced_send(message: Message) -> None:
            kind = message.get("type")
            if kind == "websocket.send":
                self.sent += 1
            elif kind == "websocket.accept":
                status(self.span, 101)
            elif kind == "websocket.close":
                if self.close_code is None:
                    self.close_code = _close_code(message, 1000)
                if "http.status_code" not in self.span.tags:
                    status(self.span, 403)  # closed before the handshake: the server refused it
            elif kind == "websocket.http.response.start":  # the denial response extension
                code = message.get("status")
                status(self.span, code if isinstance(code, int) else 0)
            await send(message)

        return traced_send

    def _finish(self) -> None:
        span = self.span
        route = None
        if span.sampled:
            tags = span.tags
            tags["websocket.messages_received"] = self.received
            tags["websocket.messages_sent"] = self.sent
            if self.close_code is not None:
                tags["websocket.close_code"] = self.close_code
                if self.close_code in WEBSOCKET_CLOSE_CODES_IN_ERROR and not span.error:
                    span.error = True
                    tags["error"] = f"WebSocket closed with {self.close_code}"
            route = _route_of(self.scope, span)
            if self.middleware.name is None:
                span.name = f"WEBSOCKET {route}" if route else "WEBSOCKET"
            if route is not None:
                tags["http.route"] = route
        span.finish()


def _close_code(message: Message, default: int) -> int:
    code = message.get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else default
