"""The request middleware: an adapter of Django's request cycle to the HTTP server contract.

Works as a sync and an async middleware (Django picks the mode of the chain it is in), so an
ASGI deployment with async views never crosses into a thread for it.
"""

from __future__ import annotations

import sys
from asyncio import CancelledError
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import got_request_exception
from django.db import Error as DatabaseError
from django.http import HttpRequest, HttpResponseBase, StreamingHttpResponse

from tomograph._cache import memoize
from tomograph.context import CURRENT_SPAN
from tomograph.integrations._sql import redact_database_error
from tomograph.integrations.asgi import SCOPE_KEY
from tomograph.integrations.django.database import recording_parameters
from tomograph.integrations.http_server import HttpServerHandler, enclosing_server_span
from tomograph.integrations.wsgi import ENVIRON_KEY
from tomograph.span import Span

__all__ = ["CANCELLED", "REQUEST_ATTRIBUTE", "TracingMiddleware", "route_template"]

#: The attribute of Django's ``HttpRequest`` that holds the request's span.
REQUEST_ATTRIBUTE = "tomograph_span"
# The id of the exception last recorded for the request: Django passes one exception through
# every middleware's handler (DEBUG_PROPAGATE_EXCEPTIONS sends got_request_exception for each).
_RECORDED = "_tomograph_recorded_exception"

#: The note on the span of a request cancelled because its client went away (ASGI).
CANCELLED = "cancelled: the client disconnected"

_set_current = CURRENT_SPAN.set
_reset_current = CURRENT_SPAN.reset

GetResponse = Callable[[HttpRequest], Any]


def _new_route(pattern: str) -> str:
    # Django joins include() prefixes into ResolverMatch.route and strips the inner "^" of
    # regex patterns; the outer one and the missing leading slash are left for us.
    return "/" + pattern.removeprefix("^").removeprefix("/")


# A project has few routes; bounded all the same (a URLconf built at run time).
_route_from_pattern = memoize(_new_route, 1024)


def route_template(request: HttpRequest) -> str | None:
    """The route the resolver matched, as written in the URLconf (``/users/<int:id>``).

    None when nothing matched (a 404 from the resolver) or the request was not resolved.

    >>> from django.urls import ResolverMatch
    >>> request = type('Request', (), {})()
    >>> request.resolver_match = ResolverMatch(print, (), {}, route='api/users/<int:id>')
    >>> route_template(request)
    '/api/users/<int:id>'
    """
    route = getattr(getattr(request, "resolver_match", None), "route", None)
    if not isinstance(route, str):
        return None
    template = _route_from_pattern(route)
    # Mounted under a prefix (SCRIPT_NAME, ASGI's root_path, a WSGI app mounted in FastAPI):
    # the route the client sees starts with it, as ``request.path`` does.
    path, path_info = getattr(request, "path", ""), getattr(request, "path_info", "")
    if isinstance(path, str) and isinstance(path_info, str) and len(path) > len(path_info):
        prefix = path[: len(path) - len(path_info)].rstrip("/")
        if prefix and path.endswith(path_info):
            return prefix + template
    return template


def _outer_span(request: HttpRequest) -> Span | None:
    """The span of tomograph's WSGI or ASGI middleware around Django, if there is one."""
    scope = getattr(request, "scope", None)  # ASGIRequest
    outer = scope.get(SCOPE_KEY) if scope is not None else request.META.get(ENVIRON_KEY)
    if isinstance(outer, Span) and not outer.end_ns:
        return outer
    # Or mounted in an application this process already traces the request for (FastAPI's
    # WSGIMiddleware): its span is the request's.
    return enclosing_server_span()


def _record_once(request: HttpRequest, span: Span, error: BaseException) -> None:
    if getattr(request, _RECORDED, None) != id(error) and not span.end_ns:
        setattr(request, _RECORDED, id(error))
        span.record_exception(error)
        if isinstance(error, DatabaseError) and not recording_parameters():
            # A failed statement's message may end with the row's values (PostgreSQL's DETAIL)
            redact_database_error(span, error)


def _record_failure(request: HttpRequest | None, span: Span, error: BaseException) -> None:
    if isinstance(error, CancelledError):
        # Django's ASGI handler cancels the request when the client disconnects: the
        # server did not fail.
        span.annotate(CANCELLED)
    elif request is not None:
        _record_once(request, span, error)
    else:
        span.record_exception(error)


def _record_request_exception(sender: Any, request: HttpRequest | None = None, **_: Any) -> None:
    # Django sends this while it turns an unhandled exception into a 500 page (inside its
    # ``except``, so the exception is the current one); the middleware never sees it raised.
    span = getattr(request, REQUEST_ATTRIBUTE, None)
    error = sys.exc_info()[1]
    if request is not None and span is not None and error is not None:
        _record_once(request, span, error)


got_request_exception.connect(
    _record_request_exception, weak=False, dispatch_uid="tomograph.record_request_exception"
)


