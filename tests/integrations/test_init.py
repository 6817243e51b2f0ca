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


def test_patched_clients_do_not_trace_tomograph_delivering_spans() -> None:
    from tests.support.zipkin_server import RecordingZipkinServer

    from tomograph import config

    with RecordingZipkinServer() as zipkin:
        tomograph.configure(
            service="patched", backends=[f"zipkin+{zipkin.url}?interval=0.05"], environ={}
        )
        patch_all()
        try:
            with tomograph.span("user work"):
                pass
            assert tomograph.flush(5)
            spans = zipkin.wait_for(1, timeout=1.0)
            # Let the worker run a few more send intervals: nothing else may arrive.
            tomograph.flush(0.5)
        finally:
            unpatch_all()
            config.reset()
        assert [span["name"] for span in zipkin.spans] == ["user work"]
        assert len(spans) == 1


def test_suppress_tracing_silences_patched_clients(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    from tomograph.context import suppress_tracing

    patch_all()
    try:
        with tomograph.span("parent"), suppress_tracing():
            requests.get(f"{recorder.url}/health")
    finally:
        unpatch_all()
    assert memory.names() == ["parent"]
    assert "traceparent" not in recorder.requests[-1].headers


def test_logging_name_is_the_integration_whatever_the_import_order() -> None:
    import importlib

    import tomograph.integrations as package

    module = importlib.import_module("tomograph.integrations.logging")
    assert package.logging is module
    assert hasattr(package.logging, "install")
