"""The ASGI middleware with Starlette under a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from tests.support.servers import free_port, wait_for_port

import tomograph
from tomograph.ids import format_span_id, format_trace_id
from tomograph.integrations.asgi import TracingMiddleware
from tomograph.model import SpanKind
from tomograph.propagation import baggage
from tomograph.reporting.memory import MemoryBackend

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def user(request: Request) -> PlainTextResponse:
    with tomograph.span("load user"):
        await asyncio.sleep(0)
    return PlainTextResponse(f"user {request.path_params['user_id']}")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("handler bug")


async def unavailable(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            with tomograph.span(f"chunk {index}"):
                await asyncio.sleep(0)
            yield f"{index}\n".encode()

    return StreamingResponse(chunks())


def make_app() -> Starlette:
    app = Starlette(
        routes=[
            Route("/users/{user_id}", user),
            Route("/boom", boom),
            Route("/unavailable", unavailable),
            Route("/stream", stream),
        ]
    )
    app.add_middleware(TracingMiddleware, service_name="back", excluded_paths=["/health"])
    return app


@pytest.fixture
def server_url(memory: MemoryBackend) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def server_span(memory: MemoryBackend, timeout: float = 5.0) -> tomograph.Span:
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for s in memory.spans if s.kind is SpanKind.SERVER]
        if spans:
            return spans[-1]
        assert time.monotonic() < deadline, memory.names()
        time.sleep(0.01)


def test_request_span_with_route_and_continued_trace(
    memory: MemoryBackend, server_url: str
) -> None:
    headers = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    response = httpx.get(f"{server_url}/users/42", headers=headers)
    assert response.text == "user 42"
    span = server_span(memory)
    assert span.name == "GET /users/{user_id}"
    assert span.service_name == "back"
    assert format_trace_id(span.trace_id) == TRACE_ID
    assert span.parent_id is not None and format_span_id(span.parent_id) == PARENT_ID
    assert span.tags["http.route"] == "/users/{user_id}"
    assert span.tags["http.path"] == "/users/42"
    assert span.tags["http.status_code"] == 200
    assert span.remote_endpoint is not None and span.remote_endpoint.ipv4 == "127.0.0.1"
    assert memory.find("load user").parent_id == span.span_id


def test_exception_is_recorded(memory: MemoryBackend, server_url: str) -> None:
    assert httpx.get(f"{server_url}/boom").status_code == 500
    span = server_span(memory)
    assert span.error
    assert span.tags["exception.type"] == "RuntimeError"


def test_5xx_is_an_error(memory: MemoryBackend, server_url: str) -> None:
    assert httpx.get(f"{server_url}/unavailable").status_code == 503
    span = server_span(memory)
    assert span.error and span.tags["http.status_code"] == 503


def test_streamed_response_is_inside_the_span(memory: MemoryBackend, server_url: str) -> None:
    assert httpx.get(f"{server_url}/stream").text == "0\n1\n2\n"
    span = server_span(memory)
    chunks = [s for s in memory.spans if s.name.startswith("chunk")]
    assert [c.parent_id for c in chunks] == [span.span_id] * 3
    assert span.end_ns >= max(c.end_ns for c in chunks)


def test_excluded_path_and_unknown_route_are_not_traced_or_untemplated(
    memory: MemoryBackend, server_url: str
) -> None:
    assert httpx.get(f"{server_url}/health").status_code == 404
    assert httpx.get(f"{server_url}/nowhere").status_code == 404
    span = server_span(memory)
    assert span.name == "GET"
    assert span.tags["http.path"] == "/nowhere"
    assert len([s for s in memory.spans if s.kind is SpanKind.SERVER]) == 1


def test_lifespan_scopes_pass_through(memory: MemoryBackend) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    asyncio.run(TracingMiddleware(app)({"type": "lifespan"}, None, None))  # type: ignore[arg-type]
    assert seen == ["lifespan"]
    assert memory.spans == []


def test_malformed_trace_headers_start_a_new_trace(memory: MemoryBackend, server_url: str) -> None:
    headers = {"traceparent": "00-" + "z" * 9000, "b3": "not-a-b3-header", "x-trace-info": "?"}
    assert httpx.get(f"{server_url}/users/1", headers=headers).status_code == 200
    span = server_span(memory)
    assert span.parent_id is None
    assert span.sampled


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-garbage", "baggage": "user=alice,plan=gold"},
        {"baggage": "user=alice,plan=gold"},  # baggage alone, as W3C allows
        {"uber-trace-id": "not:valid", "uberctx-user": "alice", "uberctx-plan": "gold"},
    ],
)
def test_a_new_trace_keeps_the_callers_baggage(
    headers: dict[str, str], memory: MemoryBackend, server_url: str
) -> None:
    assert httpx.get(f"{server_url}/users/7", headers=headers).status_code == 200
    span = server_span(memory)
    assert span.parent_id is None
    assert baggage.get_baggage(span) == {"user": "alice", "plan": "gold"}
    assert baggage.get_baggage(memory.find("load user")) == {"user": "alice", "plan": "gold"}


def test_endpoints_and_raw_headers_read_in_process(memory: MemoryBackend) -> None:
    # Endpoints come from a cache after the first request (tuples) or are built each time
    # (lists); raw header pairs go through the composite's pairs fast path.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def sent(message: Any) -> None:
        pass

    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def run() -> None:
        middleware = TracingMiddleware(app, service_name="svc")
        for address in (("10.0.0.1", 8000), ("10.0.0.1", 8000), ["10.0.0.1", 8000]):
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/",
                "server": address,
                "client": ("10.0.0.2", 5000),
                "headers": [(b"host", b"x"), (b"Traceparent", traceparent)],
            }
            await middleware(scope, None, sent)  # type: ignore[arg-type]

    asyncio.run(run())
    spans = [span for span in memory.spans if span.kind is SpanKind.SERVER]
    assert len(spans) == 3
    for span in spans:
        assert (span.local_endpoint.service_name, span.local_endpoint.ipv4) == ("svc", "10.0.0.1")
        assert span.local_endpoint.port == 8000
        assert span.remote_endpoint is not None and span.remote_endpoint.port == 5000
        assert format_trace_id(span.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert format_span_id(span.parent_id or 0) == "00f067aa0ba902b7"


@pytest.mark.parametrize("failing", ["http.response.start", "http.response.body"])
def test_a_client_gone_while_sending_is_the_requests_error(
    memory: MemoryBackend, failing: str
) -> None:
    # The server's send raising (the client went away) reaches the app through the middleware
    # untouched, whichever message it fails on, and the span ends with it as its error.
    class ClientGone(OSError):
        pass

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: Any) -> None:
        if message["type"] == failing:
            raise ClientGone("connection reset")

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(ClientGone):
        asyncio.run(TracingMiddleware(app)(scope, None, send))  # type: ignore[arg-type]
    (span,) = [span for span in memory.spans if span.kind is SpanKind.SERVER]
    assert span.error and span.tags["exception.type"].endswith("ClientGone")
    assert span.end_ns


def test_a_response_started_again_after_it_ended_leaves_the_reported_span_alone(
    memory: MemoryBackend,
) -> None:
    # An app that sends a second response after the first one ended (the server refuses it):
    # the span was finished and handed to the reporter with the status the client got.
    class AlreadySent(RuntimeError):
        pass

    sent: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await send({"type": "http.response.start", "status": 500, "headers": []})

    async def send(message: Any) -> None:
        if sent and sent[-1].get("type") == "http.response.body":
            raise AlreadySent("response already completed")
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(AlreadySent):
        asyncio.run(TracingMiddleware(app)(scope, None, send))  # type: ignore[arg-type]
    (span,) = [span for span in memory.spans if span.kind is SpanKind.SERVER]
    assert span.tags["http.status_code"] == 200
    assert not span.error and "error" not in span.tags
