"""requests: client spans and injected headers, against a real server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from tests.integrations.http_client_checks import check_traced_request, client_spans
from tests.support.http_recorder import RecordingServer
from tests.support.servers import free_port

import tomograph
from tomograph.integrations import requests as traced_requests
from tomograph.propagation import Propagator
from tomograph.reporting.memory import MemoryBackend


@pytest.fixture
def patched() -> Iterator[None]:
    traced_requests.patch()
    yield
    traced_requests.unpatch()


def test_instrumented_session_traces_and_injects(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    session = traced_requests.instrument_session(requests.Session())
    with tomograph.span("parent") as parent:
        response = session.get(f"{recorder.url}/items?page=2")
    assert response.status_code == 200
    span = check_traced_request(memory, recorder, parent)
    assert span.tags["http.url"] == f"{recorder.url}/items?page=2"


def test_credentials_never_reach_the_span(memory: MemoryBackend, recorder: RecordingServer) -> None:
    session = traced_requests.instrument_session(requests.Session())
    url = f"http://bob:hunter2@127.0.0.1:{recorder.port}/x?sig=secret&a=1"
    session.get(url)
    (span,) = client_spans(memory)
    assert span.tags["http.url"] == f"http://127.0.0.1:{recorder.port}/x?sig=REDACTED&a=1"
    assert "authorization" in recorder.requests[-1].headers  # requests still sent them


def test_server_error_status_is_an_error(memory: MemoryBackend, recorder: RecordingServer) -> None:
    session = traced_requests.instrument_session(requests.Session())
    assert session.get(f"{recorder.url}/status/502").status_code == 502
    (span,) = client_spans(memory)
    assert span.error
    assert span.tags["http.status_code"] == 502


def test_connection_refused_is_recorded_and_reraised(memory: MemoryBackend) -> None:
    session = traced_requests.instrument_session(requests.Session())
    with pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{free_port()}/", timeout=5)
    (span,) = client_spans(memory)
    assert span.error
    assert span.tags["exception.type"] == "ConnectionError"
    assert tomograph.current_span() is None


def test_patch_traces_module_level_functions(
    memory: MemoryBackend, recorder: RecordingServer, patched: None
) -> None:
    with tomograph.span("parent") as parent:
        requests.get(f"{recorder.url}/a")
    check_traced_request(memory, recorder, parent)


def test_patch_twice_then_unpatch_restores_send(memory: MemoryBackend) -> None:
    original = requests.Session.send
    assert traced_requests.patch()
    assert not traced_requests.patch()
    assert traced_requests.unpatch()
    assert requests.Session.send is original


def test_no_current_span_starts_a_new_trace(
    memory: MemoryBackend, recorder: RecordingServer, patched: None
) -> None:
    requests.get(recorder.url)
    (span,) = client_spans(memory)
    assert span.parent_id is None


def test_a_failing_propagator_never_stops_the_request(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    class Broken(Propagator):
        def inject(self, context: object, carrier: object) -> None:
            raise TypeError("cannot write here")

    session = traced_requests.instrument_session(requests.Session(), propagator=Broken())
    assert session.get(recorder.url).status_code == 200
    (span,) = client_spans(memory)
    assert span.tags["http.status_code"] == 200
    assert "traceparent" not in recorder.requests[-1].headers
