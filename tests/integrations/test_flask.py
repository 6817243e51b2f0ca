"""The Flask integration through Flask's real request cycle (test client and a threaded server)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

flask = pytest.importorskip("flask", reason="Flask (test extra)")

from flask import Blueprint, Flask, abort, stream_with_context  # noqa: E402
from tests.support.thread_calls import all_at_once  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402
from werkzeug.test import Client  # noqa: E402

import tomograph  # noqa: E402
from tomograph import config  # noqa: E402
from tomograph.ids import format_span_id, format_trace_id  # noqa: E402
from tomograph.integrations import flask as traced_flask  # noqa: E402
from tomograph.integrations.flask import Tracing  # noqa: E402
from tomograph.integrations.wsgi import Middleware  # noqa: E402
from tomograph.model import ExceptionNote, SpanKind  # noqa: E402
from tomograph.reporting.memory import MemoryBackend  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Refused(Exception):
    """Mapped to a 4xx answer by an errorhandler: the client's mistake."""


class Broken(Exception):
    """Mapped to a 5xx answer by an errorhandler: the server's failure."""


def make_app() -> Flask:
    """An application with routes, a blueprint, errors, streams and teardown work."""
    app = Flask("shop")
    items = Blueprint("items", "shop", url_prefix="/api/v1/items")

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> str:
        with tomograph.span("load user"):
            pass
        return f"user {user_id}"

    @items.get("/<item_id>")
    def show(item_id: str) -> str:
        return f"item {item_id}"

    app.register_blueprint(items)

    @app.get("/missing/<name>")
    def missing(name: str) -> str:
        abort(404)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("view bug")

    @app.get("/refused")
    def refused() -> str:
        raise Refused("not allowed")

    @app.get("/broken")
    def broken() -> str:
        raise Broken("database down")

    @app.errorhandler(Refused)
    def on_refused(error: Refused) -> tuple[str, int]:
        return "refused", 403

    @app.errorhandler(Broken)
    def on_broken(error: Broken) -> tuple[str, int]:
        return "try later", 503

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for index in range(3):
                with tomograph.span(f"chunk {index}"):
                    pass
                yield f"{index}\n"

        return app.response_class(stream_with_context(chunks()))

    @app.get("/stream-fail")
    def stream_fail() -> Any:
        def chunks() -> Iterator[str]:
            yield "0\n"
            raise ValueError("stream broke")

        return app.response_class(chunks())

    @app.get("/health")
    def health() -> str:
        return "ok"

    @app.teardown_request
    def close_session(error: BaseException | None) -> None:
        with tomograph.span("teardown"):
            pass

    return app


def get(app: Any, path: str, **kwargs: Any) -> tuple[int, bytes]:
    # Not ``with app.test_client()``: that keeps the request context (and its teardown) open
    # after the response, which no server does.
    response = app.test_client().get(path, **kwargs)
    body = response.get_data()
    response.close()  # as a server does once the body is sent: the span ends here
    return response.status_code, body


def server_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [span for span in memory.spans if span.kind is SpanKind.SERVER]


def only_server_span(memory: MemoryBackend) -> tomograph.Span:
    spans = server_spans(memory)
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def exception_notes(span: tomograph.Span) -> list[ExceptionNote]:
    return [note for _, note, _ in span.notes_raw if isinstance(note, ExceptionNote)]


@pytest.fixture
def app(memory: MemoryBackend) -> Flask:
    app = make_app()
    Tracing(app, service_name="shop")
    return app


@pytest.fixture
def unpatched() -> Iterator[None]:
    yield
    traced_flask.unpatch()


# -- names, routes, tags -------------------------------------------------------------------


