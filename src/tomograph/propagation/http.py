"""The classic HTTP helpers: ``tomograph.start_http`` and ``tomograph.add_trace_info_header``.

A server continues the caller's trace with :func:`start_http` and closes the span with
``tomograph.stop(name)``; a client adds its current span's context to outgoing headers with
:func:`add_trace_info_header`. Both use the configured propagation formats (see
:mod:`tomograph.propagation.composite`).

>>> import tomograph
>>> headers = {'b3': '80f198ee56343ba8-e457b5a2e4d86bd1-1'}
>>> span = tomograph.start_http('my service', 'handle', headers)
>>> f'{span.trace_id:x}'
'80f198ee56343ba8'
>>> tomograph.stop('handle')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tomograph.context import CURRENT_SPAN
from tomograph.model import Endpoint, SpanKind, TraceContext, endpoint_for
from tomograph.propagation.baggage import adopt_baggage
from tomograph.propagation.carriers import log, reader_for
from tomograph.propagation.composite import default_propagator
from tomograph.span import CURRENT, Span
from tomograph.tracer import get_tracer

__all__ = ["add_trace_info_header", "start_http"]


def add_trace_info_header(headers: Any) -> None:
    """Write the current span's trace context into ``headers``, in every configured format.

    ``headers`` is a dict or a request object (``urllib.request.Request``, a
    ``requests.PreparedRequest``, ...). Outside any span it does nothing.

    >>> import tomograph
    >>> headers = {}
    >>> with tomograph.span('call billing', kind='client'):
    ...     tomograph.add_trace_info_header(headers)
    >>> 'traceparent' in headers and 'x-b3-traceid' in headers
    True
    """
    span = CURRENT_SPAN.get()
    if span is None:
        log.debug("add_trace_info_header outside any span: no headers added")
        return
    default_propagator().inject(span, headers)


def _split_host(host: str) -> tuple[str | None, int | None]:
    """``'10.0.0.1:8080'`` -> ``('10.0.0.1', 8080)``; ``'[::1]:80'`` -> ``('::1', 80)``."""
    host = host.strip()
    if not host:
        return None, None
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        address, _, port_text = host.partition(":")
    else:
        address, port_text = host, ""
    return address or None, _port(port_text)


def _port(value: Any) -> int | None:
    """A TCP port from text or an int: 1 to 65535 in ASCII digits, else None.

    ``str.isdigit()`` alone is true for ``"\u00b2"``, which ``int()`` refuses, and for other
    scripts' digits: the request's other details were lost with it.
    """
    text = str(value) if isinstance(value, (int, str)) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def _ip_endpoint(address: Any, port: Any) -> Endpoint | None:
    """The client's endpoint, if ``address`` is an IP address."""
    endpoint = endpoint_for(None, address, None)  # cached by address: client ports vary
    if not (endpoint.ipv4 or endpoint.ipv6):
        return None
    number = _port(port)
    return endpoint._replace(port=number) if number else endpoint


def _describe(
    request: Any,
) -> tuple[str | None, int | None, Endpoint | None, str | None, str | None]:
    """(local address, local port, remote endpoint, method, path) of a request, where known."""
    environ = request if isinstance(request, Mapping) else getattr(request, "environ", None)
    if isinstance(environ, Mapping) and "REQUEST_METHOD" in environ:
        address, port = _split_host(str(environ.get("HTTP_HOST") or ""))
        if address is None:
            address = environ.get("SERVER_NAME")
        if port is None:
            port = _port(environ.get("SERVER_PORT"))
        remote = _ip_endpoint(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT"))
        return address, port, remote, environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
    if isinstance(request, Mapping):  # a plain dict of headers
        address, port = _split_host(reader_for(request).first("host") or "")
        return address, port, None, None, None
    address = port = remote = None
    server = getattr(request, "server", None)
    server_address = getattr(server, "server_address", None)
    if isinstance(server_address, tuple) and len(server_address) >= 2:
        address, port = str(server_address[0]), server_address[1]  # http.server handler
    else:
        host = getattr(request, "host", None)
        if isinstance(host, str):
            address, port = _split_host(host)
    client = getattr(request, "client_address", None)
    if isinstance(client, tuple) and len(client) >= 2:
        remote = _ip_endpoint(client[0], client[1])
    else:
        remote = _ip_endpoint(getattr(request, "remote_ip", None), None)  # Tornado
    method = getattr(request, "method", None) or getattr(request, "command", None)
    path = getattr(request, "path", None)
    if isinstance(path, str) and "?" in path:
        path = path.partition("?")[0]
    return (
        address,
        port if isinstance(port, int) else None,
        remote,
        method if isinstance(method, str) else None,
        path if isinstance(path, str) else None,
    )


def start_http(service_name: str, name: str, request: Any) -> Span:
    """Start a classic server span continuing the trace in ``request``'s headers.

    ``request`` is a dict of headers, a WSGI environ, or a request object of WebOb, Werkzeug,
    Tornado or ``http.server`` (anything with ``headers``). The span becomes current, like
    ``tomograph.start``; close it with ``tomograph.stop(name)``. Its local endpoint is the
    server's address and port, its remote endpoint the client's, where the request tells them.
    Headers that are missing or malformed start a new trace (or continue the current span).
    """
    propagator = default_propagator()
    reader = reader_for(request)
    context = propagator.extract(reader)
    try:
        address, port, remote, method, path = _describe(request)
    except Exception as error:  # an unusual request object must not break the request
        log.debug("reading the address of %r failed: %r", type(request).__name__, error)
        address = port = remote = method = path = None
    parent: Span | TraceContext | None = context if context is not None else CURRENT
    span = Span(
        get_tracer(),
        name,
        SpanKind.SERVER,
        None,
        parent,
        endpoint_for(service_name, address, port),
        remote,
    )
    span._classic = True  # like tomograph.start: notes "start" now, "stop" when finished
    if span.sampled:
        span.notes_raw.append((span.start_ns, "start", None))
    if context is None:
        adopt_baggage(span, propagator.extract_baggage(reader))
    if method:
        span.tag("http.method", method)
    if path:
        span.tag("http.path", path)
    span.__enter__()
    return span
