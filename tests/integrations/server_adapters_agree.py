"""Every server adapter of the HTTP contract records the same span for the same request.

One real server per adapter on 127.0.0.1: WSGI (wsgiref), ASGI (uvicorn), Tornado, eventlet's
WSGI server (patched as ``tomograph.eventlet.patcher`` does), aiohttp's middleware and the stdlib
reference adapter.
"""

from __future__ import annotations

import asyncio
import http.client
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import uvicorn
from tests.integrations.stdlib_adapter import get, serving
from tests.support.servers import free_port, wait_for_port

import tomograph
from tomograph.integrations.asgi import TracingMiddleware
from tomograph.integrations.http_server import HttpServerHandler
from tomograph.integrations.wsgi import Middleware
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend

eventlet = pytest.importorskip("eventlet")
tornado_web = pytest.importorskip("tornado.web")
aiohttp_web = pytest.importorskip("aiohttp.web")

from tomograph.eventlet import _wsgi as eventlet_wsgi  # noqa: E402
from tomograph.integrations import aiohttp as traced_aiohttp  # noqa: E402
from tomograph.tornado import Recorder, RequestTracker, ZipkinPropagation  # noqa: E402

pytestmark = pytest.mark.integration

TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"
PARENT_ID = "a2fb4a1d1a96d312"
HEADERS = {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": PARENT_ID, "X-B3-Sampled": "1"}


def status_of(path: str) -> int:
    return int(path.rsplit("/", 1)[1])


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    code = status_of(environ["PATH_INFO"])
    start_response(f"{code} {http.client.responses[code]}", [("Content-Length", "0")])
    return []


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": status_of(scope["path"]), "headers": []})
    await send({"type": "http.response.body", "body": b""})


class TornadoHandler(RequestTracker, tornado_web.RequestHandler):
    def get(self, code: str) -> None:
        self.set_status(int(code))


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _wsgiref() -> Iterator[int]:
    server = make_server("127.0.0.1", 0, Middleware(wsgi_app), handler_class=_Quiet)
    thread = _thread(server.serve_forever, 0.05)
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(10)


def _uvicorn() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(TracingMiddleware(asgi_app), host="127.0.0.1", port=port)
    config.log_level = "error"
    server = uvicorn.Server(config)
    thread = _thread(server.run)
    wait_for_port(port)
    yield port
    server.should_exit = True
    thread.join(10)


def _tornado(memory: MemoryBackend) -> Iterator[int]:
    class App(Recorder, tornado_web.Application):
        pass

    app = App([(r"/status/(\d+)", TornadoHandler)])
    app.set_divak_service("test-service")
    app.add_divak_reporter(memory)
    app.add_divak_propagator(ZipkinPropagation())
    port = free_port()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        server = app.listen(port, address="127.0.0.1")
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await state["stop"].wait()
        server.stop()

    thread = _thread(asyncio.run, serve())
    assert ready.wait(10)
    yield port
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)


def _eventlet() -> Iterator[int]:
    eventlet_wsgi.patch()
    log = open("/dev/null", "w")  # noqa: SIM115 (closed below)
    ports: queue.Queue[int] = queue.Queue()
    stop = threading.Event()

    def serve() -> None:
        # eventlet's hub is per OS thread: the server's green threads, its listener and its hub
        # all live on this thread, which stops them itself (eventlet objects cannot be touched
        # from another thread), so no eventlet hub outlives the test module.
        listener = eventlet.listen(("127.0.0.1", 0))
        ports.put(listener.getsockname()[1])
        server = eventlet.spawn(eventlet.wsgi.server, listener, wsgi_app, log)
        while not stop.is_set():
            eventlet.sleep(0.02)
        server.kill()
        listener.close()

    thread = _thread(serve)
    port = ports.get(timeout=10)
    wait_for_port(port)
    yield port
    stop.set()
    thread.join(10)
    eventlet_wsgi.unpatch()
    log.close()


def _aiohttp() -> Iterator[int]:
    async def status(request: Any) -> Any:
        return aiohttp_web.Response(status=int(request.match_info["code"]))

    app = aiohttp_web.Application()
    traced_aiohttp.setup(app)
    app.router.add_get("/status/{code}", status)
    port = free_port()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        runner = aiohttp_web.AppRunner(app)
        await runner.setup()
        await aiohttp_web.TCPSite(runner, "127.0.0.1", port).start()
        state["loop"], state["stop"] = asyncio.get_running_loop(), asyncio.Event()
        ready.set()
        await state["stop"].wait()
        await runner.cleanup()

    thread = _thread(asyncio.run, serve())
    assert ready.wait(10)
    yield port
    state["loop"].call_soon_threadsafe(state["stop"].set)
    thread.join(10)


def _stdlib() -> Iterator[int]:
    def app(path: str) -> tuple[int, bytes, str | None]:
        return status_of(path), b"", None

    with serving(HttpServerHandler(), app) as port:
        yield port


@pytest.fixture(scope="module")
def tornado_memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture(scope="module")
def ports(tornado_memory: MemoryBackend) -> Iterator[dict[str, int]]:
    servers = {
        "wsgi": _wsgiref(),
        "asgi": _uvicorn(),
        "tornado": _tornado(tornado_memory),
        "eventlet": _eventlet(),
        "aiohttp": _aiohttp(),
        "stdlib": _stdlib(),
    }
    yield {name: next(server) for name, server in servers.items()}
    for server in servers.values():
        next(server, None)


def server_span(memory: MemoryBackend, timeout: float = 5.0) -> tomograph.Span:
    deadline = time.monotonic() + timeout
    while True:
        spans = [s for s in memory.spans if s.kind is SpanKind.SERVER]
        if spans:
            (span,) = spans
            return span
        assert time.monotonic() < deadline, memory.names()
        time.sleep(0.01)


CONTRACT_TAGS = ("http.method", "http.path", "http.status_code", "error")


def shape(span: tomograph.Span) -> dict[str, Any]:
    return {
        "kind": span.kind,
        "trace": (f"{span.trace_id:032x}", f"{span.parent_id or 0:016x}"),
        "service": span.service_name,
        "tags": {key: span.tags[key] for key in CONTRACT_TAGS if key in span.tags},
        "error": span.error,
        "remote": span.remote_endpoint and span.remote_endpoint.ipv4,
    }


@pytest.mark.parametrize("status", [200, 404, 503])
def test_every_adapter_records_the_same_span(
    status: int, ports: dict[str, int], tornado_memory: MemoryBackend
) -> None:
    expected = {
        "kind": SpanKind.SERVER,
        "trace": (TRACE_ID, PARENT_ID),
        "service": "test-service",
        "tags": {"http.method": "GET", "http.path": f"/status/{status}", "http.status_code": status}
        | ({"error": str(status)} if status >= 500 else {}),
        "error": status >= 500,
        "remote": "127.0.0.1",
    }
    names = {}
    for adapter, port in ports.items():
        memory = MemoryBackend()
        tomograph.configure(service="test-service", backends=[memory], environ={})
        tornado_memory.clear()
        try:
            assert get(port, f"/status/{status}", HEADERS) == status, adapter
            span = server_span(tornado_memory if adapter == "tornado" else memory)
        finally:
            tomograph.config.reset()
        assert shape(span) == expected, adapter
        names[adapter] = span.name
    # divák's Tornado API names a request "<METHOD> <path>"; the others name it by the method
    # until a route template is known.
    assert names.pop("tornado") == f"GET /status/{status}"
    assert names.pop("aiohttp") == "GET /status/{code}"  # routed: the template is known
    assert set(names.values()) == {"GET"}
