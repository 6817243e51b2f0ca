"""patch_all(): every installed HTTP client traced once, with one span per request."""

from __future__ import annotations

import http.client

import requests
from tests.integrations.http_client_checks import check_traced_request
from tests.support.http_recorder import RecordingServer

import tomograph
from tomograph.integrations import patch_all, unpatch_all
from tomograph.reporting.memory import MemoryBackend


def test_patch_all_gives_one_span_per_request_through_every_layer(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    original = http.client.HTTPConnection.request
    assert patch_all() == ["requests", "urllib3", "http.client", "httpx"]
    try:
        assert patch_all() == []
        with tomograph.span("parent") as parent:
            requests.get(f"{recorder.url}/layers")  # requests -> urllib3 -> http.client
        check_traced_request(memory, recorder, parent)
    finally:
        assert unpatch_all() == ["requests", "urllib3", "http.client", "httpx"]
    assert http.client.HTTPConnection.request is original
