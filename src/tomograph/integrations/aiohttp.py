"""aiohttp: a server span per request (middleware) and a client span per request (TraceConfig).

::

    from aiohttp import ClientSession, web
    from tomograph.integrations.aiohttp import TracingMiddleware, TracingTraceConfig, setup

    app = web.Application()
    setup(app, service_name='orders')          # or middlewares=[TracingMiddleware(...)]

    session = ClientSession(trace_configs=[TracingTraceConfig()])

    from tomograph.integrations.aiohttp import patch
    patch()  # every Application started and every ClientSession created from now on

The server span continues the trace in the request headers, is named ``"<METHOD> <route>"``
after the matched resource (``GET /users/{id}``, sub-application prefixes included), and ends
when the handler returns: for a ``StreamResponse`` or a ``WebSocketResponse`` that is when the
stream or the connection is over. The client span of a request ends when its response headers
have arrived, as for every HTTP client (see :mod:`tomograph.integrations.http_client`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any, Final

from aiohttp import ClientResponseError, ClientSession, TraceConfig, web
from aiohttp.tracing import (
    TraceRequestEndParams,
    TraceRequestExceptionParams,
    TraceRequestRedirectParams,
    TraceRequestStartParams,
)

from tomograph._cache import memoize
from tomograph.context import CURRENT_SPAN
from tomograph.integrations.http_client import ClientCall, begin
from tomograph.integrations.http_server import HttpServerHandler
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.propagation import Propagator
from tomograph.span import Span
from tomograph.tracer import Tracer

__all__ = [
    "REQUEST_KEY",
    "TracingMiddleware",
    "TracingTraceConfig",
    "patch",
    "patched",
    "setup",
    "unpatch",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_request_key = getattr(web, "RequestKey", None)  # aiohttp 3.12+: str keys draw a warning
#: Where the request's span is kept: ``request[REQUEST_KEY]``, for the handler to tag.
REQUEST_KEY: Final[Any] = (
    _request_key("tomograph.span", Span) if _request_key is not None else "tomograph.span"
)


# The request the running tomograph middleware traces. An inner one (a sub-application's) sees
# it is the same request: a context variable, because ``key in request`` costs a KeyError
# (about 2.5 µs) for every request that is not traced yet.
_traced_request: ContextVar[web.BaseRequest | None] = ContextVar(
    "tomograph_aiohttp_request", default=None
)


def _address(transport: Any, name: str) -> tuple[Any, Any]:
    """(host, port) of the socket's ``sockname``/``peername`` (None, None for a Unix socket)."""
    address = transport.get_extra_info(name) if transport is not None else None
    if isinstance(address, tuple) and len(address) >= 2:  # IPv6 adds flow info and scope id
        return address[0], address[1]
    return None, None


def _response_begun(request: web.BaseRequest) -> bool:
    return getattr(getattr(request, "writer", None), "output_size", 0) > 0


def _new_handler_name(handler: Any) -> str | None:
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None)
    if not isinstance(name, str):
        # functools.partial and callable objects: name what they call
        inner = getattr(handler, "func", None) or type(handler)
        module, name = getattr(inner, "__module__", None), getattr(inner, "__qualname__", None)
    if not isinstance(name, str):
        return None
    return f"{module}.{name}" if isinstance(module, str) else name


# Per handler object: an application has a fixed set of handlers, and formatting the name
# would otherwise cost every request two attribute lookups and a string.
_handler_name = memoize(_new_handler_name, 1024)


def _route_and_handler(request: web.BaseRequest) -> tuple[str | None, str | None]:
    """The matched resource's template (``/users/{id}``) and the handler's qualified name."""
    match_info = getattr(request, "_match_info", None)  # None before routing: nothing matched
    resource = getattr(getattr(match_info, "route", None), "resource", None)
    if resource is None:  # 404 and 405 answers have a system route without a resource
        return None, None
    route = resource.canonical
    return (route if isinstance(route, str) and route else None), _handler_name(
        getattr(match_info, "handler", None)
    )


