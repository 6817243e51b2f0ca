"""Django requests through Django's real request cycle (test Client, AsyncClient, its WSGI and
ASGI handlers): one server span each, named after the route the resolver matched."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("django")

from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest
from django.test import AsyncClient, Client, override_settings
from tests.integrations.django_site import in_process
from tests.integrations.django_site.views import slow_view_started
from tests.support.thread_calls import all_at_once

import tomograph
from tomograph import config
from tomograph.context import CURRENT_SPAN
from tomograph.integrations import django as traced_django
from tomograph.integrations.asgi import TracingMiddleware as AsgiMiddleware
from tomograph.integrations.django.middleware import CANCELLED, route_template
from tomograph.model import ExceptionNote, SpanKind
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

in_process.configure()

WITHOUT_OURS = ["django.middleware.common.CommonMiddleware"]


@pytest.fixture(autouse=True)
def _restore_patch() -> Iterator[None]:
    yield
    traced_django.unpatch()


def server_spans(memory: MemoryBackend) -> list[Span]:
    return [span for span in memory.spans if span.kind is SpanKind.SERVER]


def only_server_span(memory: MemoryBackend) -> Span:
    spans = server_spans(memory)
    assert len(spans) == 1, [span.name for span in spans]
    return spans[0]


def client() -> Client:
    return Client(raise_request_exception=False)


def test_runs_on_the_django_version_asked_for() -> None:
    import django

    expected = os.environ.get("TOMOGRAPH_EXPECT_DJANGO")
    if expected is not None:
        assert django.get_version().startswith(expected + ".")


# -- naming, tags, parenting -------------------------------------------------------------------


def test_span_is_named_after_the_route_with_its_converter(memory: MemoryBackend) -> None:
    response = client().get("/users/7")
    assert response.status_code == 200
    span = only_server_span(memory)
    assert span.name == "GET /users/<int:user_id>"
    assert span.tags["http.route"] == "/users/<int:user_id>"
    assert span.tags["http.path"] == "/users/7"
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.status_code"] == 200
    assert span.tags["django.view"] == "tests.integrations.django_site.views.user"
    assert not span.error


def test_spans_of_the_view_are_children_of_the_request_span(memory: MemoryBackend) -> None:
    client().get("/users/7")
    request_span = only_server_span(memory)
    assert memory.find("load-user").parent_id == request_span.span_id


def test_include_prefixes_are_part_of_the_route(memory: MemoryBackend) -> None:
    client().get("/api/v1/users/3")
    assert only_server_span(memory).name == "GET /api/v1/users/<int:user_id>"


def test_class_based_views_are_named_by_their_class(memory: MemoryBackend) -> None:
    client().post("/api/v1/orders/a-1/items")
    span = only_server_span(memory)
    assert span.name == "POST /api/v1/orders/<slug:order>/items"
    assert span.tags["django.view"] == "tests.integrations.django_site.views.OrderItems"
    assert span.tags["http.status_code"] == 405


def test_regex_routes_keep_their_pattern(memory: MemoryBackend) -> None:
    client().get("/legacy/2024/")
    assert only_server_span(memory).name == "GET /legacy/(?P<code>[0-9]{4})/$"


def test_an_unmatched_path_is_a_404_named_after_the_method_and_not_an_error(
    memory: MemoryBackend,
) -> None:
    assert client().get("/no/such/page").status_code == 404
    span = only_server_span(memory)
    assert span.name == "GET"
    assert "http.route" not in span.tags
    assert span.tags["http.status_code"] == 404
    assert not span.error


def test_a_5xx_status_is_an_error_and_a_4xx_is_not(memory: MemoryBackend) -> None:
    client().get("/status/503")
    client().get("/status/418")
    by_status = {span.tags["http.status_code"]: span for span in server_spans(memory)}
    assert by_status[503].error
    assert by_status[503].tags["error"] == "503"
    assert not by_status[418].error


def test_the_callers_trace_is_continued(memory: MemoryBackend) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = client().get("/echo-trace", HTTP_TRACEPARENT=f"00-{trace_id}-00f067aa0ba902b7-01")
    assert response.content.decode() == trace_id
    span = only_server_span(memory)
    assert f"{span.trace_id:032x}" == trace_id
    assert span.parent_id == 0x00F067AA0BA902B7


# -- errors ---------------------------------------------------------------------------------


def test_an_unhandled_exception_turned_into_a_500_page_is_on_the_span(
    memory: MemoryBackend,
) -> None:
    assert client().get("/boom").status_code == 500
    span = only_server_span(memory)
    assert span.error
    assert span.name == "GET /boom"
    assert span.tags["exception.type"] == "ViewFailed"
    assert span.tags["error"] == "the view failed"
    assert span.tags["http.status_code"] == 500
    notes = [note for _, note, _ in span.notes_raw if isinstance(note, ExceptionNote)]
    assert len(notes) == 1
    assert any(function == "boom" for _, _, function in notes[0].frames), notes[0].frames


def test_the_test_clients_own_reraise_still_works(memory: MemoryBackend) -> None:
    with pytest.raises(Exception, match="the view failed"):
        Client().get("/boom")
    assert only_server_span(memory).tags["exception.type"] == "ViewFailed"


@pytest.mark.parametrize(("kind", "raised"), [("keyboard", KeyboardInterrupt), ("other", None)])
def test_a_base_exception_from_a_view_ends_the_span_and_propagates(
    memory: MemoryBackend, kind: str, raised: type[BaseException] | None
) -> None:
    from tests.integrations.django_site.views import Abandoned

    with pytest.raises(raised or Abandoned):
        client().get(f"/base-exception/{kind}")
    span = only_server_span(memory)
    assert span.error
    assert span.name == "GET /base-exception/<str:kind>"
    assert span.tags["exception.type"] == (raised or Abandoned).__qualname__


@override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True)
def test_a_propagated_exception_is_recorded_once(memory: MemoryBackend) -> None:
    with pytest.raises(Exception, match="the view failed"):
        client().get("/boom")
    span = only_server_span(memory)
    notes = [note for _, note, _ in span.notes_raw if isinstance(note, ExceptionNote)]
    assert len(notes) == 1


# -- streaming ------------------------------------------------------------------------------


def test_a_streamed_body_is_inside_the_span(memory: MemoryBackend) -> None:
    response = client().get("/stream")
    assert server_spans(memory) == []  # the view returned, the body is not sent yet
    assert b"".join(response.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"  # type: ignore[arg-type]
    span = only_server_span(memory)
    chunks = [memory.find(f"chunk-{number}") for number in range(3)]
    assert all(chunk.parent_id == span.span_id for chunk in chunks)
    assert span.end_ns >= chunks[-1].end_ns


def test_a_stream_that_fails_is_an_error(memory: MemoryBackend) -> None:
    response = client().get("/stream-fails")
    with pytest.raises(Exception, match="the stream failed"):
        b"".join(response.streaming_content)  # type: ignore[arg-type]
    response.close()
    span = only_server_span(memory)
    assert span.error
    assert span.tags["exception.type"] == "ViewFailed"


def test_a_stream_closed_early_ends_the_span(memory: MemoryBackend) -> None:
    response = client().get("/stream")
    next(iter(response.streaming_content))  # type: ignore[arg-type]
    response.close()  # the server gave up: a client that went away
    span = only_server_span(memory)
    assert not span.error
    gc.collect()
    # The view's generator yields inside a span of its own: closing it must not leave the
    # request's span current on the server's thread.
    assert CURRENT_SPAN.get() is None


# -- async (AsyncClient, ASGI) --------------------------------------------------------------


def test_async_views_are_traced_with_their_children(memory: MemoryBackend) -> None:
    response = asyncio.run(AsyncClient().get("/async/5"))
    assert response.status_code == 200
    span = only_server_span(memory)
    assert span.name == "GET /async/<int:user_id>"
    assert memory.find("load-user").parent_id == span.span_id


def test_an_async_view_that_raises_is_an_error(memory: MemoryBackend) -> None:
    response = asyncio.run(AsyncClient(raise_request_exception=False).get("/boom-async"))
    assert response.status_code == 500
    span = only_server_span(memory)
    assert span.error
    assert span.tags["exception.type"] == "ViewFailed"


def test_an_async_stream_is_inside_the_span(memory: MemoryBackend) -> None:
    async def fetch() -> bytes:
        response = await AsyncClient().get("/stream-async")
        return b"".join([chunk async for chunk in response.streaming_content])  # type: ignore[union-attr]

    assert asyncio.run(fetch()) == b"chunk 0\nchunk 1\nchunk 2\n"
    span = only_server_span(memory)
    assert all(memory.find(f"chunk-{n}").parent_id == span.span_id for n in range(3))


# -- Django's own WSGI and ASGI handlers, alone and under tomograph's middleware -----------------


def wsgi_get(app: Any, path: str, **extra: str) -> tuple[str, bytes]:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.2",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        **extra,
    }
    statuses: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
    try:
        content = b"".join(body)
    finally:
        body.close()
    return statuses[0], content


async def asgi_get(app: Any, target: str, disconnect: bool = False) -> int:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.2", 5000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            if disconnect:
                started = asyncio.Event()
                slow_view_started[:] = [started]
                await asyncio.wait_for(started.wait(), 30)
                return {"type": "http.disconnect"}
            await asyncio.sleep(3600)  # a client that stays connected
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"]) if sent else 0


def test_under_djangos_wsgi_handler_with_the_server_addresses(memory: MemoryBackend) -> None:
    status, _ = wsgi_get(WSGIHandler(), "/users/9")
    assert status.startswith("200")
    span = only_server_span(memory)
    assert span.name == "GET /users/<int:user_id>"
    assert span.local_endpoint is not None and span.local_endpoint.port == 8000
    assert span.remote_endpoint is not None and span.remote_endpoint.ipv4 == "127.0.0.2"


@pytest.mark.parametrize("path", ["/users/11", "/boom"])
def test_under_tomographs_wsgi_middleware_there_is_one_span(
    memory: MemoryBackend, path: str
) -> None:
    status, _ = wsgi_get(tomograph.Middleware(WSGIHandler()), path)
    span = only_server_span(memory)
    if path == "/boom":
        assert status.startswith("500")
        assert span.name == "GET /boom"
        assert span.tags["exception.type"] == "ViewFailed"  # the WSGI layer only saw a 500
    else:
        assert span.name == "GET /users/<int:user_id>"
        assert span.tags["django.view"] == "tests.integrations.django_site.views.user"
        assert memory.find("load-user").parent_id == span.span_id


def test_under_djangos_asgi_handler(memory: MemoryBackend) -> None:
    assert asyncio.run(asgi_get(ASGIHandler(), "/async/4")) == 200
    span = only_server_span(memory)
    assert span.name == "GET /async/<int:user_id>"
    assert memory.find("load-user").parent_id == span.span_id


@pytest.mark.parametrize("path", ["/async/12", "/users/12", "/boom-async"])
def test_under_tomographs_asgi_middleware_there_is_one_span(
    memory: MemoryBackend, path: str
) -> None:
    status = asyncio.run(asgi_get(AsgiMiddleware(ASGIHandler()), path))
    span = only_server_span(memory)
    if path == "/boom-async":
        assert status == 500
        assert span.tags["exception.type"] == "ViewFailed"
    else:
        assert status == 200
        assert span.name in ("GET /async/<int:user_id>", "GET /users/<int:user_id>")
        assert memory.find("load-user").parent_id == span.span_id


def test_a_request_cancelled_by_a_disconnect_ends_its_span_without_an_error(
    memory: MemoryBackend,
) -> None:
    import django

    cancels = django.VERSION >= (5, 0)  # Django 4.2 lets the view finish
    path = "/slow-async" if cancels else "/slow-async?seconds=0.1"
    status = asyncio.run(asgi_get(ASGIHandler(), path, disconnect=True))
    span = only_server_span(memory)
    assert span.name == "GET /slow-async"
    assert not span.error
    notes = [note.value for note in span.annotations]
    if cancels:
        assert status == 0
        assert CANCELLED in notes
    else:
        assert status == 200
        assert CANCELLED not in notes


# -- patch() and the app config ----------------------------------------------------------------


@override_settings(MIDDLEWARE=WITHOUT_OURS)
def test_without_the_middleware_nothing_is_traced(memory: MemoryBackend) -> None:
    client().get("/users/1")
    assert server_spans(memory) == []


@override_settings(MIDDLEWARE=WITHOUT_OURS)
def test_patch_traces_a_project_without_touching_its_settings(memory: MemoryBackend) -> None:
    from django.conf import settings

    assert traced_django.patch() is True
    assert traced_django.patch() is False
    assert traced_django.patched()
    client().get("/users/1")
    assert only_server_span(memory).name == "GET /users/<int:user_id>"
    assert settings.MIDDLEWARE == WITHOUT_OURS


@override_settings(MIDDLEWARE=WITHOUT_OURS)
def test_unpatch_stops_tracing_even_for_handlers_built_before(memory: MemoryBackend) -> None:
    traced_django.patch()
    built_before = client()
    built_before.get("/users/1")
    assert traced_django.unpatch() is True
    assert traced_django.unpatch() is False
    built_before.get("/users/2")
    client().get("/users/3")
    assert [span.tags["http.path"] for span in server_spans(memory)] == ["/users/1"]


def test_patch_with_the_middleware_listed_too_makes_one_span(memory: MemoryBackend) -> None:
    traced_django.patch()
    client().get("/users/1")
    only_server_span(memory)


def test_the_app_config_patches_when_django_sets_it_up() -> None:
    import tomograph.integrations.django.apps as apps_module

    config_ = apps_module.TomographConfig("tomograph.integrations.django", traced_django)
    assert config_.label == "tomograph"
    config_.ready()
    assert traced_django.patched()


# -- hostile input ----------------------------------------------------------------------------


def test_a_path_that_is_not_utf8_is_traced_without_failing(memory: MemoryBackend) -> None:
    # WSGI gives the raw bytes as latin-1: here b"/users/\xff\xfe" and an invalid sequence.
    status, _ = wsgi_get(WSGIHandler(), "/caf\xc3\xa9/\xff\xfe")
    assert status.startswith("404")
    span = only_server_span(memory)
    assert span.tags["http.status_code"] == 404
    assert isinstance(span.tags["http.path"], str)


def test_huge_and_malformed_trace_headers_start_a_new_trace(memory: MemoryBackend) -> None:
    response = client().get(
        "/users/1",
        HTTP_TRACEPARENT="00-" + "f" * 10_000_000,
        HTTP_B3="\udcff" * 1000,
        HTTP_X_B3_TRACEID="9" * 100_000,
        HTTP_COOKIE="c=" + "x" * 10_000_000,
    )
    assert response.status_code == 200
    span = only_server_span(memory)
    assert span.parent_id is None
    assert span.name == "GET /users/<int:user_id>"


def test_32_threads_at_once_each_get_their_own_span(memory: MemoryBackend) -> None:
    statuses: list[int] = []

    def request(index: int) -> None:
        statuses.append(client().get(f"/users/{index}").status_code)

    all_at_once(32, request)
    assert statuses == [200] * 32
    spans = server_spans(memory)
    assert sorted(span.tags["http.path"] for span in spans) == sorted(
        f"/users/{index}" for index in range(32)
    )
    assert len({span.trace_id for span in spans}) == 32
    children = [span for span in memory.spans if span.name == "load-user"]
    assert {child.parent_id for child in children} == {span.span_id for span in spans}


@override_settings(MIDDLEWARE=WITHOUT_OURS)
def test_patched_before_configure_reports_once_configured() -> None:
    config.reset()
    traced_django.patch()
    early = client()
    assert early.get("/users/1").status_code == 200  # no configure() yet: no failure
    backend = MemoryBackend()
    tomograph.configure(service="late", backends=[backend], environ={})
    try:
        assert early.get("/users/2").status_code == 200
        span = only_server_span(backend)
        assert span.name == "GET /users/<int:user_id>"
        assert span.service_name == "late"
    finally:
        config.reset()


def test_no_module_of_the_integration_needs_settings_to_import() -> None:
    import subprocess

    code = (
        "import tomograph.integrations.django as d, tomograph.integrations.django.apps;"
        "assert d.patch() and d.patched() and d.unpatch()"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": ""}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


@given(st.text(max_size=300))
def test_any_route_the_resolver_reports_becomes_one_path_like_template(pattern: str) -> None:
    from django.urls import ResolverMatch

    request = HttpRequest()
    request.resolver_match = ResolverMatch(lambda request: None, (), {}, route=pattern)
    route = route_template(request)
    assert route is not None and route.startswith("/")
    assert route.removeprefix("/") == pattern.removeprefix("^").removeprefix("/")


def test_mounted_in_a_starlette_app_there_is_one_span_that_ends(memory: MemoryBackend) -> None:
    # FastAPI mounting a Django project through WSGIMiddleware: the ASGI layer's span is the
    # request's (the bridge never closes the body a WSGI layer's span would end with).
    import warnings

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from starlette.middleware.wsgi import WSGIMiddleware

        app = AsgiMiddleware(Starlette(routes=[Mount("/legacy", WSGIMiddleware(WSGIHandler()))]))
        client = TestClient(app)
    assert client.get("/legacy/users/5").status_code == 200
    span = only_server_span(memory)
    assert span.end_ns
    assert span.tags["django.view"] == "tests.integrations.django_site.views.user"
    assert span.name == "GET /legacy/users/<int:user_id>", span.name
    assert memory.find("load-user").parent_id == span.span_id
