"""aiohttp: the server middleware and the client TraceConfig, on real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp")

from aiohttp import ClientSession, ClientTimeout, web  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

import tomograph  # noqa: E402
from tomograph import config  # noqa: E402
from tomograph.context import CURRENT_SPAN  # noqa: E402
from tomograph.encoding.zipkin_json import encode_spans  # noqa: E402
from tomograph.ids import format_span_id, format_trace_id  # noqa: E402
from tomograph.integrations import aiohttp as traced  # noqa: E402
from tomograph.model import SpanKind  # noqa: E402
from tomograph.reporting.memory import MemoryBackend  # noqa: E402

pytestmark = pytest.mark.integration

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
PARENT_HEX = "b7ad6b7169203331"


@contextlib.asynccontextmanager
async def serving(app: web.Application, **options: Any) -> AsyncIterator[str]:
    """Run ``app`` on a real TCP socket on 127.0.0.1; yield its base URL."""
    runner = web.AppRunner(app, **options)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def servers(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.SERVER]


def clients(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.CLIENT]


async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def user(request: web.Request) -> web.Response:
    request[traced.REQUEST_KEY].tag("user.id", request.match_info["id"])
    with tomograph.span("load user"):
        return web.json_response({"id": request.match_info["id"]})


def traced_app(**options: Any) -> web.Application:
    app = web.Application()
    traced.setup(app, **options)
    app.router.add_get("/users/{id}", user)
    return app


def get(url: str, **options: Any) -> tuple[int, bytes]:
    async def fetch() -> tuple[int, bytes]:
        async with ClientSession() as session, session.get(url, **options) as response:
            return response.status, await response.read()

    return asyncio.run(fetch())


def run_with(app: web.Application, client: Callable[[str], Any], **options: Any) -> Any:
    async def main() -> Any:
        async with serving(app, **options) as url:
            return await client(url)

    return asyncio.run(main())


async def fetch_status(session: ClientSession, url: str, **options: Any) -> int:
    async with session.get(url, **options) as response:
        await response.read()
        return response.status


# -- server ----------------------------------------------------------------------------------


def test_span_is_named_after_the_route_template(memory: MemoryBackend) -> None:
    async def client(url: str) -> int:
        async with ClientSession() as session:
            return await fetch_status(session, f"{url}/users/42?verbose=1")

    assert run_with(traced_app(service_name="users"), client) == 200
    span = servers(memory)[0]
    assert span.name == "GET /users/{id}"
    assert span.service_name == "users"
    assert span.tags["http.route"] == "/users/{id}"
    assert span.tags["http.path"] == "/users/42"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.status_code"] == 200
    assert span.tags["code.function.name"] == f"{__name__}.user"
    assert span.tags["user.id"] == "42"  # tagged by the handler through request[REQUEST_KEY]
    assert not span.error
    assert span.local_endpoint is not None and span.local_endpoint.ipv4 == "127.0.0.1"
    assert span.local_endpoint.port
    assert span.remote_endpoint is not None and span.remote_endpoint.ipv4 == "127.0.0.1"
    assert span.remote_endpoint.port  # the client's ephemeral port, from the transport
    (child,) = [s for s in memory.spans if s.name == "load user"]
    assert child.parent_id == span.span_id and child.trace_id == span.trace_id


def test_regex_route_and_sub_application_prefix(memory: MemoryBackend) -> None:
    async def item(request: web.Request) -> web.Response:
        return web.Response(text="item")

    api = web.Application()
    api.router.add_get("/items/{item_id:\\d+}", item)
    app = traced_app()
    app.add_subapp("/api/v1/", api)

    async def client(url: str) -> int:
        async with ClientSession() as session:
            return await fetch_status(session, f"{url}/api/v1/items/7")

    assert run_with(app, client) == 200
    (span,) = servers(memory)
    assert span.name == "GET /api/v1/items/{item_id}"


def test_continues_the_callers_trace(memory: MemoryBackend) -> None:
    headers = {"traceparent": f"00-{TRACE_HEX}-{PARENT_HEX}-01"}

    async def client(url: str) -> int:
        async with ClientSession() as session:
            return await fetch_status(session, f"{url}/users/1", headers=headers)

    assert run_with(traced_app(), client) == 200
    (span,) = servers(memory)
    assert format_trace_id(span.trace_id, 32) == TRACE_HEX
    assert span.parent_id is not None and format_span_id(span.parent_id) == PARENT_HEX


def status_app() -> web.Application:
    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/users/1")

    async def broken(request: web.Request) -> web.Response:
        raise web.HTTPInternalServerError()

    async def crash(request: web.Request) -> web.Response:
        return 1 // int(request.match_info["n"])  # type: ignore[return-value]

    async def slow_backend(request: web.Request) -> web.Response:
        raise asyncio.TimeoutError

    app = traced_app()
    app.router.add_get("/missing", missing)
    app.router.add_get("/moved", moved)
    app.router.add_get("/broken", broken)
    app.router.add_get("/crash/{n}", crash)
    app.router.add_get("/timeout", slow_backend)
    return app


def test_statuses_and_exceptions(memory: MemoryBackend) -> None:
    paths = ["/missing", "/moved", "/broken", "/crash/0", "/timeout", "/no/such/route"]

    async def client(url: str) -> list[int]:
        async with ClientSession() as session:
            return [
                await fetch_status(session, url + path, allow_redirects=False) for path in paths
            ]

    assert run_with(status_app(), client) == [404, 302, 500, 500, 504, 404]
    spans = {s.tags["http.path"]: s for s in servers(memory)}
    assert spans["/missing"].name == "GET /missing" and not spans["/missing"].error
    assert spans["/moved"].tags["http.status_code"] == 302 and not spans["/moved"].error
    assert spans["/broken"].error and spans["/broken"].tags["http.status_code"] == 500
    assert spans["/broken"].tags["exception.type"] == "HTTPInternalServerError"
    assert "exception.type" not in spans["/missing"].tags
    crash = spans["/crash/0"]
    assert crash.error and crash.tags["http.status_code"] == 500
    assert crash.tags["exception.type"] == "ZeroDivisionError"
    assert crash.name == "GET /crash/{n}"
    assert spans["/timeout"].tags["http.status_code"] == 504 and spans["/timeout"].error
    unmatched = spans["/no/such/route"]
    assert unmatched.name == "GET" and "http.route" not in unmatched.tags
    assert unmatched.tags["http.status_code"] == 404 and not unmatched.error


def test_streamed_response_ends_with_the_stream(memory: MemoryBackend) -> None:
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await release.wait()
        await response.write(b"last\n")
        await response.write_eof()
        return response

    app = traced_app()
    app.router.add_get("/stream", stream)

    async def client(url: str) -> bytes:
        async with ClientSession() as session, session.get(f"{url}/stream") as response:
            first = await response.content.readline()
            assert servers(memory) == []  # the body is still being sent
            release.set()
            rest = await response.read()
        await wait_until(lambda: len(servers(memory)) == 1)
        return first + rest

    assert run_with(app, client) == b"first\nlast\n"
    (span,) = servers(memory)
    assert span.name == "GET /stream" and span.tags["http.status_code"] == 200


def test_stream_broken_by_an_exception_is_an_error_without_a_made_up_status(
    memory: MemoryBackend,
) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        raise RuntimeError("feed lost")

    app = traced_app()
    app.router.add_get("/stream", stream)

    async def client(url: str) -> int:
        async with ClientSession() as session, session.get(f"{url}/stream") as response:
            with pytest.raises(aiohttp.ClientPayloadError):
                await response.read()  # the connection breaks after the first chunk
            return response.status

    assert run_with(app, client) == 200
    (span,) = servers(memory)
    assert span.error and span.tags["exception.type"] == "RuntimeError"
    assert span.tags.get("http.status_code") != 500  # the client got 200 and a broken body


def test_websocket_connection_is_one_span(memory: MemoryBackend) -> None:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            with tomograph.span("message"):
                await ws.send_str(message.data.upper())
        return ws

    app = traced_app()
    app.router.add_get("/ws/{room}", echo)

    async def client(url: str) -> list[str]:
        answers = []
        async with ClientSession() as session, session.ws_connect(f"{url}/ws/lobby") as ws:
            for word in ("a", "b"):
                await ws.send_str(word)
                answers.append((await ws.receive()).data)
        await wait_until(lambda: len(servers(memory)) == 1)
        return answers

    assert run_with(app, client) == ["A", "B"]
    (span,) = servers(memory)
    assert span.name == "GET /ws/{room}"
    assert span.tags["http.status_code"] == 101 and not span.error
    messages = [s for s in memory.spans if s.name == "message"]
    assert len(messages) == 2 and {m.parent_id for m in messages} == {span.span_id}


def test_request_cancelled_by_a_client_going_away_is_finished_and_marked(
    memory: MemoryBackend,
) -> None:
    started = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        started.set()
        await asyncio.Event().wait()
        return web.Response()

    app = traced_app()
    app.router.add_get("/hang", hang)

    async def client(url: str) -> None:
        port = int(url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await started.wait()
        writer.close()  # the client goes away while the handler runs
        await wait_until(lambda: len(servers(memory)) == 1)

    run_with(app, client, handler_cancellation=True)
    (span,) = servers(memory)
    assert span.name == "GET /hang"
    assert span.error and span.tags["exception.type"] == "CancelledError"


def test_excluded_paths_and_unsampled_requests_record_nothing(memory: MemoryBackend) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = traced_app(excluded_paths=["/health"])
    app.router.add_get("/health", health)

    async def client(url: str) -> list[int]:
        async with ClientSession() as session:
            return [
                await fetch_status(session, f"{url}/health"),
                await fetch_status(session, f"{url}/users/1", headers={"X-B3-Sampled": "0"}),
            ]

    assert run_with(app, client) == [200, 200]
    assert memory.spans == []


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},
        {"traceparent": "zz-\udcff", "b3": "not-a-b3"},
        {"X-B3-TraceId": "f" * 64, "X-B3-SpanId": "1" * 17, "baggage": "k=" + "v" * 4000},
        {"X-Trace-Info": "a;" * 4000, "tracestate": "," * 4000},
    ],
    ids=["zero ids", "garbage", "oversized", "separators"],
)
def test_hostile_headers_start_a_new_trace(memory: MemoryBackend, headers: dict[str, str]) -> None:
    async def client(url: str) -> int:
        # Sent raw: aiohttp's client would refuse some of these values itself.
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"GET /users/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{lines}\r\n"
        writer.write(request.encode("utf-8", "surrogateescape"))
        status = int((await reader.readline()).split()[1])
        writer.close()
        return status

    assert run_with(traced_app(), client) == 200
    (span,) = servers(memory)
    assert span.parent_id is None and span.name == "GET /users/{id}"
    assert json.loads(encode_spans([span]))


@pytest.mark.parametrize(
    "path", ["/users/%ff%fe", "/users/%ED%A0%80", "/users/..%2f..%2fetc", "/users/" + "x" * 6000]
)
def test_hostile_paths_are_recorded_and_encodable(memory: MemoryBackend, path: str) -> None:
    async def client(url: str) -> int:
        async with ClientSession() as session:
            return await fetch_status(session, url + path)

    assert run_with(traced_app(), client) == 200
    (span,) = servers(memory)
    assert span.name == "GET /users/{id}" and span.tags["http.path"].startswith("/users/")
    assert json.loads(encode_spans([span]))


# -- client ----------------------------------------------------------------------------------


RELEASE = web.AppKey("release", asyncio.Event)


def backend_app() -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"b3": request.headers.get("X-B3-SpanId")})

    async def old(request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo/new")

    async def slow(request: web.Request) -> web.Response:
        await request.app[RELEASE].wait()
        return web.Response()

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    traced.setup(app, service_name="backend")
    app.router.add_get("/echo/{n}", echo)
    app.router.add_get("/old", old)
    app.router.add_get("/slow", slow)
    return app


def test_two_services_in_one_trace(memory: MemoryBackend) -> None:
    async def front(request: web.Request) -> web.Response:
        session: ClientSession = request.app["session"]
        async with session.get(request.app["backend"] + "/echo/1") as response:
            return web.Response(text=await response.text())

    async def main() -> None:
        async with serving(backend_app()) as backend_url:
            frontend = web.Application()
            traced.setup(frontend, service_name="frontend")
            frontend.router.add_get("/front", front)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # str app keys: fine for a test
                frontend["backend"] = backend_url
                frontend["session"] = ClientSession(trace_configs=[traced.TracingTraceConfig()])
            async with serving(frontend) as front_url, ClientSession() as plain:
                assert await fetch_status(plain, f"{front_url}/front") == 200
            await frontend["session"].close()

    asyncio.run(main())
    (front_span,) = [s for s in servers(memory) if s.service_name == "frontend"]
    (back_span,) = [s for s in servers(memory) if s.service_name == "backend"]
    (call,) = clients(memory)
    assert front_span.name == "GET /front" and back_span.name == "GET /echo/{n}"
    assert call.name == "GET" and call.tags["http.status_code"] == 200
    assert call.parent_id == front_span.span_id
    assert back_span.parent_id == call.span_id
    assert front_span.trace_id == call.trace_id == back_span.trace_id
    assert call.remote_endpoint is not None and call.remote_endpoint.ipv4 == "127.0.0.1"


def test_parallel_requests_in_tasks_keep_their_parents(memory: MemoryBackend) -> None:
    count = 50

    async def one(session: ClientSession, url: str, index: int) -> tuple[tomograph.Span, str]:
        with tomograph.span(f"task {index}") as parent:
            async with session.get(f"{url}/echo/{index}") as response:
                sent = (await response.json())["b3"]
            assert CURRENT_SPAN.get() is parent  # the client span did not stay current
        return parent, sent

    async def main() -> list[tuple[tomograph.Span, str]]:
        async with (
            serving(backend_app()) as url,
            ClientSession(trace_configs=[traced.TracingTraceConfig()]) as session,
        ):
            return await asyncio.gather(*(one(session, url, i) for i in range(count)))

    results = asyncio.run(main())
    calls = {c.span_id: c for c in clients(memory)}
    backend = {s.tags["http.path"]: s for s in servers(memory)}
    assert len(calls) == len(backend) == count
    for index, (parent, sent) in enumerate(results):
        server = backend[f"/echo/{index}"]
        call = calls[server.parent_id]  # type: ignore[index]
        assert call.parent_id == parent.span_id and call.trace_id == parent.trace_id
        assert sent == format_span_id(call.span_id)


def test_two_tomograph_trace_configs_make_one_span(memory: MemoryBackend) -> None:
    async def main() -> int:
        configs = [traced.TracingTraceConfig(), traced.TracingTraceConfig()]
        async with serving(backend_app()) as url, ClientSession(trace_configs=configs) as session:
            return await fetch_status(session, f"{url}/echo/1")

    assert asyncio.run(main()) == 200
    (call,) = clients(memory)
    (server,) = servers(memory)
    assert server.parent_id == call.span_id


def test_tasks_started_by_a_handler_are_children(memory: MemoryBackend) -> None:
    async def fan_out(request: web.Request) -> web.Response:
        async def part(index: int) -> None:
            with tomograph.span(f"part {index}"):
                await asyncio.sleep(0)

        await asyncio.gather(*(asyncio.create_task(part(i)) for i in range(3)))
        return web.Response()

    app = traced_app()
    app.router.add_get("/fan-out", fan_out)

    async def client(url: str) -> int:
        async with ClientSession() as session:
            return await fetch_status(session, f"{url}/fan-out")

    assert run_with(app, client) == 200
    (span,) = servers(memory)
    parts = [s for s in memory.spans if s.name.startswith("part ")]
    assert len(parts) == 3 and {p.parent_id for p in parts} == {span.span_id}


def test_redirects_are_one_client_span(memory: MemoryBackend) -> None:
    async def main() -> int:
        async with (
            serving(backend_app()) as url,
            ClientSession(trace_configs=[traced.TracingTraceConfig()]) as session,
        ):
            return await fetch_status(session, f"{url}/old")

    assert asyncio.run(main()) == 200
    (call,) = clients(memory)
    assert call.tags["http.status_code"] == 200 and not call.error
    assert [n.value for n in call.annotations] == ["redirect 302"]
    hops = servers(memory)
    assert len(hops) == 2 and {h.parent_id for h in hops} == {call.span_id}


def test_raise_for_status_records_the_status(memory: MemoryBackend) -> None:
    async def main() -> None:
        async with (
            serving(backend_app()) as url,
            ClientSession(
                trace_configs=[traced.TracingTraceConfig()], raise_for_status=True
            ) as session,
        ):
            with pytest.raises(aiohttp.ClientResponseError):
                await session.get(f"{url}/nowhere")

    asyncio.run(main())
    (call,) = clients(memory)
    assert call.error and call.tags["http.status_code"] == 404
    assert call.tags["exception.type"] == "ClientResponseError"


def test_server_down_is_an_error_and_the_task_goes_on(memory: MemoryBackend) -> None:
    port = free_port()

    async def main() -> tomograph.Span:
        async with ClientSession(trace_configs=[traced.TracingTraceConfig()]) as session:
            with tomograph.span("job") as parent:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://127.0.0.1:{port}/down")
                assert CURRENT_SPAN.get() is parent
                with pytest.raises(aiohttp.ClientConnectorError):
                    await session.get(f"http://127.0.0.1:{port}/again")
        return parent

    parent = asyncio.run(main())
    calls = clients(memory)
    assert len(calls) == 2  # the failed call left nothing behind that silences the next one
    for call in calls:
        assert call.error and call.parent_id == parent.span_id
        assert call.tags["exception.type"] in ("ClientConnectorError", "ClientConnectorDNSError")
        assert "http.status_code" not in call.tags


def test_slow_server_timeout_is_recorded(memory: MemoryBackend) -> None:
    async def main() -> None:
        app = backend_app()
        async with (
            serving(app) as url,
            ClientSession(trace_configs=[traced.TracingTraceConfig()]) as session,
        ):
            with pytest.raises(asyncio.TimeoutError):
                await session.get(f"{url}/slow", timeout=ClientTimeout(total=0.2))
            app[RELEASE].set()

    asyncio.run(main())
    (call,) = clients(memory)
    assert call.error
    assert call.tags["exception.type"] in ("TimeoutError", "ServerTimeoutError")


def test_cancelled_client_request_is_finished(memory: MemoryBackend) -> None:
    arrived = asyncio.Event()

    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/hang", hang)

    async def main() -> None:
        async with (
            serving(app) as url,
            ClientSession(trace_configs=[traced.TracingTraceConfig()]) as session,
        ):
            task = asyncio.ensure_future(session.get(f"{url}/hang"))
            await arrived.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            release.set()

    asyncio.run(main())
    (call,) = clients(memory)
    assert call.error and call.tags["exception.type"] == "CancelledError"


def test_credentials_never_reach_the_span(memory: MemoryBackend) -> None:
    async def main() -> None:
        async with (
            serving(backend_app()) as url,
            ClientSession(trace_configs=[traced.TracingTraceConfig()]) as session,
        ):
            await fetch_status(session, url.replace("//", "//me:secret@") + "/echo/1?token=t0k")

    asyncio.run(main())
    (call,) = clients(memory)
    assert "secret" not in call.tags["http.url"] and "t0k" not in call.tags["http.url"]


# -- patch -----------------------------------------------------------------------------------


@pytest.fixture
def unpatched() -> Iterator[None]:
    original = web.Application.pre_freeze, ClientSession.__init__
    yield
    traced.unpatch()
    assert (web.Application.pre_freeze, ClientSession.__init__) == original


def plain_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        session: ClientSession = request.app[SESSION]
        async with session.get(request.app[BACKEND] + "/echo/1") as response:
            await response.read()
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/hello/{name}", hello)
    return app


SESSION = web.AppKey("session", ClientSession)
BACKEND = web.AppKey("backend", str)


def test_patch_before_configure_traces_apps_and_sessions(unpatched: None) -> None:
    config.reset()
    assert traced.patch() and traced.patched()
    assert not traced.patch()  # a second call is a no-op
    app = plain_app()  # built before configure(), like a module-level app
    memory = MemoryBackend()
    tomograph.configure(service="patched", backends=[memory], environ={})
    try:

        async def main() -> None:
            async with serving(backend_app()) as backend, ClientSession() as session:
                app[SESSION], app[BACKEND] = session, backend
                async with serving(app) as url:
                    assert await fetch_status(session, f"{url}/hello/x") == 200

        asyncio.run(main())
    finally:
        config.reset()
    (hello,) = [s for s in servers(memory) if s.name == "GET /hello/{name}"]
    outgoing = [c for c in clients(memory) if c.parent_id == hello.span_id]
    assert len(outgoing) == 1  # one span although backend_app also has an explicit middleware
    assert len([s for s in servers(memory) if s.name == "GET /echo/{n}"]) == 1


def test_unpatch_restores_and_silences_what_patch_touched(
    memory: MemoryBackend, unpatched: None
) -> None:
    assert traced.patch()

    async def main() -> None:
        app = plain_app()
        async with serving(backend_app()) as backend, ClientSession() as session:
            app[SESSION], app[BACKEND] = session, backend
            async with serving(app) as url:
                assert traced.unpatch() and not traced.patched()
                assert not traced.unpatch()
                assert await fetch_status(session, f"{url}/hello/x") == 200

    asyncio.run(main())
    # only backend_app's own (explicit) middleware still records
    assert [s.name for s in memory.spans] == ["GET /echo/{n}"]


def test_patched_sub_application_request_is_one_span(
    memory: MemoryBackend, unpatched: None
) -> None:
    traced.patch()

    async def item(request: web.Request) -> web.Response:
        return web.Response(text="item")

    sub = web.Application()
    sub.router.add_get("/items/{id}", item)
    app = web.Application()
    app.add_subapp("/shop", sub)

    async def client(url: str) -> int:
        async with ClientSession() as session:
            return await fetch_status(session, f"{url}/shop/items/3")

    assert run_with(app, client) == 200
    assert [s.name for s in servers(memory)] == ["GET /shop/items/{id}"]
    assert len(clients(memory)) == 1  # the test's own session, created while patched


def test_setup_is_idempotent() -> None:
    app = web.Application()
    traced.setup(app)
    traced.setup(app, service_name="other")
    assert sum(isinstance(m, traced.TracingMiddleware) for m in app.middlewares) == 1


def test_client_before_configure_uses_the_tracer_configured_later() -> None:
    config.reset()
    trace_config = traced.TracingTraceConfig()
    memory = MemoryBackend()
    tomograph.configure(service="late", backends=[memory], environ={})
    try:

        async def main() -> None:
            async with (
                serving(backend_app()) as url,
                ClientSession(trace_configs=[trace_config]) as session,
            ):
                await fetch_status(session, f"{url}/echo/1")

        asyncio.run(main())
    finally:
        config.reset()
    (call,) = clients(memory)
    assert call.service_name == "late"
