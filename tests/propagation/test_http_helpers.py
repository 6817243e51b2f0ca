"""tomograph.start_http and tomograph.add_trace_info_header on real request objects."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import tornado.httputil
import webob
import werkzeug.test
import werkzeug.wrappers
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import header_text

import tomograph
from tomograph.model import Endpoint, SpanKind
from tomograph.propagation import Propagator, baggage, set_default_propagator
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"


def finish(name: str, memory: MemoryBackend) -> Span:
    tomograph.stop(name)
    (span,) = memory.spans
    return span


def assert_continues_the_trace(span: Span) -> None:
    assert span.trace_id == int(TRACE, 16)
    assert span.parent_id == int(SPAN, 16)
    assert span.kind is SpanKind.SERVER
    assert span.sampled


def test_start_http_with_a_dict_of_headers(memory: MemoryBackend) -> None:
    started = tomograph.start_http(
        "api", "GET /", {"Traceparent": TRACEPARENT, "Host": "10.1.2.3:81"}
    )
    assert tomograph.current_span() is started
    span = finish("GET /", memory)
    assert_continues_the_trace(span)
    assert [note.value for note in span.annotations] == ["start", "stop"]  # as tomograph.start
    assert span.local_endpoint == Endpoint("api", "10.1.2.3", None, 81)
    assert tomograph.current_span() is None


def test_start_http_with_a_wsgi_environ(memory: MemoryBackend) -> None:
    environ = werkzeug.test.EnvironBuilder(
        path="/orders",
        method="POST",
        headers={"traceparent": TRACEPARENT},
        base_url="http://127.0.0.1:8080",
        environ_overrides={"REMOTE_ADDR": "192.0.2.9", "REMOTE_PORT": "5555"},
    ).get_environ()
    tomograph.start_http("api", "orders", environ)
    span = finish("orders", memory)
    assert_continues_the_trace(span)
    assert span.local_endpoint == Endpoint("api", "127.0.0.1", None, 8080)
    assert span.remote_endpoint == Endpoint(None, "192.0.2.9", None, 5555)
    assert span.tags == {"http.method": "POST", "http.path": "/orders"}


@pytest.mark.parametrize("port", ["\u00b2", "\u0668\u0660", "99999", "0", "+80", " 80"])
def test_a_bad_port_in_the_host_header_loses_nothing_else(port: str, memory: MemoryBackend) -> None:
    # "\u00b2".isdigit() is True but int() refuses it: the request's method and path were lost.
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/items",
        "HTTP_HOST": f"shop.example:{port}",
        "SERVER_PORT": port,
        "REMOTE_ADDR": "10.0.0.9",
        "REMOTE_PORT": port,
        "HTTP_TRACEPARENT": TRACEPARENT,
    }
    tomograph.start_http("api", "items", environ)
    span = finish("items", memory)
    assert_continues_the_trace(span)
    assert span.tags == {"http.method": "GET", "http.path": "/items"}
    assert span.local_endpoint == Endpoint("api", None, None, None)  # a host name is no address
    assert span.remote_endpoint == Endpoint(None, "10.0.0.9", None, None)


def test_start_http_with_a_webob_request(memory: MemoryBackend) -> None:
    request = webob.Request.blank(
        "/items?x=1", headers={"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"}
    )
    request.environ["REMOTE_ADDR"] = "::1"
    tomograph.start_http("api", "items", request)
    span = finish("items", memory)
    assert_continues_the_trace(span)
    assert span.local_endpoint == Endpoint("api", None, None, 80)  # "localhost" is not an address
    assert span.remote_endpoint == Endpoint(None, None, "::1", None)
    assert span.tags["http.path"] == "/items"


def test_start_http_with_a_werkzeug_request(memory: MemoryBackend) -> None:
    environ = werkzeug.test.EnvironBuilder(
        path="/", headers={"b3": f"{TRACE}-{SPAN}-1"}, base_url="http://[::1]:9000"
    ).get_environ()
    tomograph.start_http("api", "root", werkzeug.wrappers.Request(environ))
    span = finish("root", memory)
    assert_continues_the_trace(span)
    assert span.local_endpoint == Endpoint("api", None, "::1", 9000)


def test_start_http_with_a_tornado_request(memory: MemoryBackend) -> None:
    headers = tornado.httputil.HTTPHeaders(
        {"X-Trace-Info": f"v1;{TRACE};{SPAN};1", "Host": "127.0.0.1:8888"}
    )
    request = tornado.httputil.HTTPServerRequest(
        start_line=tornado.httputil.RequestStartLine("GET", "/t?q=1", "HTTP/1.1"),
        headers=headers,
    )
    request.remote_ip = "127.0.0.2"
    tomograph.start_http("api", "t", request)
    span = finish("t", memory)
    assert_continues_the_trace(span)
    assert span.local_endpoint == Endpoint("api", "127.0.0.1", None, 8888)
    assert span.remote_endpoint == Endpoint(None, "127.0.0.2", None, None)
    assert span.tags == {"http.method": "GET", "http.path": "/t"}


@pytest.fixture
def http_server(memory: MemoryBackend) -> Iterator[tuple[str, list[Any]]]:
    """A real http.server on 127.0.0.1 whose handler traces with start_http."""
    errors: list[Any] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            try:
                tomograph.start_http("server", "handle", self)
                tomograph.stop("handle")
            except Exception as error:  # reported to the test, not swallowed
                errors.append(error)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/path", errors
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_start_http_in_an_http_server_handler(
    memory: MemoryBackend, http_server: tuple[str, list[Any]]
) -> None:
    url, errors = http_server
    with tomograph.span("call", kind="client") as client:
        request = urllib.request.Request(url)
        tomograph.add_trace_info_header(request)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 204
    assert not errors
    server = next(span for span in memory.spans if span.name == "handle")
    assert server.trace_id == client.trace_id and server.parent_id == client.span_id
    port = int(url.split(":")[2].split("/")[0])
    assert server.local_endpoint == Endpoint("server", "127.0.0.1", None, port)
    assert server.remote_endpoint is not None and server.remote_endpoint.ipv4 == "127.0.0.1"
    assert server.tags == {"http.method": "GET", "http.path": "/path"}


def test_without_context_a_new_trace_starts_and_keeps_the_callers_baggage(
    memory: MemoryBackend,
) -> None:
    tomograph.start_http("api", "h", {"traceparent": "00-garbage", "baggage": "user=alice"})
    assert baggage.get_baggage() == {"user": "alice"}
    span = finish("h", memory)
    assert span.parent_id is None and span.trace_id != int(TRACE, 16)


def test_baggage_arrives_with_the_context(memory: MemoryBackend) -> None:
    tomograph.start_http("api", "h", {"traceparent": TRACEPARENT, "baggage": "user=alice"})
    assert baggage.get_baggage() == {"user": "alice"}
    finish("h", memory)


def test_a_b3_deny_is_obeyed(memory: MemoryBackend) -> None:
    tomograph.start_http("api", "health", {"b3": "0"})
    tomograph.stop("health")
    assert memory.spans == []


def test_join_shared_spans_reports_under_the_callers_span_id() -> None:
    memory = MemoryBackend()
    tomograph.configure(backends=[memory], join_shared_spans=True, environ={})
    try:
        tomograph.start_http("api", "h", {"b3": f"{TRACE}-{SPAN}-1-0000000000000007"})
        span = finish("h", memory)
    finally:
        tomograph.config.reset()
    assert span.span_id == int(SPAN, 16) and span.parent_id == 7 and span.shared


def test_add_trace_info_header_writes_every_configured_format(memory: MemoryBackend) -> None:
    headers: dict[str, str] = {}
    with tomograph.span("call", kind="client") as span:
        baggage.set_baggage("user", "alice")
        tomograph.add_trace_info_header(headers)
    assert headers["traceparent"] == f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
    assert headers["x-b3-spanid"] == f"{span.span_id:016x}"
    assert headers["tracestate"] == f"tomograph={span.span_id:016x};1"
    assert "x-trace-info" not in headers  # not among the default formats
    assert headers["baggage"] == "user=alice"


def test_add_trace_info_header_uses_the_configured_formats(memory: MemoryBackend) -> None:
    set_default_propagator(Propagator(["jaeger"]))
    headers: dict[str, str] = {}
    with tomograph.span("call"):
        tomograph.add_trace_info_header(headers)
    assert list(headers) == ["uber-trace-id"]


def test_add_trace_info_header_outside_a_span_adds_nothing(memory: MemoryBackend) -> None:
    headers: dict[str, str] = {}
    tomograph.add_trace_info_header(headers)
    assert headers == {}


def test_classic_round_trip_between_two_tracers(memory: MemoryBackend) -> None:
    headers: dict[str, str] = {}
    tomograph.start("client", "call")
    tomograph.add_trace_info_header(headers)
    tomograph.stop("call")
    tomograph.start_http("server", "serve", headers)
    tomograph.stop("serve")
    client, server = memory.spans
    assert server.trace_id == client.trace_id and server.parent_id == client.span_id


@given(
    st.dictionaries(
        st.sampled_from(["traceparent", "tracestate", "baggage", "b3", "X-B3-TraceId", "host"]),
        header_text,
        max_size=5,
    )
)
def test_start_http_never_raises_on_any_headers(headers: dict[str, str]) -> None:
    memory = MemoryBackend()
    tomograph.configure(backends=[memory], environ={})
    try:
        span = tomograph.start_http("api", "h", headers)
        assert tomograph.current_span() is span
        tomograph.stop("h")
        assert tomograph.current_span() is None
        assert memory.spans in ([], [span])
    finally:
        tomograph.config.reset()
