"""eventlet's green HTTP clients carry the trace: ``eventlet.green.http.client`` (which
``eventlet.green.httplib`` and ``eventlet.green.urllib.request`` use).

A request made while a span is current becomes a client span and carries its context in
the default propagator's headers (B3, W3C ``traceparent``, ...). Requests made outside any
span are left alone, so background calls do not start traces of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventlet.green.http import client as green_client

from tomograph.context import CURRENT_SPAN
from tomograph.integrations._patching import patch_method, unpatch_method
from tomograph.integrations.urllib import _traced_getresponse, _traced_request

__all__ = ["patch", "unpatch"]


def _trace_inside_spans(request: Callable[..., None]) -> Callable[..., None]:
    traced = _traced_request(request)

    def request_in_span(self: Any, *args: Any, **kwargs: Any) -> None:
        if CURRENT_SPAN.get() is None:
            return request(self, *args, **kwargs)
        return traced(self, *args, **kwargs)

    return request_in_span


def patch() -> None:
    """Trace green ``HTTPConnection`` (and ``HTTPSConnection``) requests."""
    patch_method(green_client.HTTPConnection, "request", _trace_inside_spans)
    patch_method(green_client.HTTPConnection, "getresponse", _traced_getresponse)


def unpatch() -> None:
    """Undo :func:`patch`."""
    unpatch_method(green_client.HTTPConnection, "request")
    unpatch_method(green_client.HTTPConnection, "getresponse")
