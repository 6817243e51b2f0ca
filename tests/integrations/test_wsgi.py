"""The WSGI middleware under real servers: wsgiref in a thread, waitress in a subprocess."""

from __future__ import annotations

import http.client
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from tests.support.servers import (
    REPO_ROOT,
    BackgroundProcess,
    free_port,
    wait_for_port,
)
from tests.support.span_files import read_spans
from tests.support.wsgi_apps import hello_app

import tomograph
from tomograph.errors import ConfigurationError
from tomograph.ids import format_span_id, format_trace_id
from tomograph.integrations.wsgi import Middleware
from tomograph.model import SpanKind
from tomograph.propagation import baggage
from tomograph.reporting.memory import MemoryBackend

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class Served:
    def __init__(self, server: WSGIServer) -> None:
        self.server = server
        self.port = server.server_port

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@pytest.fixture
def serve(memory: MemoryBackend) -> Iterator[Any]:
    servers: list[WSGIServer] = []

    def start(app: Any) -> Served:
        server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return Served(server)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def wait_for(memory: MemoryBackend, name: str, timeout: float = 5.0) -> tomograph.Span:
    # wsgiref closes the body (ending the span) after the client has read the response.
    deadline = time.monotonic() + timeout
    while True:
        found = [s for s in memory.spans if s.name == name]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no span {name!r} in {memory.names()}")
        time.sleep(0.01)


def test_request_is_a_server_span_with_http_tags(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app, service_name="front"))
    status, body = served.get("/hello?x=1")
    assert (status, body) == (200, b"hello /hello")
    span = wait_for(memory, "GET")
    assert span.kind is SpanKind.SERVER
    assert span.service_name == "front"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.path"] == "/hello"
    assert span.tags["http.status_code"] == 200
    assert not span.error
    assert span.remote_endpoint is not None
    assert span.remote_endpoint.ipv4 == "127.0.0.1"
    assert memory.find("handler").parent_id == span.span_id