def test_span_is_named_after_the_route_template(memory: MemoryBackend, app: Flask) -> None:
    assert get(app, "/users/7", headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) == (
        200,
        b"user 7",
    )
    span = only_server_span(memory)
    assert span.name == "GET /users/<int:user_id>"
    assert span.tags["http.route"] == "/users/<int:user_id>"
    assert span.tags["flask.endpoint"] == "user"
    assert span.tags["http.path"] == "/users/7"
    assert span.tags["http.status_code"] == 200
    assert span.service_name == "shop"
    assert (format_trace_id(span.trace_id), format_span_id(span.parent_id or 0)) == (
        TRACE_ID,
        PARENT_ID,
    )
    assert memory.find("load user").parent_id == span.span_id
    assert not span.error


def test_blueprint_route_includes_its_url_prefix(memory: MemoryBackend, app: Flask) -> None:
    assert get(app, "/api/v1/items/abc") == (200, b"item abc")
    span = only_server_span(memory)
    assert span.name == "GET /api/v1/items/<item_id>"
    assert span.tags["flask.endpoint"] == "items.show"


def test_unmatched_path_keeps_the_method_name_and_is_not_an_error(
    memory: MemoryBackend, app: Flask
) -> None:
    assert get(app, "/nowhere/42")[0] == 404
    span = only_server_span(memory)
    assert span.name == "GET"
    assert "http.route" not in span.tags
    assert span.tags["http.status_code"] == 404
    assert not span.error


def test_abort_404_in_a_view_is_not_an_error(memory: MemoryBackend, app: Flask) -> None:
    assert get(app, "/missing/x")[0] == 404
    span = only_server_span(memory)
    assert span.name == "GET /missing/<name>"
    assert not span.error
    assert "exception.type" not in span.tags


def test_excluded_paths_are_not_traced(memory: MemoryBackend) -> None:
    app = make_app()
    Tracing(app, excluded_paths=["/health"])
    assert get(app, "/health") == (200, b"ok")
    assert server_spans(memory) == []


def test_init_app_twice_traces_once(memory: MemoryBackend) -> None:
    app = make_app()
    tracing = Tracing()
    tracing.init_app(app)
    tracing.init_app(app)
    Tracing(app)
    get(app, "/users/1")
    assert only_server_span(memory).name == "GET /users/<int:user_id>"


# -- errors --------------------------------------------------------------------------------


def test_unhandled_exception_becomes_a_500_page_and_an_error_span(
    memory: MemoryBackend, app: Flask
) -> None:
    assert get(app, "/boom")[0] == 500
    span = only_server_span(memory)
    assert span.name == "GET /boom"
    assert span.error
    assert span.tags["exception.type"] == "RuntimeError"
    assert span.tags["http.status_code"] == 500
    [note] = exception_notes(span)
    assert note.message == "view bug"
    assert note.frames  # the traceback, down to the view


def test_exception_turned_into_a_page_by_a_500_errorhandler_is_still_recorded(
    memory: MemoryBackend, app: Flask
) -> None:
    @app.errorhandler(500)
    def sorry(error: Exception) -> tuple[str, int]:
        return "sorry", 500

    assert get(app, "/boom") == (500, b"sorry")
    span = only_server_span(memory)
    assert span.tags["exception.type"] == "RuntimeError"
    assert len(exception_notes(span)) == 1


def test_exception_an_errorhandler_answers_with_5xx_is_recorded(
    memory: MemoryBackend, app: Flask
) -> None:
    assert get(app, "/broken") == (503, b"try later")
    span = only_server_span(memory)
    assert span.error
    assert span.tags["exception.type"] == "Broken"
    assert len(exception_notes(span)) == 1


def test_exception_an_errorhandler_answers_with_4xx_is_not_an_error(
    memory: MemoryBackend, app: Flask
) -> None:
    assert get(app, "/refused") == (403, b"refused")
    span = only_server_span(memory)
    assert not span.error
    assert "exception.type" not in span.tags


def test_catch_all_errorhandler_still_leaves_http_exceptions_alone(
    memory: MemoryBackend, app: Flask
) -> None:
    @app.errorhandler(Exception)
    def everything(error: Exception) -> tuple[str, int]:
        code = getattr(error, "code", None) or 500
        return "handled", code

    assert get(app, "/boom") == (500, b"handled")
    assert get(app, "/missing/x") == (404, b"handled")
    failed, missing = server_spans(memory)
    assert failed.tags["exception.type"] == "RuntimeError"
    assert not missing.error


