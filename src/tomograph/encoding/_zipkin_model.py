"""What the Zipkin codecs share: span fields as epoch values, endpoint fields and checks.

Both codecs decode to the span dict of :mod:`tomograph.encoding.normalize`, so the collector
handles one shape whatever the wire format was.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from tomograph._cache import memoize
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.values import safe_text
from tomograph.model import Endpoint

__all__ = [
    "KINDS",
    "MAX_U64",
    "endpoint_fields",
    "normalize_endpoint",
    "normalize_ipv4",
    "normalize_ipv6",
    "note_pairs",
    "show",
]

KINDS = ("CLIENT", "SERVER", "PRODUCER", "CONSUMER")
MAX_U64 = (1 << 64) - 1


def note_pairs(notes: list[tuple[int, str, int | None]], offset: int) -> list[tuple[int, str]]:
    """Notes as (epoch µs, value) pairs, exact duplicates dropped (Zipkin's annotations are a
    set: its API requires unique items). ``offset`` is the span's epoch offset (ns).

    >>> note_pairs([(0, 'a', None), (0, 'a', None)], 5_000)
    [(5, 'a')]
    """
    pairs = [
        ((mono + offset) // 1000, value if value.__class__ is str else safe_text(value))
        for mono, value, _duration in notes
    ]
    return list(dict.fromkeys(pairs)) if len(pairs) > 1 else pairs


def _new_normalize_ipv4(text: str) -> str | None:
    """Dotted-quad text of an IPv4 address, or None if ``text`` is not one."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return None


normalize_ipv4 = memoize(_new_normalize_ipv4, 4096)


def _new_normalize_ipv6(text: str) -> str | None:
    """Compressed text of an IPv6 address, or None if ``text`` is not one."""
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


normalize_ipv6 = memoize(_new_normalize_ipv6, 4096)


def endpoint_fields(endpoint: Endpoint) -> dict[str, Any] | None:
    """An endpoint as Zipkin fields (invalid addresses and ports left out); None if empty.

    Cached: a tracer reports every span under the same few endpoints.

    >>> endpoint_fields(Endpoint('Billing', ipv4='10.0.0.7', port=8080))
    {'serviceName': 'billing', 'ipv4': '10.0.0.7', 'port': 8080}
    """
    try:
        return _cached_endpoint_fields(endpoint)
    except TypeError:  # an endpoint holding something unhashable (a list as service name)
        return _endpoint_fields(endpoint)


def _endpoint_fields(endpoint: Endpoint) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    service, ipv4, ipv6, port = endpoint
    if service:
        fields["serviceName"] = safe_text(service).lower()
    if ipv4:
        ipv4 = normalize_ipv4(str(ipv4))
        if ipv4:
            fields["ipv4"] = ipv4
    if ipv6:
        ipv6 = normalize_ipv6(str(ipv6))
        if ipv6:
            fields["ipv6"] = ipv6
    if port.__class__ is int and 0 < port <= 65535:
        fields["port"] = port
    return fields or None


_cached_endpoint_fields = memoize(_endpoint_fields, 4096)


def normalize_endpoint(index: int, field: str, value: object) -> dict[str, Any] | None:
    """Validate a decoded endpoint object; its fields (addresses canonical), or None if empty."""
    if not isinstance(value, dict):
        raise DecodeError(f"span {index}: {field} must be an object, not {show(value)}")
    fields: dict[str, Any] = {}
    service = value.get("serviceName")
    if service is not None:
        if not isinstance(service, str):
            raise DecodeError(f"span {index}: {field}.serviceName must be a string")
        if service:
            fields["serviceName"] = service
    ipv4 = value.get("ipv4")
    if ipv4:  # "" is "absent", as in proto3
        text = normalize_ipv4(ipv4) if isinstance(ipv4, str) else None
        if text is None:
            raise DecodeError(f"span {index}: {field}.ipv4 is not an IPv4 address: {show(ipv4)}")
        fields["ipv4"] = text
    ipv6 = value.get("ipv6")
    if ipv6:
        text = normalize_ipv6(ipv6) if isinstance(ipv6, str) else None
        if text is None:
            raise DecodeError(f"span {index}: {field}.ipv6 is not an IPv6 address: {show(ipv6)}")
        fields["ipv6"] = text
    port = value.get("port")
    if port is not None:
        if port.__class__ is not int or not 0 <= port <= 65535:
            raise DecodeError(f"span {index}: {field}.port must be 0 to 65535, not {show(port)}")
        if port:
            fields["port"] = port
    return fields or None


def show(value: object) -> str:
    """A short repr of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
