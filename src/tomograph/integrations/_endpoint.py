"""Zipkin endpoints for the peers integrations talk to, built once per address."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tomograph.model import Endpoint

__all__ = ["Memo", "memoize", "peer_endpoint"]

T_co = TypeVar("T_co", covariant=True)


class Memo(Protocol[T_co]):
    """A builder with a bounded cache of its results (see :func:`memoize`)."""

    def __call__(self, *args: Any) -> T_co: ...

    def cache_clear(self) -> None:
        """Forget every cached result."""
        ...


def memoize(build: Callable[..., T_co], maxsize: int) -> Memo[T_co]:
    """``build`` behind an LRU cache of ``maxsize`` results (C-level lookups, bounded memory).

    Arguments that cannot be hashed (a WSGI server passing a list for a port) are built every
    time instead of raising.

    >>> double = memoize(lambda x: [x, x], 8)
    >>> double(1) is double(1), double([1]) is double([1])
    (True, False)
    """
    cached = functools.lru_cache(maxsize=maxsize)(build)

    def lookup(*args: Any) -> T_co:
        try:
            return cached(*args)
        except TypeError:
            return build(*args)

    lookup.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    return lookup  # type: ignore[return-value]


@functools.lru_cache(maxsize=512)
def peer_endpoint(service_name: str | None, host: str | None, port: int | None) -> Endpoint:
    """An :class:`Endpoint` for ``host:port``; a host name (not an address) is left out.

    Zipkin endpoints carry IP addresses only, so integrations also tag the host name
    (``server.address``) when it is not an address.

    >>> peer_endpoint('postgresql', '127.0.0.1', 5432)
    Endpoint(service_name='postgresql', ipv4='127.0.0.1', ipv6=None, port=5432)
    """
    ipv4 = ipv6 = None
    if host:
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            pass  # a host name: resolving it here would block the application
        else:
            if address.version == 4:
                ipv4 = str(address)
            else:
                ipv6 = str(address)
    return Endpoint(service_name, ipv4, ipv6, port or None)