class TracingMiddleware(HttpServerHandler):
    """aiohttp middleware that traces each request as a ``SERVER`` span.

    ``service_name``, ``name``, ``tracer`` and ``propagator`` are those of
    :class:`~tomograph.integrations.http_server.HttpServerHandler`; requests whose path is in
    ``excluded_paths`` (health checks) are not traced. Put it first in ``middlewares`` (or use
    :func:`setup`) so that the span covers the other middlewares and sees the status the client
    gets. The span is current while the handler runs and is in ``request[REQUEST_KEY]``.

    >>> from aiohttp import web
    >>> app = web.Application(middlewares=[TracingMiddleware(service_name='orders')])
    """

    #: aiohttp calls middlewares marked so as ``middleware(request, handler=...)``.
    __middleware_version__: Final = 1

    def __init__(
        self,
        service_name: str | None = None,
        name: str | None = None,
        *,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
        excluded_paths: Iterable[str] = (),
    ) -> None:
        super().__init__(service_name, name, tracer=tracer, propagator=propagator)
        self.excluded_paths = frozenset(excluded_paths)

    def _active(self) -> bool:
        return True

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            _traced_request.get() is request  # an outer tomograph middleware (a parent app's)
            or not self._active()
            or (self.excluded_paths and request.path in self.excluded_paths)
        ):
            return await handler(request)
        transport = request.transport
        server_host, server_port = _address(transport, "sockname")
        client_host, client_port = _address(transport, "peername")
        span = self.start(
            request.method,
            request.path,
            request.raw_headers,  # (name, value) pairs as ASGI has them: the propagator's fast path
            server_host,
            server_port,
            client_host,
            client_port,
        )
        request[REQUEST_KEY] = span
        status = self.status
        token = CURRENT_SPAN.set(span)
        traced = _traced_request.set(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # raised as the response: 404 and 302 are no errors
            if exc.status >= 500:
                span.record_exception(exc)  # where the application gave up: its traceback
            status(span, exc.status)
            raise
        except Exception as exc:
            span.record_exception(exc)
            # What aiohttp answers for an exception the application lets through; unless a
            # streamed response had begun (aiohttp's own test): its status has gone out, and
            # aiohttp can only break the connection.
            if not _response_begun(request):
                status(span, 504 if isinstance(exc, asyncio.TimeoutError) else 500)
            raise
        except BaseException as exc:  # cancelled: the client went away, or the server stops
            span.record_exception(exc)
            raise
        else:
            status(span, response.status)
            return response
        finally:
            try:
                CURRENT_SPAN.reset(token)
                _traced_request.reset(traced)
            except ValueError:
                pass  # the handler switched contexts under us: nothing of ours to restore
            if span.sampled:
                route, handler_name = _route_and_handler(request)
                if handler_name is not None:
                    span.tags["code.function.name"] = handler_name
                self.finish(span, route)
            else:
                self.finish(span)


class _PatchMiddleware(TracingMiddleware):
    """The middleware :func:`patch` adds: quiet once :func:`unpatch` has run."""

    def _active(self) -> bool:
        return _patch_in_effect


def setup(
    app: web.Application, middleware: TracingMiddleware | None = None, **options: Any
) -> None:
    """Trace ``app``'s requests: put a :class:`TracingMiddleware` first in its middlewares.

    ``options`` are those of :class:`TracingMiddleware` (when ``middleware`` is not given).
    Does nothing if ``app`` already has a tomograph middleware.

    >>> from aiohttp import web
    >>> app = web.Application()
    >>> setup(app, service_name='orders')
    """
    if not any(isinstance(m, TracingMiddleware) for m in app.middlewares):
        app.middlewares.insert(0, middleware or TracingMiddleware(**options))


_CALL = "tomograph_call"


class TracingTraceConfig(TraceConfig):
    """An aiohttp ``TraceConfig`` that traces each request of a ``ClientSession``.

    Each request (redirects followed included) is one ``CLIENT`` span, child of the span
    current where the request is made (in its asyncio task), with the trace context written
    onto the request headers. Connection errors and timeouts are recorded on it.

    >>> import aiohttp
    >>> async def main():
    ...     async with aiohttp.ClientSession(trace_configs=[TracingTraceConfig()]) as session:
    ...         ...
    """

    def __init__(self, *, tracer: Tracer | None = None, propagator: Propagator | None = None):
        super().__init__()
        self.tracer = tracer
        self.propagator = propagator
        self.on_request_start.append(self._start)
        self.on_request_redirect.append(self._redirect)
        self.on_request_end.append(self._end)
        self.on_request_exception.append(self._exception)

    def _active(self) -> bool:
        return True

    async def _start(
        self, session: ClientSession, context: SimpleNamespace, params: TraceRequestStartParams
    ) -> None:
        if getattr(context, _CALL, None) is not None or not self._active():
            return  # already traced: a request reported as started twice stays one span
        call = begin(params.method, str(params.url), self.tracer)
        setattr(context, _CALL, call)
        if call is not None:
            call.inject(params.headers, self.propagator)

    async def _redirect(
        self, session: ClientSession, context: SimpleNamespace, params: TraceRequestRedirectParams
    ) -> None:
        call: ClientCall | None = getattr(context, _CALL, None)
        if call is not None:
            call.span.annotate(f"redirect {params.response.status}")
            call.inject(params.headers, self.propagator)  # the next hop's headers

    async def _end(
        self, session: ClientSession, context: SimpleNamespace, params: TraceRequestEndParams
    ) -> None:
        call: ClientCall | None = getattr(context, _CALL, None)
        if call is not None:
            setattr(context, _CALL, None)
            call.end(params.response.status)

    async def _exception(
        self, session: ClientSession, context: SimpleNamespace, params: TraceRequestExceptionParams
    ) -> None:
        call: ClientCall | None = getattr(context, _CALL, None)
        if call is not None:
            setattr(context, _CALL, None)
            error = params.exception
            # raise_for_status: the server did answer, with this status
            status = error.status if isinstance(error, ClientResponseError) else None
            call.end(status or None, error=error)


class _PatchTraceConfig(TracingTraceConfig):
    """The trace config :func:`patch` gives every session: quiet once :func:`unpatch` has run."""

    def _active(self) -> bool:
        return _patch_in_effect


# What patch() added to applications and sessions stays there; unpatch() turns it off with this.
_patch_in_effect = False
_PATCH_MIDDLEWARE: Final = _PatchMiddleware()
_PATCH_TRACE_CONFIG: Final = _PatchTraceConfig()


def _traced_pre_freeze(pre_freeze: Any) -> Any:
    def traced_pre_freeze(self: web.Application) -> None:
        if not self.pre_frozen:  # middlewares can be added until the app is frozen
            setup(self, _PATCH_MIDDLEWARE)
        pre_freeze(self)

    return traced_pre_freeze


def _traced_session_init(init: Any) -> Any:
    def __init__(self: ClientSession, *args: Any, **kwargs: Any) -> None:
        configs = list(kwargs.get("trace_configs") or ())
        if not any(isinstance(c, TracingTraceConfig) for c in configs):
            configs.append(_PATCH_TRACE_CONFIG)
        kwargs["trace_configs"] = configs
        init(self, *args, **kwargs)

    return __init__


def patch() -> bool:
    """Trace every ``web.Application`` started and every ``ClientSession`` created from now on.

    An application that is already running, or a session that exists, is not changed.
    """
    global _patch_in_effect
    server = patch_method(web.Application, "pre_freeze", _traced_pre_freeze)
    client = patch_method(ClientSession, "__init__", _traced_session_init)
    _patch_in_effect = True
    return server or client


def unpatch() -> bool:
    """Undo :func:`patch`; applications and sessions made meanwhile stop tracing too."""
    global _patch_in_effect
    _patch_in_effect = False
    server = unpatch_method(web.Application, "pre_freeze")
    return unpatch_method(ClientSession, "__init__") or server


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(web.Application, "pre_freeze")
