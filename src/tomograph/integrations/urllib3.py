"""urllib3: a client span per ``urlopen``, trace context injected into its headers.

Opt in per pool or pool manager, or patch every connection pool::

    from tomograph.integrations.urllib3 import instrument, patch
    http = instrument(urllib3.PoolManager())
    patch()

Retries inside one ``urlopen`` call share its span; with a ``PoolManager`` instrumented, its
redirects do too. See docs/http-clients.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import urllib3
from urllib3.connectionpool import HTTPConnectionPool

from tomograph.integrations.http_client import begin
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.propagation import Propagator
from tomograph.tracer import Tracer

__all__ = ["instrument", "patch", "patched", "unpatch"]

P = TypeVar("P", HTTPConnectionPool, urllib3.PoolManager)


def _full_url(owner: Any, url: str) -> str:
    if "://" in url or not isinstance(owner, HTTPConnectionPool):
        return url
    host = owner.host
    if host and ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = f":{owner.port}" if owner.port else ""
    return f"{owner.scheme}://{host}{port}{url}"


def _call_traced(
    urlopen: Callable[..., Any],
    pool: Any,
    method: str,
    url: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tracer: Tracer | None,
    propagator: Propagator | None,
) -> Any:
    """Run ``urlopen(method, url, *args, **kwargs)`` (already bound) inside a client span."""
    call = begin(method, _full_url(pool, url), tracer)
    if call is None:
        return urlopen(method, url, *args, **kwargs)
    try:
        # urlopen(method, url, body=None, headers=None, ...) on a pool; headers= keyword on a
        # PoolManager. Either way the headers go in a copy, never into the caller's dict.
        if isinstance(pool, HTTPConnectionPool) and len(args) >= 2:
            headers = dict(args[1] if args[1] is not None else pool.headers)
            call.inject(headers, propagator)
            args = (args[0], headers, *args[2:])
        else:
            given = kwargs.get("headers")
            headers = dict(given if given is not None else pool.headers)
            call.inject(headers, propagator)
            kwargs["headers"] = headers
        response = urlopen(method, url, *args, **kwargs)
    except BaseException as error:
        call.end(error=error)
        raise
    call.end(response.status)
    return response


def _traced_urlopen(urlopen: Callable[..., Any]) -> Callable[..., Any]:
    def traced(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        return _call_traced(
            functools.partial(urlopen, self), self, method, url, args, kwargs, None, None
        )

    return functools.wraps(urlopen)(traced)


def instrument(pool: P, *, tracer: Tracer | None = None, propagator: Propagator | None = None) -> P:
    """Trace every ``urlopen``/``request`` of one pool or pool manager; returns it.

    >>> import urllib3
    >>> http = instrument(urllib3.PoolManager())
    """

    def wrap(bound: Callable[..., Any]) -> Callable[..., Any]:
        def traced(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            return _call_traced(bound, pool, method, url, args, kwargs, tracer, propagator)

        return functools.wraps(bound)(traced)

    patch_method(pool, "urlopen", wrap)
    return pool


def patch() -> bool:
    """Trace every urllib3 connection pool (so every ``PoolManager``); False if already done."""
    return patch_method(HTTPConnectionPool, "urlopen", _traced_urlopen)


def unpatch() -> bool:
    """Undo :func:`patch`."""
    return unpatch_method(HTTPConnectionPool, "urlopen")


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(HTTPConnectionPool, "urlopen")