def test_propagated_exception_in_testing_mode_is_recorded_once(
    memory: MemoryBackend, app: Flask
) -> None:
    app.testing = True
    with pytest.raises(RuntimeError, match="view bug"):
        get(app, "/boom")
    span = only_server_span(memory)
    assert span.tags["exception.type"] == "RuntimeError"
    assert len(exception_notes(span)) == 1


# -- streaming and teardown ---------------------------------------------------------------


def test_streamed_body_ends_the_span_when_sent(memory: MemoryBackend, app: Flask) -> None:
    response = app.test_client().get("/stream", buffered=False)
    assert server_spans(memory) == []  # the view has returned; the body is not sent yet
    assert b"".join(response.response) == b"0\n1\n2\n"
    response.close()
    span = only_server_span(memory)
    assert span.name == "GET /stream"
    chunks = [s for s in memory.spans if s.name.startswith("chunk")]
    assert [s.parent_id for s in chunks] == [span.span_id] * 3
    assert memory.find("teardown").parent_id == span.span_id
    assert all(chunk.end_ns <= span.end_ns for chunk in chunks)


def test_failure_while_streaming_marks_the_span(memory: MemoryBackend, app: Flask) -> None:
    response = app.test_client().get("/stream-fail", buffered=False)
    with pytest.raises(ValueError, match="stream broke"):
        b"".join(response.response)
    response.close()
    span = only_server_span(memory)
    assert span.error
    assert span.tags["exception.type"] == "ValueError"


def test_teardown_spans_are_children_of_the_request(memory: MemoryBackend, app: Flask) -> None:
    get(app, "/users/3")
    assert memory.find("teardown").parent_id == only_server_span(memory).span_id


def test_exception_in_teardown_is_recorded(memory: MemoryBackend) -> None:
    app = make_app()

    @app.teardown_request
    def fails(error: BaseException | None) -> None:
        raise OSError("pool gone")

    Tracing(app)
    with pytest.raises(OSError, match="pool gone"):
        get(app, "/users/3")
    span = only_server_span(memory)
    assert span.tags["exception.type"] == "OSError"
    assert span.name == "GET /users/<int:user_id>"


# -- layers stacked: one span -------------------------------------------------------------


def test_under_the_wsgi_middleware_one_span_named_after_the_route(memory: MemoryBackend) -> None:
    app = make_app()
    Tracing(app, service_name="inner")
    app.wsgi_app = Middleware(app.wsgi_app, service_name="outer")  # type: ignore[method-assign]
    assert get(app, "/users/9")[0] == 200
    span = only_server_span(memory)
    assert span.name == "GET /users/<int:user_id>"
    assert span.service_name == "outer"
    assert span.tags["flask.endpoint"] == "user"


def test_under_the_wsgi_middleware_errors_are_recorded_once(memory: MemoryBackend) -> None:
    app = make_app()
    Tracing(app)
    client = Client(Middleware(app))
    for path, status in (("/boom", 500), ("/broken", 503)):
        response = client.get(path)
        response.close()
        assert response.status_code == status
    boom, broken = server_spans(memory)
    assert boom.name == "GET /boom"
    assert len(exception_notes(boom)) == 1
    assert len(exception_notes(broken)) == 1


def test_patch_and_the_extension_together_trace_once_with_the_extensions_settings(
    memory: MemoryBackend, unpatched: None
) -> None:
    assert traced_flask.patch()
    app = make_app()
    Tracing(app, service_name="explicit")
    get(app, "/users/1")
    span = only_server_span(memory)
    assert span.service_name == "explicit"
    assert span.name == "GET /users/<int:user_id>"
    memory.clear()
    assert get(app, "/broken")[0] == 503
    assert get(app, "/boom")[0] == 500
    assert [len(exception_notes(span)) for span in server_spans(memory)] == [1, 1]


