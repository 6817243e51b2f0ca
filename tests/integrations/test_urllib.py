"""http.client and urllib.request: client spans and injected headers, against a real server."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import pytest
from tests.integrations.http_client_checks import check_traced_request, client_spans
from tests.support.http_recorder import RecordingServer

import tomograph
from tomograph.integrations import urllib as traced_urllib
from tomograph.reporting.memory import MemoryBackend


def test_tracing_connection(memory: MemoryBackend, recorder: RecordingServer) -> None:
    connection = traced_urllib.TracingHTTPConnection("127.0.0.1", recorder.port)
    with tomograph.span("parent") as parent:
        connection.request("GET", "/conn", headers={"X-Own": "1"})
        # the client span is not current between request() and getresponse()
        assert tomograph.current_span() is parent
        response = connection.getresponse()
        response.read()
    connection.close()
    span = check_traced_request(memory, recorder, parent)
    assert span.tags["http.url"] == f"{recorder.url}/conn"
    assert recorder.requests[-1].headers["x-own"] == "1"


def test_opener(memory: MemoryBackend, recorder: RecordingServer) -> None:
    opener = traced_urllib.build_opener()
    with tomograph.span("parent") as parent, opener.open(f"{recorder.url}/opener") as response:
        assert response.status == 200
    check_traced_request(memory, recorder, parent)


def test_patched_urlopen_and_http_error(memory: MemoryBackend, recorder: RecordingServer) -> None:
    assert traced_urllib.patch()
    try:
        with tomograph.span("parent") as parent, pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{recorder.url}/status/500")
        span = check_traced_request(memory, recorder, parent, status=500)
        assert span.error
    finally:
        assert traced_urllib.unpatch()
    assert not traced_urllib.patched()


def test_unread_response_is_ended_by_the_next_request(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    connection = traced_urllib.TracingHTTPConnection("127.0.0.1", recorder.port)
    connection.request("GET", "/first")
    connection.close()  # the application gave up on the response
    connection.request("GET", "/second")
    connection.getresponse().read()
    connection.close()
    assert len(client_spans(memory)) == 2


def test_refused_connection_is_an_error(memory: MemoryBackend) -> None:
    from tests.support.servers import free_port

    connection = traced_urllib.TracingHTTPConnection("127.0.0.1", free_port(), timeout=5)
    with pytest.raises(ConnectionRefusedError):
        connection.request("GET", "/")
    (span,) = client_spans(memory)
    assert span.error
    assert isinstance(connection, http.client.HTTPConnection)


def test_a_patched_connection_class_traces_only_inside_spans(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    class Connection(http.client.HTTPConnection):
        pass

    assert traced_urllib.patch_connection_class(Connection, only_in_spans=True)
    assert not traced_urllib.patch_connection_class(Connection, only_in_spans=True)
    try:
        connection = Connection("127.0.0.1", recorder.port)
        connection.request("GET", "/background")  # outside any span: untouched
        connection.getresponse().read()
        assert "traceparent" not in recorder.requests[-1].headers
        with tomograph.span("parent") as parent:
            connection.request("GET", "/inside")
            connection.getresponse().read()
        connection.close()
        check_traced_request(memory, recorder, parent)
    finally:
        assert traced_urllib.unpatch_connection_class(Connection)
    assert not traced_urllib.unpatch_connection_class(Connection)
