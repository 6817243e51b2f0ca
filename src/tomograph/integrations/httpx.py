"""httpx: client spans from a transport wrapper (sync and async), or by patching httpx.

::

    from tomograph.integrations.httpx import AsyncTracingTransport, TracingTransport
    client = httpx.Client(transport=TracingTransport())
    client = httpx.AsyncClient(transport=AsyncTracingTransport())

    from tomograph.integrations.httpx import patch
    patch()  # every HTTPTransport and AsyncHTTPTransport

The span ends when the response headers arrive (a streamed body is read afterwards).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from tomograph.integrations.http_client import begin
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.propagation import Propagator
from tomograph.tracer import Tracer

__all__ = ["AsyncTracingTransport", "TracingTransport", "patch", "patched", "unpatch"]


def _send(
    handle: Callable[[httpx.Request], httpx.Response],
    request: httpx.Request,
    tracer: Tracer | None,
    propagator: Propagator | None,
) -> httpx.Response:
    """``handle(request)`` inside a client span, the trace context in the request's headers."""
    call = begin(request.method, str(request.url), tracer)
    if call is None:
        return handle(request)
    try:
        call.inject(request.headers, propagator)
        response = handle(request)
    except BaseException as error:
        call.end(error=error)
        raise
    call.end(response.status_code)
    return response


async def _send_async(
    handle: Callable[[httpx.Request], Awaitable[httpx.Response]],
    request: httpx.Request,
    tracer: Tracer | None,
    propagator: Propagator | None,
) -> httpx.Response:
    """The async twin of :func:`_send`."""
    call = begin(request.method, str(request.url), tracer)
    if call is None:
        return await handle(request)
    try:
        call.inject(request.headers, propagator)
        response = await handle(request)
    except BaseException as error:
        call.end(error=error)
        raise
    call.end(response.status_code)
    return response


class TracingTransport(httpx.BaseTransport):
    """Wraps a transport (default: ``httpx.HTTPTransport()``) and traces each request.

    >>> import httpx
    >>> client = httpx.Client(transport=TracingTransport())
    >>> client.close()
    """

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport()
        self.tracer = tracer
        self.propagator = propagator

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport inside a client span."""
        return _send(self.transport.handle_request, request, self.tracer, self.propagator)

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


class AsyncTracingTransport(httpx.AsyncBaseTransport):
    """Wraps an async transport (default: ``httpx.AsyncHTTPTransport()``) and traces requests.

    >>> import httpx
    >>> client = httpx.AsyncClient(transport=AsyncTracingTransport())
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
    ) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.tracer = tracer
        self.propagator = propagator

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through the wrapped transport inside a client span."""
        return await _send_async(
            self.transport.handle_async_request, request, self.tracer, self.propagator
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()


def _traced_sync(handle: Any) -> Any:
    def handle_request(self: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        return _send(functools.partial(handle, self), request, None, None)

    return handle_request


def _traced_async(handle: Any) -> Any:
    async def handle_async_request(
        self: httpx.AsyncHTTPTransport, request: httpx.Request
    ) -> httpx.Response:
        return await _send_async(functools.partial(handle, self), request, None, None)

    return handle_async_request


def patch() -> bool:
    """Trace every ``httpx.HTTPTransport`` and ``httpx.AsyncHTTPTransport`` request."""
    done = patch_method(httpx.HTTPTransport, "handle_request", _traced_sync)
    return patch_method(httpx.AsyncHTTPTransport, "handle_async_request", _traced_async) or done


def unpatch() -> bool:
    """Undo :func:`patch`."""
    done = unpatch_method(httpx.HTTPTransport, "handle_request")
    return unpatch_method(httpx.AsyncHTTPTransport, "handle_async_request") or done


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(httpx.HTTPTransport, "handle_request")