# -- patch() -------------------------------------------------------------------------------


def test_patch_traces_apps_created_before_and_after(memory: MemoryBackend, unpatched: None) -> None:
    before = make_app()
    assert traced_flask.patch()
    after = make_app()
    assert get(before, "/users/1")[0] == 200
    assert get(after, "/api/v1/items/x")[0] == 200
    assert get(after, "/boom")[0] == 500
    assert [span.name for span in server_spans(memory)] == [
        "GET /users/<int:user_id>",
        "GET /api/v1/items/<item_id>",
        "GET /boom",
    ]
    assert server_spans(memory)[2].tags["exception.type"] == "RuntimeError"


def test_patch_twice_is_a_no_op_and_unpatch_restores(memory: MemoryBackend) -> None:
    original_call = Flask.__call__
    original_handler = Flask.handle_user_exception
    assert traced_flask.patch()
    assert traced_flask.patched()
    assert not traced_flask.patch()
    assert traced_flask.unpatch()
    assert not traced_flask.unpatch()
    assert not traced_flask.patched()
    assert Flask.__call__ is original_call
    assert Flask.handle_user_exception is original_handler
    get(make_app(), "/users/1")
    assert server_spans(memory) == []


def test_patch_keeps_an_existing_wsgi_app_wrapper_inside_the_span(
    memory: MemoryBackend, unpatched: None
) -> None:
    app = make_app()
    seen: list[Any] = []
    inner = app.wsgi_app

    def wrapper(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ.get("tomograph.span"))
        return inner(environ, start_response)

    app.wsgi_app = wrapper  # type: ignore[method-assign]
    traced_flask.patch()
    get(app, "/users/1")
    assert seen == [only_server_span(memory)]


@pytest.mark.parametrize("wrap", ["directly", "under another wrapper"])
def test_patch_on_an_app_wrapped_in_the_wsgi_middleware_traces_once_with_its_settings(
    memory: MemoryBackend, unpatched: None, wrap: str
) -> None:
    # The usual explicit setup, then `tomograph run` (patch) on top of it.
    app = make_app()
    traced: Any = Middleware(app.wsgi_app, service_name="explicit")
    if wrap != "directly":
        inner = traced

        def proxy(environ: dict[str, Any], start_response: Any) -> Any:
            return inner(environ, start_response)

        proxy.app = inner  # type: ignore[attr-defined]  # as werkzeug's ProxyFix keeps it
        traced = proxy
    app.wsgi_app = traced  # type: ignore[method-assign]
    assert traced_flask.patch()
    assert get(app, "/users/1")[0] == 200
    span = only_server_span(memory)
    assert span.name == "GET /users/<int:user_id>"
    assert span.service_name == "explicit"


