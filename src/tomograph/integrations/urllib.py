"""http.client and urllib.request: a client span per request, trace context injected.

Opt in with the traced connection classes, or an ``urllib.request`` opener, or patch
``http.client`` (which ``urllib.request`` uses)::

    from tomograph.integrations.urllib import TracingHTTPConnection, build_opener, patch
    opener = build_opener()
    opener.open('http://127.0.0.1:8080/items')
    patch()

The span starts in ``HTTPConnection.request()`` and ends in ``getresponse()`` (or when the
request fails). Requests written header by header (``putrequest``/``putheader``) are not traced.
"""

from __future__ import annotations

import functools
import http.client
import urllib.request
from collections.abc import Callable
from typing import Any

from tomograph.context import CURRENT_SPAN
from tomograph.integrations.http_client import ClientCall, begin
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method

__all__ = [
    "TracingHTTPConnection",
    "TracingHTTPHandler",
    "TracingHTTPSConnection",
    "TracingHTTPSHandler",
    "build_opener",
    "patch",
    "patch_connection_class",
    "patched",
    "unpatch",
    "unpatch_connection_class",
]

_CALL = "_tomograph_call"


def _url(connection: http.client.HTTPConnection, target: str) -> str:
    if "://" in target:
        return target  # absolute form (through a proxy)
    scheme = "https" if isinstance(connection, http.client.HTTPSConnection) else "http"
    host = connection.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{connection.port}{target}"


def _end_pending(
    connection: Any, status: int | None = None, error: BaseException | None = None
) -> None:
    call: ClientCall | None = connection.__dict__.pop(_CALL, None)
    if call is not None:
        call.end(status, error)


def _traced_request(request: Callable[..., None]) -> Callable[..., None]:
    def traced(
        self: http.client.HTTPConnection,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> None:
        _end_pending(self)  # a previous request whose response was never read
        call = begin(method, _url(self, url), None, activate=False)
        if call is None:
            request(self, method, url, body, {} if headers is None else headers, **kwargs)
            return
        try:
            outgoing = dict(headers) if headers else {}
            call.inject(outgoing)
            request(self, method, url, body, outgoing, **kwargs)
        except BaseException as error:
            call.end(error=error)
            raise
        self.__dict__[_CALL] = call

    return functools.wraps(request)(traced)


def _traced_getresponse(
    getresponse: Callable[[http.client.HTTPConnection], http.client.HTTPResponse],
) -> Callable[[http.client.HTTPConnection], http.client.HTTPResponse]:
    def traced(self: http.client.HTTPConnection) -> http.client.HTTPResponse:
        if _CALL not in self.__dict__:
            return getresponse(self)
        try:
            response = getresponse(self)
        except BaseException as error:
            _end_pending(self, error=error)
            raise
        _end_pending(self, response.status)
        return response

    return functools.wraps(getresponse)(traced)


def _original(owner: type, name: str) -> Any:
    # The library's own method even if http.client is patched: a traced class must not
    # wrap the patch (that would record each request twice).
    method = getattr(owner, name)
    return getattr(method, "__tomograph_original__", method)


class TracingHTTPConnection(http.client.HTTPConnection):
    """An ``http.client.HTTPConnection`` whose requests are client spans.

    >>> connection = TracingHTTPConnection('127.0.0.1', 8080)
    """

    request = _traced_request(_original(http.client.HTTPConnection, "request"))
    getresponse = _traced_getresponse(_original(http.client.HTTPConnection, "getresponse"))


class TracingHTTPSConnection(http.client.HTTPSConnection):
    """An ``http.client.HTTPSConnection`` whose requests are client spans."""

    request = _traced_request(_original(http.client.HTTPSConnection, "request"))
    getresponse = _traced_getresponse(_original(http.client.HTTPSConnection, "getresponse"))


class TracingHTTPHandler(urllib.request.HTTPHandler):
    """A ``urllib.request`` handler that sends ``http://`` requests over traced connections."""

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Open ``req`` over a :class:`TracingHTTPConnection`."""
        return self.do_open(TracingHTTPConnection, req)


class TracingHTTPSHandler(urllib.request.HTTPSHandler):
    """A ``urllib.request`` handler that sends ``https://`` requests over traced connections."""

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Open ``req`` over a :class:`TracingHTTPSConnection` (same TLS context as urllib's)."""
        context = getattr(self, "_context", None)
        return self.do_open(TracingHTTPSConnection, req, context=context)


def build_opener(*handlers: Any) -> urllib.request.OpenerDirector:
    """``urllib.request.build_opener`` with traced HTTP and HTTPS handlers.

    >>> opener = build_opener()
    """
    return urllib.request.build_opener(TracingHTTPHandler, TracingHTTPSHandler, *handlers)


def _traced_request_in_spans(request: Callable[..., None]) -> Callable[..., None]:
    traced = _traced_request(request)

    def request_in_span(self: Any, *args: Any, **kwargs: Any) -> None:
        if CURRENT_SPAN.get() is None:
            return request(self, *args, **kwargs)
        return traced(self, *args, **kwargs)

    return functools.wraps(request)(request_in_span)


def patch_connection_class(
    connection_class: type[http.client.HTTPConnection], *, only_in_spans: bool = False
) -> bool:
    """Trace the requests of ``connection_class`` and its subclasses; False if already done.

    For ``http.client`` and its copies (``eventlet.green.http.client.HTTPConnection``).
    ``only_in_spans=True`` leaves requests made outside any span alone, so background calls
    start no traces of their own.

    >>> class Connection(http.client.HTTPConnection): ...
    >>> patch_connection_class(Connection), unpatch_connection_class(Connection)
    (True, True)
    """
    wrap = _traced_request_in_spans if only_in_spans else _traced_request
    done = patch_method(connection_class, "request", wrap)
    return patch_method(connection_class, "getresponse", _traced_getresponse) or done


def unpatch_connection_class(connection_class: type[http.client.HTTPConnection]) -> bool:
    """Undo :func:`patch_connection_class`."""
    done = unpatch_method(connection_class, "request")
    return unpatch_method(connection_class, "getresponse") or done


def patch() -> bool:
    """Trace every ``http.client`` connection (so ``urllib.request.urlopen`` too)."""
    return patch_connection_class(http.client.HTTPConnection)


def unpatch() -> bool:
    """Undo :func:`patch`."""
    return unpatch_connection_class(http.client.HTTPConnection)


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(http.client.HTTPConnection, "request")
