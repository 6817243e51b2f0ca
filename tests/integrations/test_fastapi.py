"""FastAPI and Starlette through their real request cycle (TestClient): background tasks,
WebSockets, dependency-injection errors, and ``patch()``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

fastapi = pytest.importorskip("fastapi", reason="FastAPI (test extra)")

from fastapi import (  # noqa: E402
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.testclient import TestClient  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.background import BackgroundTask  # noqa: E402

import tomograph  # noqa: E402
from tomograph import config  # noqa: E402
from tomograph.integrations import starlette as traced_starlette  # noqa: E402
from tomograph.integrations.asgi import TracingMiddleware  # noqa: E402
from tomograph.model import ExceptionNote, SpanKind  # noqa: E402
from tomograph.reporting.memory import MemoryBackend  # noqa: E402

SECRET = "card 4111-1111-1111-1111"


def require_token(token: str | None = None) -> str:
    if token != "good":
        raise HTTPException(status_code=401, detail="who are you")
    return token


def broken_dependency() -> None:
    raise RuntimeError("pool exhausted")


def make_app() -> FastAPI:
    """Routes with background tasks, dependencies and WebSockets; no tracing of its own."""
    app = FastAPI()
    done = threading.Event()
    app.state.done = done

    def send_email(address: str) -> None:
        with tomograph.span("smtp"):
            pass

    async def audit(user_id: int) -> None:
        with tomograph.span("audit write"):
            await asyncio.sleep(0)
        done.set()

    def failing_task() -> None:
        try:
            raise ValueError("task broke")
        finally:
            done.set()

    @app.post("/users/{user_id}")
    async def create_user(user_id: int, background_tasks: BackgroundTasks) -> dict[str, int]:
        background_tasks.add_task(send_email, "a@example.com")
        background_tasks.add_task(audit, user_id)
        return {"id": user_id}

    @app.post("/failing-task")
    async def with_failing_task(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(failing_task)
        return {"ok": "yes"}

    @app.get("/private/{item_id}")
    async def private(item_id: int, token: str = Depends(require_token)) -> dict[str, int]:
        return {"id": item_id}

    @app.get("/broken-dependency")
    async def uses_broken(value: None = Depends(broken_dependency)) -> dict[str, str]:
        return {}

    @app.websocket("/ws/{room}")
    async def chat(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                with tomograph.span("handle message"):
                    pass
                if text == "crash":
                    raise RuntimeError("handler bug")
                if text == "bye":
                    await websocket.close(code=1000)
                    return
                await websocket.send_text(f"echo {text}")
                await websocket.send_text("ack")
        except WebSocketDisconnect:
            pass

    @app.websocket("/ws-fail")
    async def failing_socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close(code=1011)

    @app.websocket("/ws-refused")
    async def refused_socket(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    return app


def server_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [span for span in memory.spans if span.kind is SpanKind.SERVER]


def only_server_span(memory: MemoryBackend) -> tomograph.Span:
    spans = server_spans(memory)
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def exception_notes(span: tomograph.Span) -> list[ExceptionNote]:
    return [note for _, note, _ in span.notes_raw if isinstance(note, ExceptionNote)]


@pytest.fixture
def patched(memory: MemoryBackend) -> Iterator[None]:
    assert traced_starlette.patch()
    yield
    traced_starlette.unpatch()


@pytest.fixture
def client(patched: None) -> Iterator[TestClient]:
    with TestClient(make_app(), raise_server_exceptions=False) as client:
        yield client


# -- background tasks ----------------------------------------------------------------------


def test_background_tasks_are_children_that_start_after_the_response(
    memory: MemoryBackend, client: TestClient
) -> None:
    response = client.post("/users/5")
    assert response.json() == {"id": 5}
    assert client.app.state.done.wait(10)  # type: ignore[attr-defined]
    request = only_server_span(memory)
    assert request.name == "POST /users/{user_id}"
    email = memory.find("background make_app.<locals>.send_email")
    audit = memory.find("background make_app.<locals>.audit")
    for task in (email, audit):
        assert task.parent_id == request.span_id
        assert task.kind is None
        assert task.start_ns >= request.end_ns  # the response was complete before
    assert memory.find("smtp").parent_id == email.span_id  # a sync task, in a worker thread
    assert memory.find("audit write").parent_id == audit.span_id
    assert not request.error


def test_failing_background_task_is_an_error_span_not_a_failed_request(
    memory: MemoryBackend, client: TestClient
) -> None:
    assert client.post("/failing-task").status_code == 200
    task = memory.find("background make_app.<locals>.failing_task")
    assert task.error
    assert task.tags["exception.type"] == "ValueError"
    request = only_server_span(memory)
    assert not request.error
    assert "exception.type" not in request.tags
    assert task.parent_id == request.span_id


def test_background_task_outside_a_request_is_a_span_of_its_own(
    memory: MemoryBackend, patched: None
) -> None:
    async def job() -> None:
        pass

    asyncio.run(BackgroundTask(job)())
    assert memory.find(f"background {job.__qualname__}").parent_id is None


# -- dependency injection errors -----------------------------------------------------------


def test_dependency_raising_http_exception_is_a_4xx_not_an_error(
    memory: MemoryBackend, client: TestClient
) -> None:
    assert client.get("/private/3").status_code == 401
    span = only_server_span(memory)
    assert span.name == "GET /private/{item_id}"
    assert span.tags["http.status_code"] == 401
    assert not span.error


def test_dependency_raising_an_exception_is_an_error_with_the_exception(
    memory: MemoryBackend, client: TestClient
) -> None:
    assert client.get("/broken-dependency").status_code == 500
    span = only_server_span(memory)
    assert span.name == "GET /broken-dependency"
    assert span.error
    assert span.tags["http.status_code"] == 500  # the 500 page, seen from outside Starlette
    assert span.tags["exception.type"] == "RuntimeError"
    assert len(exception_notes(span)) == 1


def test_validation_error_is_a_422_not_an_error(memory: MemoryBackend, client: TestClient) -> None:
    assert client.get("/private/not-a-number", params={"token": "good"}).status_code == 422
    span = only_server_span(memory)
    assert span.name == "GET /private/{item_id}"
    assert span.tags["http.status_code"] == 422
    assert not span.error


# -- WebSockets ----------------------------------------------------------------------------


def test_websocket_connection_is_one_span_with_counts_and_close_code(
    memory: MemoryBackend, client: TestClient
) -> None:
    with client.websocket_connect(
        "/ws/lobby", headers={"b3": "a" * 32 + "-" + "b" * 16 + "-1"}
    ) as ws:
        ws.send_text(SECRET)
        assert ws.receive_text() == f"echo {SECRET}"
        assert ws.receive_text() == "ack"
        ws.send_text("bye")
    span = only_server_span(memory)
    assert span.name == "WEBSOCKET /ws/{room}"
    assert span.tags["http.route"] == "/ws/{room}"
    assert span.tags["http.status_code"] == 101
    assert span.tags["websocket.messages_received"] == 2
    assert span.tags["websocket.messages_sent"] == 2
    assert span.tags["websocket.close_code"] == 1000
    assert f"{span.trace_id:032x}" == "a" * 32
    assert not span.error
    handled = [s for s in memory.spans if s.name == "handle message"]
    assert [s.parent_id for s in handled] == [span.span_id] * 2
    assert SECRET not in repr(span.tags) and SECRET not in repr(span.notes_raw)


def test_websocket_closed_by_the_client_keeps_its_code(
    memory: MemoryBackend, client: TestClient
) -> None:
    with client.websocket_connect("/ws/lobby") as ws:
        ws.send_text("hello")
        ws.receive_text()
        ws.receive_text()
        ws.close(code=1001)
    span = only_server_span(memory)
    assert span.tags["websocket.close_code"] == 1001
    assert span.tags["websocket.messages_received"] == 1
    assert not span.error


def test_websocket_handler_exception_is_an_error(memory: MemoryBackend, client: TestClient) -> None:
    with pytest.raises(RuntimeError, match="handler bug"):  # TestClient re-raises it
        with client.websocket_connect("/ws/lobby") as ws:
            ws.send_text("crash")
            ws.receive_text()
    span = only_server_span(memory)
    assert span.error
    assert span.tags["exception.type"] == "RuntimeError"
    assert len(exception_notes(span)) == 1


def test_websocket_closed_with_internal_error_is_an_error(
    memory: MemoryBackend, client: TestClient
) -> None:
    with client.websocket_connect("/ws-fail") as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
    assert closed.value.code == 1011
    span = only_server_span(memory)
    assert span.name == "WEBSOCKET /ws-fail"
    assert span.tags["websocket.close_code"] == 1011
    assert span.error


def test_websocket_refused_before_accept_is_a_403_not_an_error(
    memory: MemoryBackend, client: TestClient
) -> None:
    with pytest.raises(WebSocketDisconnect):
        with client.websocket_connect("/ws-refused"):
            pass
    span = only_server_span(memory)
    assert span.tags["http.status_code"] == 403
    assert span.tags["websocket.close_code"] == 1008
    assert not span.error


# -- patch() and stacking ------------------------------------------------------------------


def test_patch_traces_apps_created_before_and_after_and_unpatch_restores(
    memory: MemoryBackend,
) -> None:
    original_call = Starlette.__call__
    original_task = BackgroundTask.__call__
    before = make_app()
    assert traced_starlette.patch()
    assert not traced_starlette.patch()
    assert traced_starlette.patched()
    after = make_app()
    try:
        for app in (before, after):
            with TestClient(app) as client:
                assert client.get("/private/1", params={"token": "good"}).status_code == 200
        assert [s.name for s in server_spans(memory)] == ["GET /private/{item_id}"] * 2
    finally:
        assert traced_starlette.unpatch()
    assert not traced_starlette.unpatch()
    assert Starlette.__call__ is original_call
    assert BackgroundTask.__call__ is original_task
    memory.clear()
    with TestClient(make_app()) as client:
        client.get("/private/1", params={"token": "good"})
    assert server_spans(memory) == []


def test_patch_keeps_an_apps_own_middleware_and_its_settings(
    memory: MemoryBackend, patched: None
) -> None:
    app = make_app()
    app.add_middleware(TracingMiddleware, service_name="explicit")
    with TestClient(app) as client:
        client.get("/private/1", params={"token": "good"})
    span = only_server_span(memory)
    assert span.service_name == "explicit"
    assert span.name == "GET /private/{item_id}"


def test_patch_keeps_an_apps_own_middleware_subclass_and_its_settings(
    memory: MemoryBackend, patched: None
) -> None:
    class ShopTracing(TracingMiddleware):
        """An application's own flavour of the middleware."""

    app = make_app()
    app.add_middleware(ShopTracing, service_name="explicit")
    with TestClient(app) as client:
        client.get("/private/1", params={"token": "good"})
    assert only_server_span(memory).service_name == "explicit"


