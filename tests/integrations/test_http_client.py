"""The client contract's peers: the same endpoint whether built or cached."""

from __future__ import annotations

from tomograph.integrations import http_client
from tomograph.integrations.http_client import begin
from tomograph.model import Endpoint
from tomograph.reporting.memory import MemoryBackend


def _peer_of(url: str) -> tuple[object, object]:
    call = begin("GET", url)
    assert call is not None
    call.end(200)
    return call.span.remote_endpoint, call.span.tags.get("server.address")


def test_peers_are_the_same_whether_built_or_cached(memory: MemoryBackend) -> None:
    http_client._peer_of_netloc.cache_clear()
    cases = {
        "http://127.0.0.1:8080/a?x=1": (Endpoint(None, "127.0.0.1", None, 8080), None),
        "https://[::1]/b": (Endpoint(None, None, "::1", 443), None),
        "http://api.example.com/c": (Endpoint(None, None, None, 80), "api.example.com"),
        "http://host:99999/": (Endpoint(None, None, None, None), None),  # a bad port
        "http://[::1/": (Endpoint(None, None, None, None), None),  # unparsable
    }
    for _ in range(2):  # built, then from the cache
        for url, expected in cases.items():
            assert _peer_of(url) == expected, url
    assert len(memory.spans) == 2 * len(cases)
