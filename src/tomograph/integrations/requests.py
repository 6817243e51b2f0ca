"""requests: a client span per request sent, trace context injected into its headers.

Opt in per session, or patch every session::

    from tomograph.integrations.requests import instrument_session, patch
    session = instrument_session(requests.Session())
    patch()  # every requests.Session, including requests.get()

Each redirect hop is its own span. See docs/http-clients.md for the tags.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import requests

from tomograph.integrations.http_client import begin
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.propagation import Propagator
from tomograph.tracer import Tracer

__all__ = ["instrument_session", "patch", "patched", "unpatch"]


def _traced_send(
    send: Callable[..., requests.Response],
    tracer: Tracer | None = None,
    propagator: Propagator | None = None,
    bound: bool = False,
) -> Callable[..., requests.Response]:
    def traced(*args: Any, **kwargs: Any) -> requests.Response:
        request = args[0] if bound else args[1]
        call = begin(request.method or "GET", request.url or "", tracer)
        if call is None:
            return send(*args, **kwargs)
        try:
            call.inject(request.headers, propagator)
            response = send(*args, **kwargs)
        except BaseException as error:
            call.end(error=error)
            raise
        call.end(response.status_code)
        return response

    return functools.wraps(send)(traced)


def instrument_session(
    session: requests.Session,
    *,
    tracer: Tracer | None = None,
    propagator: Propagator | None = None,
) -> requests.Session:
    """Trace every request ``session`` sends; returns the session.

    >>> import requests
    >>> session = instrument_session(requests.Session())
    """
    patch_method(session, "send", lambda send: _traced_send(send, tracer, propagator, bound=True))
    return session


def patch() -> bool:
    """Trace every ``requests.Session`` (and ``requests.get`` etc.); False if already done."""
    return patch_method(requests.Session, "send", _traced_send)


def unpatch() -> bool:
    """Undo :func:`patch`."""
    return unpatch_method(requests.Session, "send")


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(requests.Session, "send")