def test_middleware_stacked_twice_makes_one_span(memory: MemoryBackend) -> None:
    app = make_app()
    app.add_middleware(TracingMiddleware, service_name="inner")
    with TestClient(TracingMiddleware(app, service_name="outer")) as client:
        client.get("/private/1", params={"token": "good"})
    span = only_server_span(memory)
    assert (span.service_name, span.name) == ("outer", "GET /private/{item_id}")


def test_patch_before_configure_reports_to_the_later_configuration() -> None:
    config.reset()
    traced_starlette.patch()
    try:
        app = make_app()
        backend = MemoryBackend()
        tomograph.configure(service="late", backends=[backend], environ={})
        with TestClient(app) as client:
            client.post("/users/1")
            assert app.state.done.wait(10)
        assert only_server_span(backend).service_name == "late"
        assert backend.find("background make_app.<locals>.audit")
    finally:
        traced_starlette.unpatch()
        config.reset()


def test_lifespan_passes_through(memory: MemoryBackend, patched: None) -> None:
    started: list[Any] = []
    app = FastAPI(on_startup=[lambda: started.append(True)])
    with TestClient(app):
        pass
    assert started == [True]
    assert server_spans(memory) == []


def test_unsampled_websocket_and_request_record_nothing_and_work(
    memory: MemoryBackend, client: TestClient
) -> None:
    unsampled = {"traceparent": f"00-{'a' * 32}-{'b' * 16}-00"}
    with client.websocket_connect("/ws/lobby", headers=unsampled) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo hi"
    with client.websocket_connect("/ws-fail", headers=unsampled) as ws:
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    assert client.get("/broken-dependency", headers=unsampled).status_code == 500
    assert client.post("/users/1", headers=unsampled).status_code == 200
    assert client.app.state.done.wait(10)  # type: ignore[attr-defined]
    assert memory.spans == []


