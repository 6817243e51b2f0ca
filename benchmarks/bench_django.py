"""Django request cost: tomograph's middleware beside OpenTelemetry's DjangoInstrumentor.

The same view (a route with a converter, answering a short text) served through Django's own
WSGIHandler in process, with no tracing, with tomograph's ``TracingMiddleware`` and with
``opentelemetry-instrumentation-django``; µs per request added to Django's own time, for a new
trace and for a request carrying ``traceparent``. Both tracers record every request into memory
(tomograph's MemoryBackend; OpenTelemetry's SDK with a SimpleSpanProcessor and its in-memory
exporter), both bounded, so the numbers are the cost of tracing, not of exporting.

A second table gives tomograph's cost per SQL statement (execute_wrapper, SQLite in memory);
OpenTelemetry's Django instrumentation does not trace statements.
"""

from __future__ import annotations

import io
import sys
import types
from collections.abc import Callable
from typing import Any

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.urls import path

import tomograph
from _harness import Result, print_table, time_per_op, wsgi_request
from tomograph.reporting.memory import MemoryBackend

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OURS = "tomograph.integrations.django.TracingMiddleware"


def user(request: HttpRequest, user_id: int) -> HttpResponse:
    return HttpResponse(b"hello")


def configure() -> None:
    urls = types.ModuleType("bench_django_urls")
    urls.urlpatterns = [path("users/<int:user_id>", user)]  # type: ignore[attr-defined]
    sys.modules[urls.__name__] = urls
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=urls.__name__,
        MIDDLEWARE=[],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        LOGGING_CONFIG=None,
    )
    django.setup()


def environ(extra: dict[str, str]) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/users/42",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        **extra,
    }


def handler_with(middleware: list[str]) -> WSGIHandler:
    settings.MIDDLEWARE = middleware
    return WSGIHandler()


def opentelemetry_handler() -> Callable[..., Any] | None:
    try:
        from opentelemetry.instrumentation.django import DjangoInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings.MIDDLEWARE = []
    DjangoInstrumentor().instrument(tracer_provider=provider)  # adds its middleware first
    handler = WSGIHandler()
    DjangoInstrumentor().uninstrument()

    def bounded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if len(exporter._finished_spans) > 1000:
            exporter.clear()  # keep memory bounded, as tomograph's MemoryBackend does
        return handler(environ, start_response)

    return bounded


def one_request(call: Callable[..., Any], extra: dict[str, str]) -> Callable[[], None]:
    return wsgi_request(call, lambda: environ(extra))


def best_of_rounds(operations: dict[str, Callable[[], None]], rounds: int = 5) -> dict[str, float]:
    """µs per call of each operation: the best over rounds that take turns, so a burst of
    other work on the machine hits every library alike."""
    best = dict.fromkeys(operations, float("inf"))
    for _ in range(rounds):
        for name, operation in operations.items():
            best[name] = min(best[name], time_per_op(operation, min_time=0.1, repeats=3))
    return best


def requests() -> None:
    tomograph.configure(service="bench", backends=[MemoryBackend(max_spans=1000)], environ={})
    handlers: dict[str, Callable[..., Any]] = {
        "bare": handler_with([]),
        "tomograph": handler_with([OURS]),
    }
    theirs = opentelemetry_handler()
    if theirs is None:
        print("(opentelemetry-instrumentation-django not installed: skipped)", file=sys.stderr)
    else:
        handlers["opentelemetry-django"] = theirs
    results: list[Result] = []
    cases = {"new trace": {}, "incoming traceparent": {"HTTP_TRACEPARENT": TRACEPARENT}}
    for case, extra in cases.items():
        times = best_of_rounds({name: one_request(h, extra) for name, h in handlers.items()})
        baseline = times.pop("bare")
        results += [Result(case, name, value - baseline) for name, value in times.items()]
        print(f"({case}: Django alone takes {baseline:.1f} µs per request)")
    print_table(
        "Django view through WSGIHandler (µs per request added to Django's own time; "
        "ratio: peer / tomograph)",
        results,
    )


def statements() -> None:
    from tomograph.integrations.django import StatementTracer

    def query() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    tracer = StatementTracer()

    def traced_query() -> None:
        with connection.execute_wrapper(tracer), connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def untraced_query() -> None:  # the same execute_wrapper block, wrapping nothing
        with connection.execute_wrapper(pass_through), connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    with tomograph.span("request"):
        times = best_of_rounds({"bare": untraced_query, "tomograph": traced_query})
    print_table(
        "SQL statement through Django's cursor, SQLite in memory (µs added per statement)",
        [Result("SELECT 1", "tomograph", times["tomograph"] - times["bare"])],
    )


def pass_through(execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
    return execute(sql, params, many, context)


if __name__ == "__main__":
    configure()
    requests()
    statements()
