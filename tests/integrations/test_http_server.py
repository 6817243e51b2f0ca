"""The HTTP server contract, driven through a tiny real adapter (http.server on 127.0.0.1)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from tests.integrations.stdlib_adapter import App, get, serving

import tomograph
from tomograph.ids import format_span_id, format_trace_id
from tomograph.integrations.http_server import EXTRACT, HttpServerHandler
from tomograph.model import Endpoint, SpanKind, TraceContext
from tomograph.propagation import Propagator, baggage
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import never

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def app(path: str) -> tuple[int, bytes, str | None]:
    if path == "/fail":
        raise RuntimeError("application bug")
    if path.startswith("/status/"):
        return int(path.rsplit("/", 1)[1]), b"", None
    if path.startswith("/items/"):
        with tomograph.span("load item"):
            pass
        return 200, b"item", "/items/{id}"
    return 200, b"ok", None


def server_span(memory: MemoryBackend, timeout: float = 5.0) -> tomograph.Span:
    # The adapter finishes the span after writing the response: wait for it.
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for s in memory.spans if s.kind is SpanKind.SERVER]
        if spans:
            return spans[-1]
        assert time.monotonic() < deadline, memory.names()
        time.sleep(0.01)


def request(
    memory: MemoryBackend,
    path: str,
    headers: dict[str, str] | None = None,
    handler: HttpServerHandler | None = None,
    application: App = app,
) -> tuple[int, tomograph.Span]:
    with serving(handler or HttpServerHandler("front"), application) as port:
        status = get(port, path, headers)
        return status, server_span(memory)


def test_request_is_a_server_span_with_method_path_status_and_endpoints(
    memory: MemoryBackend,
) -> None:
    status, span = request(memory, "/hello?q=1")
    assert status == 200
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET"
    assert span.service_name == "front"
    assert span.tags == {"http.method": "GET", "http.path": "/hello", "http.status_code": 200}
    assert not span.error
    assert span.local_endpoint.ipv4 == "127.0.0.1" and span.local_endpoint.port
    assert span.remote_endpoint is not None and span.remote_endpoint.ipv4 == "127.0.0.1"
    assert span.remote_endpoint.port


def test_caller_context_is_continued(memory: MemoryBackend) -> None:
    _, span = request(memory, "/", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert format_trace_id(span.trace_id) == TRACE_ID
    assert span.parent_id is not None and format_span_id(span.parent_id) == PARENT_ID


def test_unsampled_caller_is_obeyed(memory: MemoryBackend) -> None:
    with serving(HttpServerHandler(), app) as port:
        assert get(port, "/", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}) == 200
        # ThreadingHTTPServer: wait for the sampled request's span, then nothing else came.
        get(port, "/status/201")
        span = server_span(memory)
    assert [s.tags["http.status_code"] for s in memory.spans] == [201]
    assert span.parent_id is None


def test_route_names_the_span_and_the_app_spans_are_children(memory: MemoryBackend) -> None:
    _, span = request(memory, "/items/42")
    assert span.name == "GET /items/{id}"
    assert span.tags["http.route"] == "/items/{id}"
    assert span.tags["http.path"] == "/items/42"
    assert memory.find("load item").parent_id == span.span_id


def test_fixed_name_is_kept_when_the_route_is_known(memory: MemoryBackend) -> None:
    _, span = request(memory, "/items/42", handler=HttpServerHandler(name="API"))
    assert span.name == "API"
    assert span.tags["http.route"] == "/items/{id}"


@pytest.mark.parametrize(
    ("status", "error"), [(200, False), (302, False), (404, False), (499, False), (500, True)]
)
def test_only_5xx_is_an_error_of_the_server(
    status: int, error: bool, memory: MemoryBackend
) -> None:
    assert request(memory, f"/status/{status}")[0] == status
    span = server_span(memory)
    assert span.error is error
    assert span.tags["http.status_code"] == status
    assert span.tags.get("error") == (str(status) if error else None)


def test_exception_is_recorded_and_its_message_kept_over_the_status(
    memory: MemoryBackend,
) -> None:
    status, span = request(memory, "/fail")
    assert status == 500
    assert span.error
    assert span.tags["exception.type"] == "RuntimeError"
    assert span.tags["error"] == "application bug"  # not overwritten by "500"
    assert span.tags["http.status_code"] == 500


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-" + "z" * 8000, "b3": "garbage", "baggage": "user=alice"},
        {"baggage": "user=alice"},
    ],
)
def test_a_request_without_valid_context_starts_a_trace_keeping_baggage(
    headers: dict[str, str], memory: MemoryBackend
) -> None:
    status, span = request(memory, "/", headers)
    assert status == 200
    assert span.parent_id is None and span.sampled
    assert baggage.get_baggage(span) == {"user": "alice"}


def test_the_handlers_propagator_limits_the_formats_read(memory: MemoryBackend) -> None:
    handler = HttpServerHandler(propagator=Propagator("b3"))
    _, span = request(memory, "/", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}, handler)
    assert span.parent_id is None


def test_configure_after_the_handler_is_built_is_used() -> None:
    handler = HttpServerHandler()
    later = MemoryBackend()
    tomograph.configure(service="late", backends=[later], environ={})
    try:
        span = handler.start("GET", "/", {})
        handler.finish(span)
    finally:
        tomograph.config.reset()
    assert [s.service_name for s in later.spans] == ["late"]


# -- the contract's arguments, called directly ---------------------------------------------


def finished(handler: HttpServerHandler, **start: Any) -> tomograph.Span:
    span = handler.start("GET", "/", {}, **start)
    handler.finish(span)
    return span


def test_context_replaces_extraction(memory: MemoryBackend) -> None:
    handler = HttpServerHandler()
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "baggage": "user=alice"}
    given = TraceContext(7, 8, sampled=True)
    span = handler.start("GET", "/", headers, context=given)
    assert (span.trace_id, span.parent_id) == (7, 8)
    fresh = handler.start("GET", "/", headers, context=None)
    assert fresh.parent_id is None and format_trace_id(fresh.trace_id) != TRACE_ID
    assert baggage.get_baggage(fresh) == {}  # the adapter chose its own propagation
    assert handler.start("GET", "/", headers, context=EXTRACT).parent_id == int(PARENT_ID, 16)


def test_sampling_override_records_a_new_trace_with_its_tags() -> None:
    memory = MemoryBackend()
    handler = HttpServerHandler(tracer=tomograph.Tracer("svc", [memory], sampler=never()))
    span = finished(handler, context=None, sampling=(True, True))
    assert span.sampled and span.debug
    assert memory.spans[0].tags == {"http.method": "GET", "http.path": "/"}


def test_unsampled_requests_are_flagged_but_record_nothing() -> None:
    memory = MemoryBackend()
    handler = HttpServerHandler(tracer=tomograph.Tracer("svc", [memory], sampler=never()))
    span = handler.start("GET", "/", {})
    handler.status(span, 503)
    handler.finish(span, "/route")
    assert span.error and not span.sampled and span.name == "GET"
    assert memory.spans == []


@pytest.mark.parametrize(
    ("addresses", "local", "remote"),
    [
        (
            {"server_host": "10.0.0.1", "server_port": "8080", "client_host": "::1"},
            Endpoint("front", "10.0.0.1", None, 8080),
            Endpoint(None, None, "::1", None),
        ),
        (
            {"server_host": "example.com", "server_port": 2**63, "client_port": 5},
            Endpoint("front", None, None, None),  # a host name, an impossible port
            None,  # no client address: no remote endpoint
        ),
        (
            {"server_port": ["80"], "client_host": "10.0.0.2", "client_port": "x\udc80"},
            Endpoint("front", None, None, None),
            Endpoint(None, "10.0.0.2", None, None),
        ),
    ],
)
def test_addresses_a_server_reports_wrongly_are_left_out(
    addresses: dict[str, Any], local: Endpoint, remote: Endpoint | None, memory: MemoryBackend
) -> None:
    span = finished(HttpServerHandler("front"), **addresses)
    assert (span.local_endpoint, span.remote_endpoint) == (local, remote)


def test_no_server_address_leaves_the_local_endpoint_to_the_tracer() -> None:
    own = Endpoint("svc", "192.0.2.1", None, 9000)
    tracer = tomograph.Tracer("svc", local_endpoint=own)
    assert finished(HttpServerHandler(tracer=tracer)).local_endpoint == own
    named = finished(HttpServerHandler("other", tracer=tracer)).local_endpoint
    assert named == Endpoint("other")


def test_finishing_twice_keeps_the_first_end(memory: MemoryBackend) -> None:
    handler = HttpServerHandler()
    span = handler.start("GET", "/", {})
    handler.finish(span)
    end = span.end_ns
    handler.finish(span, "/late")
    assert span.end_ns == end and "http.route" not in span.tags
    assert len(memory.spans) == 1
