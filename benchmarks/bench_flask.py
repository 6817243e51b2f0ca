"""Flask per-request cost: tomograph's ``Tracing`` extension beside OpenTelemetry's
``FlaskInstrumentor``.

A Flask view with a route template (``/users/<int:user_id>``), called through Flask's whole
request cycle (``app(environ, start_response)``, the body read and closed as a server does),
untraced, with tomograph, and with OpenTelemetry's Flask instrumentation: µs per request added
to the untraced app, for a new trace and for a request carrying ``traceparent``. Both tracers
record every request into memory (tomograph's ``MemoryBackend``; OpenTelemetry's SDK with a
``SimpleSpanProcessor`` and the in-memory exporter), kept bounded, so the numbers are the cost
of tracing, not of exporting.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from flask import Flask

import tomograph
from _harness import Result, print_table, time_per_op, wsgi_request
from tomograph.integrations.flask import Tracing
from tomograph.reporting.memory import MemoryBackend

ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/users/7",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000",
    "HTTP_HOST": "127.0.0.1:8080",
    "HTTP_USER_AGENT": "bench",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.input": None,
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_app() -> Flask:
    app = Flask("bench")

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return "hello"

    return app


def build_app(kind: str) -> Callable[..., Any] | None:
    """The Flask app traced by ``kind``; None if that library is missing."""
    app = make_app()
    if kind == "bare":
        return app
    if kind == "tomograph":
        tomograph.configure(service="bench", backends=[MemoryBackend(max_spans=1000)], environ={})
        Tracing(app, service_name="bench")
        return app
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    FlaskInstrumentor.instrument_app(app, tracer_provider=provider)

    def bounded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if len(exporter._finished_spans) > 1000:
            exporter.clear()  # keep memory bounded, as tomograph's MemoryBackend does
        return app(environ, start_response)

    return bounded


def one_request(app: Callable[..., Any], extra: dict[str, Any]) -> Callable[[], None]:
    return wsgi_request(app, lambda: {**ENVIRON, **extra})


def main(rounds: int = 3) -> None:
    results: list[Result] = []
    cases = {"new trace": {}, "incoming traceparent": {"HTTP_TRACEPARENT": TRACEPARENT}}
    apps = {kind: build_app(kind) for kind in ("bare", "tomograph", "opentelemetry")}
    for kind, app in apps.items():
        if app is None:
            print(f"({kind} Flask instrumentation not installed: skipped)", file=sys.stderr)
    # The kinds take turns, and each keeps its best round: a busy machine slows one round,
    # not one kind.
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for case, extra in cases.items():
            for kind, app in apps.items():
                if app is not None:
                    took = time_per_op(one_request(app, extra))
                    best[case, kind] = min(best.get((case, kind), took), took)
    for case in cases:
        bare = best[case, "bare"]
        for kind in ("tomograph", "opentelemetry"):
            if (case, kind) in best:
                library = "opentelemetry-flask" if kind == "opentelemetry" else kind
                results.append(Result(case, library, best[case, kind] - bare))
    print_table(
        "Flask view, whole request cycle (µs per request added to the untraced app; "
        "ratio: peer / tomograph)",
        results,
    )
    print("\nuntraced Flask request: " + ", ".join(f"{c} {best[c, 'bare']:.1f} µs" for c in cases))


if __name__ == "__main__":
    main()
