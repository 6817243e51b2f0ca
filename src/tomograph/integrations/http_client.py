"""The HTTP client contract: what every client integration does around a request.

An adapter (requests, urllib3, http.client, httpx, eventlet's green clients, Tornado's
``send_request``) calls :func:`begin` with the method and URL, writes the trace context onto
the outgoing headers with :meth:`ClientCall.inject`, sends, and calls :meth:`ClientCall.end`
with the response status or the exception::

    call = begin(request.method, request.url)
    if call is None:                        # traced by an outer layer, or tracing is off
        return send(request)
    try:
        call.inject(request.headers)
        response = send(request)
    except BaseException as error:
        call.end(error=error)
        raise
    call.end(response.status_code)          # 4xx and 5xx are errors of a client call

The span is a ``CLIENT`` span named after the method, tagged ``http.method``, ``http.url``
(credentials and signed-URL secrets removed, see :func:`safe_url`), ``server.address`` for a
host name, and ``http.status_code``; its remote endpoint is the server's address and port.

Client libraries are layered (requests on urllib3 on http.client), and each layer can be
instrumented: only the outermost one records a span. A layer knows it is nested when the current
span is the client span another layer started.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from typing import Any
from urllib.parse import urlsplit

from tomograph._cache import memoize
from tomograph.context import CURRENT_SPAN, SUPPRESS_TRACING
from tomograph.integrations.http_status import CLIENT_ERRORS_FROM, record_status
from tomograph.model import Endpoint, SpanKind
from tomograph.model import endpoint_for as peer_endpoint
from tomograph.propagation import Propagator, default_propagator
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer
from tomograph.urls import safe_url

__all__ = ["ClientCall", "begin"]

_active_client_span: ContextVar[Span | None] = ContextVar(
    "tomograph_active_http_client_span", default=None
)
_CLIENT = SpanKind.CLIENT
_log = logging.getLogger("tomograph")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ClientCall:
    """A client span in progress: current (so nested layers stay quiet) until :meth:`end`."""

    __slots__ = ("_active_token", "_token", "span")

    def __init__(self, span: Span, activate: bool = True) -> None:
        self.span = span
        self._token: Token[Span | None] | None = None
        self._active_token: Token[Span | None] | None = None
        if activate:
            self._token = CURRENT_SPAN.set(span)
            self._active_token = _active_client_span.set(span)

    def inject(self, carrier: Any, propagator: Propagator | None = None) -> None:
        """Write the span's context onto the outgoing request's headers (never raises)."""
        try:
            (propagator or default_propagator()).inject(self.span, carrier)
        except Exception:
            # The request must go out even if its headers cannot carry the trace.
            _log.debug("tomograph: cannot inject trace headers into %r", carrier, exc_info=True)

    def end(self, status: int | None = None, error: BaseException | None = None) -> None:
        """Tag the response status (4xx and 5xx are errors) or the failure, and finish."""
        span = self.span
        token, active = self._token, self._active_token
        if token is not None and active is not None:
            self._token = self._active_token = None
            # Each reset on its own: one failing must not leave the other variable set.
            try:
                CURRENT_SPAN.reset(token)
            except ValueError:
                pass  # ended in another context (a callback thread): nothing to restore here
            try:
                _active_client_span.reset(active)
            except ValueError:
                pass
        if error is not None:
            span.record_exception(error)
        if status is not None:
            record_status(span, status, CLIENT_ERRORS_FROM)
        span.finish()


def _new_peer(scheme: str, netloc: str) -> tuple[str | None, Endpoint]:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        host = port = None
    return host, peer_endpoint(None, host, port)


# By (scheme, netloc): a client calls few servers, and reading hostname and port from a split
# URL costs more than the rest of starting a span.
_peer_of_netloc = memoize(_new_peer, 512)


def _peer(url: str) -> tuple[str | None, Endpoint]:
    """The host name (None if unparsable) and the remote endpoint of a request to ``url``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None, peer_endpoint(None, None, None)
    return _peer_of_netloc(parts.scheme, parts.netloc)


def begin(
    method: str, url: str, tracer: Tracer | None = None, activate: bool = True
) -> ClientCall | None:
    """Start the client span for a request; None if an outer layer traces it or tracing is off.

    ``activate=False`` leaves the current span alone: for APIs where the application runs
    between sending the request and reading the response (``http.client``).

    >>> call = begin('GET', 'http://127.0.0.1:8080/items')
    >>> call.span.name, call.span.tags['http.url']
    ('GET', 'http://127.0.0.1:8080/items')
    >>> call.end(200)
    """
    if SUPPRESS_TRACING.get():
        return None  # tomograph delivering spans, or the application asked for no tracing
    current = CURRENT_SPAN.get()
    if current is not None and current is _active_client_span.get():
        return None
    method = method.upper() if isinstance(method, str) else str(method)
    host, remote = _peer(url)
    span = Span(tracer or get_tracer(), method, _CLIENT, None, CURRENT, None, remote)
    if span.sampled:
        tags = span.tags
        tags["http.method"] = method
        tags["http.url"] = safe_url(url)
        if host and remote.ipv4 is None and remote.ipv6 is None:
            tags["server.address"] = host
    return ClientCall(span, activate)