def test_patch_on_an_app_mounted_in_an_asgi_app_tags_the_asgi_span(
    memory: MemoryBackend, unpatched: None
) -> None:
    # tomograph run on FastAPI mounting a Flask app: the ASGI layer's span is the request's.
    # Starlette's WSGI bridge never closes the body: a span of Flask's own would never end.
    pytest.importorskip("starlette", reason="Starlette (test extra)")
    import warnings

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from tomograph.integrations.asgi import TracingMiddleware

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from starlette.middleware.wsgi import WSGIMiddleware

    traced_flask.patch()
    legacy = make_app()
    app = TracingMiddleware(Starlette(routes=[Mount("/v1", WSGIMiddleware(legacy))]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/v1/users/3").status_code == 200
    assert client.get("/v1/boom").status_code == 500
    found, boom = server_spans(memory)
    assert found.name == "GET /v1/users/<int:user_id>"
    assert found.tags["flask.endpoint"] == "user"
    assert boom.tags["exception.type"] == "RuntimeError"


def test_extension_and_patch_before_configure_report_to_the_later_configuration() -> None:
    config.reset()
    explicit = make_app()
    Tracing(explicit)
    traced_flask.patch()
    try:
        patched_app = make_app()
        backend = MemoryBackend()
        tomograph.configure(service="late", backends=[backend], environ={})
        get(explicit, "/users/1")
        get(patched_app, "/users/2")
        names = [span.name for span in server_spans(backend)]
        assert names == ["GET /users/<int:user_id>"] * 2
        assert {span.service_name for span in server_spans(backend)} == {"late"}
    finally:
        traced_flask.unpatch()
        config.reset()


# -- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "environ",
    [
        {"PATH_INFO": "/users/\xff\xfe"},  # undecodable bytes, as WSGI hands them over
        {"PATH_INFO": "/users/" + "9" * 30},  # an int route argument beyond 2^63
        {"PATH_INFO": "/" + "a/" * 50_000},
        {"PATH_INFO": "/api/v1/items/%00%ff"},
        {"HTTP_TRACEPARENT": "00-" + "f" * 32 + "-" + "0" * 16 + "-01"},
        {"HTTP_B3": "x" * 1_000_000},
        {"HTTP_TRACEPARENT": "00-\xff-\xfe-01", "HTTP_BAGGAGE": "k=\xff," * 1000},
        {"REQUEST_METHOD": "\xffGET"},
    ],
)
def test_hostile_requests_never_fail_the_app_and_make_one_span(
    memory: MemoryBackend, app: Flask, environ: dict[str, str]
) -> None:
    response = app.test_client().get("/", environ_overrides=environ)
    response.close()
    assert response.status_code < 500
    span = only_server_span(memory)
    assert not span.error


# -- a real threaded server, 32 first requests at once -------------------------------------


@pytest.fixture
def threaded_server(memory: MemoryBackend, unpatched: None) -> Iterator[int]:
    traced_flask.patch()
    server = make_server("127.0.0.1", 0, make_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.port
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_32_first_requests_at_once_each_get_their_own_span(
    memory: MemoryBackend, threaded_server: int
) -> None:
    trace_ids = [f"{0xF1A5C << 64 | (index + 1):032x}" for index in range(32)]
    answers: list[tuple[int, bytes]] = [(0, b"")] * 32

    def request(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", threaded_server, timeout=30)
        path = "/boom" if index % 8 == 0 else f"/users/{index}"
        connection.request("GET", path, headers={"b3": f"{trace_ids[index]}-{PARENT_ID}-1"})
        response = connection.getresponse()
        answers[index] = (response.status, response.read())
        connection.close()

    all_at_once(32, request)
    for index, (status, body) in enumerate(answers):
        assert status == (500 if index % 8 == 0 else 200), (index, body)
    deadline = time.monotonic() + 10
    while len(server_spans(memory)) < 32:
        assert time.monotonic() < deadline, len(server_spans(memory))
        time.sleep(0.01)
    by_trace = {format_trace_id(span.trace_id): span for span in server_spans(memory)}
    assert sorted(by_trace) == sorted(trace_ids)
    for index, trace_id in enumerate(trace_ids):
        span = by_trace[trace_id]
        if index % 8 == 0:
            assert (span.name, span.tags["exception.type"]) == ("GET /boom", "RuntimeError")
        else:
            assert span.name == "GET /users/<int:user_id>"
            assert span.tags["http.path"] == f"/users/{index}"
    loads = [span for span in memory.spans if span.name == "load user"]
    assert len(loads) == 28
    for load in loads:
        assert load.parent_id == by_trace[format_trace_id(load.trace_id)].span_id


def test_unsampled_requests_record_nothing_and_work(memory: MemoryBackend, app: Flask) -> None:
    unsampled = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-00"}
    assert get(app, "/users/1", headers=unsampled) == (200, b"user 1")
    assert get(app, "/broken", headers=unsampled)[0] == 503
    assert get(app, "/boom", headers=unsampled)[0] == 500
    assert memory.spans == []
