"""Zipkin endpoints for the peers integrations talk to, built once per address."""

from __future__ import annotations

import functools
import ipaddress

from tomograph.model import Endpoint

__all__ = ["peer_endpoint"]


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