class TracingMiddleware:
    """Django middleware that traces each request as a ``SERVER`` span.

    Put it first in ``MIDDLEWARE`` so the span covers the other middleware::

        MIDDLEWARE = ["tomograph.integrations.django.TracingMiddleware", ...]

    The span continues the caller's trace (every format the default propagator reads), is
    named ``"<METHOD> <route>"`` once the resolver has matched, and is in
    ``request.tomograph_span`` for views to tag. Under tomograph's WSGI or ASGI middleware it
    makes no span of its own: it tags theirs (route, view, exceptions).
    """

    sync_capable = True
    async_capable = True

    #: The server contract this middleware adapts (service and span name from the tracer).
    handler = HttpServerHandler()

    def __init__(self, get_response: GetResponse) -> None:
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def _enabled(self) -> bool:
        return True

    def _begin(self, request: HttpRequest) -> tuple[Span, bool] | None:
        """(span, owned) for this request; None when another layer of ours is tracing it."""
        if getattr(request, REQUEST_ATTRIBUTE, None) is not None or not self._enabled():
            return None
        outer = _outer_span(request)
        if outer is not None:
            setattr(request, REQUEST_ATTRIBUTE, outer)
            return outer, False
        meta = request.META
        span = self.handler.start(
            request.method or "GET",
            request.path,
            meta,
            meta.get("SERVER_NAME"),
            meta.get("SERVER_PORT"),
            meta.get("REMOTE_ADDR"),
            meta.get("REMOTE_PORT"),
        )
        setattr(request, REQUEST_ATTRIBUTE, span)
        return span, True

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self._acall(request)
        begun = self._begin(request)
        if begun is None:
            return self.get_response(request)
        span, owned = begun
        token = _set_current(span) if owned else None
        try:
            response = self.get_response(request)
        except BaseException as exc:
            self._failed(request, span, owned, exc)
            raise
        finally:
            if token is not None:
                _reset_current(token)
        self._respond(request, span, owned, response)
        return response

    async def _acall(self, request: HttpRequest) -> Any:
        begun = self._begin(request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if begun is None:
            return await get_response(request)
        span, owned = begun
        token = _set_current(span) if owned else None
        try:
            response = await get_response(request)
        except BaseException as exc:
            self._failed(request, span, owned, exc)
            raise
        finally:
            if token is not None:
                try:
                    _reset_current(token)
                except ValueError:
                    pass  # the chain switched contexts under us: nothing of ours to restore
        self._respond(request, span, owned, response)
        return response

    def _failed(self, request: HttpRequest, span: Span, owned: bool, exc: BaseException) -> None:
        # Exceptions Django lets through: BaseException subclasses, DEBUG_PROPAGATE_EXCEPTIONS
        # (then got_request_exception already recorded it).
        _record_failure(request, span, exc)
        route = route_template(request)
        self._tag_match(request, span, None if owned else route)
        if owned:
            self.handler.finish(span, route)

    @staticmethod
    def _tag_match(request: HttpRequest, span: Span, route: str | None) -> None:
        if not span.sampled:
            return
        match = getattr(request, "resolver_match", None)
        view = getattr(match, "_func_path", None)
        if isinstance(view, str):
            span.tags["django.view"] = view
        if route is not None:
            span.tags["http.route"] = route  # the outer layer names its span after it

    def _respond(
        self, request: HttpRequest, span: Span, owned: bool, response: HttpResponseBase
    ) -> None:
        route = route_template(request)
        if not owned:
            self._tag_match(request, span, route)
            return
        self._tag_match(request, span, None)
        handler = self.handler
        code = getattr(response, "status_code", None)  # a middleware may return anything
        if isinstance(code, int):
            handler.status(span, code)
        if not isinstance(response, StreamingHttpResponse):
            handler.finish(span, route)
            return
        # A streamed body runs the view's generator after the view returned: the span stays
        # current while it runs and ends with the last chunk (or when the server closes the
        # response early: a client that went away).
        closers = getattr(response, "_resource_closers", None)
        body = response.streaming_content
        # The view's own iterator, to be closed inside the span too: a generator that yields
        # inside ``with tomograph.span()`` restores the current span when it is closed.
        source = getattr(response, "_iterator", body)
        if response.is_async:
            response.streaming_content = _aiterate_in(span, handler, route, body, source)
        else:
            traced = _iterate_in(span, handler, route, body, source)
            response.streaming_content = traced
            if isinstance(closers, list):
                # Closed first, before Django closes the view's iterator outside the span.
                closers[:] = [traced.close, *(c for c in closers if c != traced.close)]
        if isinstance(closers, list):
            closers.append(lambda: handler.finish(span, route))


def _iterate_in(
    span: Span, handler: HttpServerHandler, route: str | None, body: Any, source: Any
) -> Generator[Any, None, None]:
    chunks = iter(body)
    try:
        while True:
            token = _set_current(span)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except BaseException as exc:
                span.record_exception(exc)
                raise
            finally:
                _reset_current(token)
            yield chunk
    finally:
        close = getattr(source, "close", None)
        token = _set_current(span)
        try:
            if close is not None:
                close()
        finally:
            _reset_current(token)
            handler.finish(span, route)


async def _aiterate_in(
    span: Span, handler: HttpServerHandler, route: str | None, body: Any, source: Any
) -> AsyncIterator[Any]:
    chunks = body.__aiter__()
    try:
        while True:
            token = _set_current(span)
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except BaseException as exc:
                _record_failure(None, span, exc)
                raise
            finally:
                try:
                    _reset_current(token)
                except ValueError:
                    pass
            yield chunk
    finally:
        close = getattr(source, "aclose", None)
        token = _set_current(span)
        try:
            if close is not None:
                await close()
        finally:
            try:
                _reset_current(token)
            except ValueError:
                pass
            handler.finish(span, route)