def test_incoming_w3c_headers_are_continued(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    served.get("/", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    span = wait_for(memory, "GET")
    assert format_trace_id(span.trace_id) == TRACE_ID
    assert span.parent_id is not None
    assert format_span_id(span.parent_id) == PARENT_ID


def test_incoming_b3_headers_are_continued(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    served.get("/", {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_ID, "X-B3-Sampled": "1"})
    span = wait_for(memory, "GET")
    assert format_trace_id(span.trace_id) == TRACE_ID


def test_malformed_headers_start_a_new_trace(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    status, _ = served.get("/", {"traceparent": "00-zz-" + "x" * 5000, "X-B3-TraceId": "no"})
    assert status == 200
    span = wait_for(memory, "GET")
    assert span.parent_id is None


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-garbage", "baggage": "user=alice,plan=gold"},
        {"baggage": "user=alice,plan=gold"},  # baggage alone, as W3C allows
        {"uber-trace-id": "not:valid", "uberctx-user": "alice", "uberctx-plan": "gold"},
    ],
)
def test_a_new_trace_keeps_the_callers_baggage(
    headers: dict[str, str], memory: MemoryBackend, serve: Any
) -> None:
    served = serve(Middleware(hello_app))
    assert served.get("/", headers)[0] == 200
    span = wait_for(memory, "GET")
    assert span.parent_id is None
    assert baggage.get_baggage(span) == {"user": "alice", "plan": "gold"}
    assert baggage.get_baggage(memory.find("handler")) == {"user": "alice", "plan": "gold"}


def test_unsampled_upstream_decision_is_obeyed(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    status, _ = served.get("/unsampled", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"})
    assert status == 200
    # wsgiref serves one request at a time and ends its span before it reads the next: once
    # the span of a sampled request arrives, the unsampled one would have arrived before it.
    served.get("/sampled", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    wait_for(memory, "GET")
    assert [(span.name, span.tags.get("http.path")) for span in memory.spans] == [
        ("handler", None),
        ("GET", "/sampled"),
    ]


def test_5xx_response_is_an_error(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    status, _ = served.get("/status/503")
    assert status == 503
    span = wait_for(memory, "GET")
    assert span.error
    assert span.tags["http.status_code"] == 503
    assert span.tags["error"] == "503"


def test_4xx_response_is_not_an_error(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    assert served.get("/status/404")[0] == 404
    span = wait_for(memory, "GET")
    assert not span.error


def test_exception_is_recorded_and_reraised(memory: MemoryBackend) -> None:
    app = Middleware(hello_app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/fail", "wsgi.version": (1, 0)}
    with pytest.raises(RuntimeError, match="application bug"):
        app(environ, lambda status, headers, exc_info=None: None)
    span = memory.find("GET")
    assert span.error
    assert span.tags["exception.type"] == "RuntimeError"
    assert tomograph.current_span() is None


def test_exception_under_a_real_server_gives_500_and_error_span(
    memory: MemoryBackend, serve: Any
) -> None:
    served = serve(Middleware(hello_app))
    status, _ = served.get("/fail")
    assert status == 500  # wsgiref's own error page
    span = wait_for(memory, "GET")
    assert span.error
    assert span.tags["exception.type"] == "RuntimeError"


def test_streamed_body_is_inside_the_span_and_chunks_are_children(
    memory: MemoryBackend, serve: Any
) -> None:
    served = serve(Middleware(hello_app))
    _, body = served.get("/stream")
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"
    span = wait_for(memory, "GET")
    chunks = [s for s in memory.spans if s.name.startswith("chunk")]
    assert len(chunks) == 3
    assert {c.parent_id for c in chunks} == {span.span_id}
    assert span.end_ns >= max(c.end_ns for c in chunks)


def test_failure_while_streaming_marks_the_span(memory: MemoryBackend) -> None:
    app = Middleware(hello_app)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/stream-fail", "wsgi.version": (1, 0)}
    body = app(environ, lambda status, headers, exc_info=None: None)
    received = []
    with pytest.raises(ValueError, match="stream broke"):
        for chunk in body:
            received.append(chunk)
    body.close()  # type: ignore[attr-defined]
    assert len(received) == 2
    span = memory.find("GET")
    assert span.error and span.finished


def test_close_is_passed_on_and_ends_the_span(memory: MemoryBackend) -> None:
    closed = []

    class Body(list[bytes]):
        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body([b"x"])

    body = Middleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    assert list(body) == [b"x"]
    assert memory.spans == []  # not finished until the server closes the body
    body.close()  # type: ignore[attr-defined]
    assert closed == [True]
    assert memory.names() == ["GET"]


def test_route_set_by_the_app_names_the_span(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app))
    served.get("/users/42")
    span = wait_for(memory, "GET /users/{id}")
    assert span.tags["http.route"] == "/users/{id}"
    assert span.tags["http.path"] == "/users/42"


def test_fixed_name_and_excluded_paths(memory: MemoryBackend, serve: Any) -> None:
    served = serve(Middleware(hello_app, name="WSGI", excluded_paths=["/health"]))
    served.get("/health")
    served.get("/other")
    wait_for(memory, "WSGI")
    assert [s.name for s in memory.spans if s.kind is SpanKind.SERVER] == ["WSGI"]


def test_lazy_export_is_the_middleware() -> None:
    assert tomograph.Middleware is Middleware
    namespace: dict[str, Any] = {}
    exec("from tomograph import *", namespace)
    assert namespace["Middleware"] is Middleware


def test_factory_rejects_unknown_settings() -> None:
    with pytest.raises(ConfigurationError, match="servce_name"):
        Middleware.factory({}, servce_name="typo")


# -- Paste Deploy ----------------------------------------------------------------------------

PIPELINE = """\
[pipeline:foo]
pipeline = tomo foo bar baz

[filter:tomo]
paste.filter_factory = tomograph:Middleware.factory
service_name = glance-registry

[filter:foo]
paste.filter_factory = tests.support.wsgi_apps:filter_factory
label = foo

[filter:bar]
paste.filter_factory = tests.support.wsgi_apps:filter_factory
label = bar

[app:baz]
paste.app_factory = tests.support.wsgi_apps:app_factory
"""


def test_paste_pipeline_from_an_ini_file(memory: MemoryBackend, serve: Any, tmp_path: Path) -> None:
    from paste.deploy import loadapp

    ini = tmp_path / "api-paste.ini"
    ini.write_text(PIPELINE)
    app = loadapp(f"config:{ini}", name="foo")
    assert isinstance(app, Middleware)
    served = serve(app)
    status, body = served.get("/images", {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_ID})
    assert (status, body) == (200, b"foo bar baz")
    span = wait_for(memory, "GET")
    assert span.service_name == "glance-registry"
    assert format_trace_id(span.trace_id) == TRACE_ID
    assert memory.find("baz handler").parent_id == span.span_id


# -- waitress in a subprocess --------------------------------------------------------------


@pytest.mark.integration
def test_waitress_subprocess_traces_requests(tmp_path: Path) -> None:
    port, span_file = free_port(), tmp_path / "spans.jsonl"
    argv = [sys.executable, "-m", "tests.support.wsgi_apps", str(port), str(span_file)]
    with BackgroundProcess(argv, tmp_path / "waitress.log", cwd=REPO_ROOT) as process:
        wait_for_port(port)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/stream", headers={"b3": f"{TRACE_ID}-{PARENT_ID}-1"})
        response = connection.getresponse()
        assert response.read() == b"chunk 0\nchunk 1\nchunk 2\n"
        connection.request("GET", "/status/500")
        assert connection.getresponse().status == 500
        connection.close()
        deadline = time.monotonic() + 10
        while len([s for s in read_spans(span_file) if s.get("kind") == "SERVER"]) < 2:
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
    spans = read_spans(span_file)
    servers = [s for s in spans if s.get("kind") == "SERVER"]
    stream, failed = servers
    assert stream["traceId"] == TRACE_ID
    assert stream["parentId"] == PARENT_ID
    assert stream["localEndpoint"] == {"serviceName": "waitress-app"}
    assert stream["tags"]["http.status_code"] == "200"
    assert [s["parentId"] for s in spans if s["name"].startswith("chunk")] == [stream["id"]] * 3
    assert failed["tags"]["error"] == "500"
    assert failed["remoteEndpoint"]["ipv4"] == "127.0.0.1"


def test_factory_propagation_setting_limits_the_formats_read(memory: MemoryBackend) -> None:
    app = Middleware.factory({}, propagation="b3")(hello_app)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "HTTP_TRACEPARENT": f"00-{TRACE_ID}-{PARENT_ID}-01",
    }
    body = app(environ, lambda *args: None)
    body.close()  # type: ignore[attr-defined]
    assert memory.find("GET").parent_id is None  # traceparent is not read: only B3


def test_factory_rejects_unknown_propagation_format() -> None:
    with pytest.raises(ConfigurationError, match="propagation"):
        Middleware.factory({}, propagation="smoke-signals")


@pytest.mark.integration
def test_gunicorn_subprocess_traces_requests(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn WSGI server (test extra)")
    port, span_file = free_port(), tmp_path / "spans.jsonl"
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "tests.support.wsgi_apps:make_traced_app()",
    ]
    env = {**os.environ, "TOMOGRAPH_TEST_SPAN_FILE": str(span_file)}
    with BackgroundProcess(argv, tmp_path / "gunicorn.log", cwd=REPO_ROOT, env=env) as process:
        wait_for_port(port)
        for path, headers in (
            ("/users/7", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}),
            ("/fail", {}),
        ):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", path, headers=headers)
            connection.getresponse().read()
            connection.close()
        deadline = time.monotonic() + 10
        while len([s for s in read_spans(span_file) if s.get("kind") == "SERVER"]) < 2:
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
    user, failed = [s for s in read_spans(span_file) if s.get("kind") == "SERVER"]
    assert user["name"] == "GET /users/{id}"
    assert (user["traceId"], user["parentId"]) == (TRACE_ID, PARENT_ID)
    assert user["localEndpoint"] == {"serviceName": "gunicorn-app"}
    assert failed["tags"]["exception.type"] == "RuntimeError"


@pytest.mark.integration
@pytest.mark.parametrize("server", ["waitress", "eventlet"])
def test_concurrent_streaming_requests_keep_their_own_spans(tmp_path: Path, server: str) -> None:
    port, span_file = free_port(), tmp_path / "spans.jsonl"
    argv = [sys.executable, "-m", "tests.support.wsgi_apps", str(port), str(span_file), server]
    trace_ids = [f"{0xABC << 64 | (index + 1):032x}" for index in range(4)]

    def fetch(trace_id: str) -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        connection.request("GET", "/slow", headers={"b3": f"{trace_id}-{PARENT_ID}-1"})
        body = connection.getresponse().read()
        connection.close()
        return body

    with BackgroundProcess(argv, tmp_path / "server.log", cwd=REPO_ROOT) as process:
        wait_for_port(port)
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda t=t: results.append(fetch(t))) for t in trace_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == [b"..."] * 4, process.output()
        deadline = time.monotonic() + 10
        while len([s for s in read_spans(span_file) if s.get("kind") == "SERVER"]) < 4:
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
    spans = read_spans(span_file)
    requests_by_trace = {s["traceId"]: s for s in spans if s.get("kind") == "SERVER"}
    assert sorted(requests_by_trace) == trace_ids
    chunks = [s for s in spans if s["name"].startswith("slow chunk")]
    assert len(chunks) == 12
    for chunk in chunks:
        assert chunk["parentId"] == requests_by_trace[chunk["traceId"]]["id"]


def _call(app: Any, **environ: Any) -> None:
    body = app(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.version": (1, 0), **environ},
        lambda *args: None,
    )
    body.close()


def test_endpoints_are_the_same_whether_built_or_cached(memory: MemoryBackend) -> None:
    app = Middleware(hello_app, service_name="svc")
    addresses = {"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "8080", "REMOTE_ADDR": "10.0.0.2"}
    _call(app, REMOTE_PORT="5000", **addresses)  # built
    _call(app, REMOTE_PORT="5000", **addresses)  # from the caches
    _call(app, REMOTE_PORT="5001", **addresses)  # another client port: its own endpoint
    _call(app, SERVER_NAME="example.com", SERVER_PORT="x", REMOTE_ADDR="", REMOTE_PORT="y")
    _call(app, SERVER_PORT=["8080"], REMOTE_ADDR="10.0.0.2", REMOTE_PORT=["1"])  # unhashable
    spans = [s for s in memory.spans if s.kind is SpanKind.SERVER]
    assert [(s.local_endpoint.ipv4, s.local_endpoint.port) for s in spans] == [
        ("10.0.0.1", 8080),
        ("10.0.0.1", 8080),
        ("10.0.0.1", 8080),
        (None, None),
        (None, None),
    ]
    assert {s.local_endpoint.service_name for s in spans} == {"svc"}
    assert [
        s.remote_endpoint and (s.remote_endpoint.ipv4, s.remote_endpoint.port) for s in spans
    ] == [
        ("10.0.0.2", 5000),
        ("10.0.0.2", 5000),
        ("10.0.0.2", 5001),
        None,
        ("10.0.0.2", None),
    ]


def test_two_layers_of_the_middleware_make_one_span(memory: MemoryBackend) -> None:
    app = Middleware(Middleware(hello_app, service_name="inner"), service_name="outer")
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "127.0.0.1"}
    body = app(environ, lambda *args: None)
    assert b"".join(body)
    body.close()  # type: ignore[attr-defined]
    (span,) = [span for span in memory.spans if span.kind is SpanKind.SERVER]
    assert span.local_endpoint.service_name == "outer"


def test_mounted_in_an_asgi_app_the_middleware_makes_no_span_that_never_ends(
    memory: MemoryBackend,
) -> None:
    # FastAPI/Starlette mounting a WSGI app (WSGIMiddleware) never closes the response body, so
    # a span of the WSGI layer's own would never end nor be reported: the ASGI layer's span is
    # the request's, and the WSGI application tags it.
    pytest.importorskip("starlette", reason="Starlette (test extra)")
    import warnings

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from tomograph.integrations.asgi import TracingMiddleware

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from starlette.middleware.wsgi import WSGIMiddleware

    def legacy(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["tomograph.span"].tag("http.route", "/v1/items/{id}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = TracingMiddleware(Starlette(routes=[Mount("/v1", WSGIMiddleware(Middleware(legacy)))]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = TestClient(app)
    assert client.get("/v1/items/7").text == "ok"
    (span,) = memory.spans
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET /v1/items/{id}"
    assert span.end_ns


def test_start_response_passes_exc_info_and_its_result_on(memory: MemoryBackend) -> None:
    # PEP 3333: an application that fails after starting the response calls start_response
    # again with exc_info; the server decides what to do with it, so it must arrive unchanged.
    written: list[bytes] = []
    calls: list[tuple[str, Any]] = []

    def server_start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        calls.append((status, exc_info))
        return written.append

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"early")
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response("502 Bad Gateway", [], sys.exc_info())
        return [b""]

    body = Middleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, server_start_response)
    list(body)
    body.close()  # type: ignore[attr-defined]
    assert written == [b"early"]
    assert calls[0] == ("200 OK", None)
    status, exc_info = calls[1]
    assert status == "502 Bad Gateway" and exc_info[0] is KeyError
    span = memory.find("GET")
    assert span.tags["http.status_code"] == 502 and span.error