def test_patch_leaves_apps_marked_untraced_and_the_collector_alone(
    memory: MemoryBackend, patched: None, tmp_path: Any
) -> None:
    from tomograph.collector import CollectorSettings, create_app

    marked = make_app()
    setattr(marked, traced_starlette.UNTRACED, True)
    collector = create_app(CollectorSettings(db_path=tmp_path / "traces.db"))
    with TestClient(marked) as client:
        assert client.get("/private/1", params={"token": "good"}).status_code == 200
    with TestClient(collector, base_url="http://127.0.0.1:9411") as client:
        assert client.get("/api/v2/services").status_code == 200
    assert server_spans(memory) == []


def test_request_span_is_reported_before_its_background_tasks_end(
    memory: MemoryBackend, patched: None
) -> None:
    app = FastAPI()
    seen_by_task: list[list[str]] = []

    def slow_task() -> None:
        # Were the task to hang or the process to die now, the request's span is already out.
        seen_by_task.append([span.name for span in server_spans(memory)])

    @app.get("/orders/{order_id}")
    async def order(order_id: int, background_tasks: BackgroundTasks) -> dict[str, int]:
        background_tasks.add_task(slow_task)
        return {"id": order_id}

    with TestClient(app) as client:
        assert client.get("/orders/1").status_code == 200
    assert seen_by_task == [["GET /orders/{order_id}"]]
