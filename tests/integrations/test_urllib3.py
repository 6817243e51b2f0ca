"""urllib3: client spans and injected headers, against a real server on 127.0.0.1."""

from __future__ import annotations

import urllib3
from tests.integrations.http_client_checks import check_traced_request, client_spans
from tests.support.http_recorder import RecordingServer

import tomograph
from tomograph.integrations import urllib3 as traced_urllib3
from tomograph.reporting.memory import MemoryBackend


def test_instrumented_pool_manager(memory: MemoryBackend, recorder: RecordingServer) -> None:
    http = traced_urllib3.instrument(urllib3.PoolManager())
    with tomograph.span("parent") as parent:
        response = http.request("GET", f"{recorder.url}/pm", headers={"X-Own": "kept"})
    assert response.status == 200
    check_traced_request(memory, recorder, parent)
    assert recorder.requests[-1].headers["x-own"] == "kept"


def test_instrumented_connection_pool_with_positional_headers(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    pool = traced_urllib3.instrument(urllib3.HTTPConnectionPool("127.0.0.1", recorder.port))
    given = {"X-Own": "1"}
    with tomograph.span("parent") as parent:
        pool.urlopen("GET", "/pool", None, given)
    span = check_traced_request(memory, recorder, parent)
    assert span.tags["http.url"] == f"{recorder.url}/pool"
    assert given == {"X-Own": "1"}  # the caller's dict is not changed


def test_patch_covers_every_pool_and_unpatch_restores(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    assert traced_urllib3.patch()
    try:
        with tomograph.span("parent") as parent:
            urllib3.request("GET", f"{recorder.url}/status/404")
        span = check_traced_request(memory, recorder, parent, status=404)
        assert span.error
    finally:
        assert traced_urllib3.unpatch()
    urllib3.request("GET", recorder.url)
    assert len(client_spans(memory)) == 1
