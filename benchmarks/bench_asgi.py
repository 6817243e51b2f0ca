"""ASGI middleware cost: tomograph's ``TracingMiddleware`` beside OpenTelemetry's ASGI middleware.

In process: the middleware calling a trivial ASGI app directly (µs per request, the bare app's
time subtracted), for a new trace and for a request carrying ``traceparent``. The app and the
server's ``receive``/``send`` never wait, so a request is driven by one ``coroutine.send(None)``
without an event loop: what is measured is the middleware, not asyncio's scheduling.
OpenTelemetry's middleware is measured as configured by default (it also makes a span per
``send``) and with ``exclude_spans=["receive", "send"]``.

Both tracers record every request into memory (bounded), so the numbers are the cost of
tracing, not of exporting. ``--instructions`` counts instructions with valgrind's callgrind
instead (see ``_callgrind``): numbers that machine load does not move.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import _callgrind
from _harness import Result, print_table, time_per_op

KINDS = ("bare", "tomograph", "opentelemetry", "opentelemetry-no-send-spans")
LABELS = {
    "tomograph": "tomograph",
    "opentelemetry": "opentelemetry-asgi",
    "opentelemetry-no-send-spans": "opentelemetry-asgi, no send spans",
}
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
HEADERS = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
CASES: dict[str, list[tuple[bytes, bytes]]] = {
    "new trace": HEADERS,
    "incoming traceparent": [*HEADERS, (b"traceparent", TRACEPARENT)],
}
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
BODY = {"type": "http.response.body", "body": b"hello"}

ASGIApp = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: dict[str, Any]) -> None:
    pass


def build_app(kind: str) -> ASGIApp | None:
    """The trivial app wrapped by ``kind``'s middleware; None if that library is missing."""
    if kind == "bare":
        return hello
    if kind == "tomograph":
        import tomograph
        from tomograph.integrations.asgi import TracingMiddleware
        from tomograph.reporting.memory import MemoryBackend

        tomograph.configure(service="bench", backends=[MemoryBackend(max_spans=1000)], environ={})
        return TracingMiddleware(hello, service_name="bench")
    try:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    exclude = ["receive", "send"] if kind == "opentelemetry-no-send-spans" else None
    middleware = OpenTelemetryMiddleware(hello, tracer_provider=provider, exclude_spans=exclude)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if len(exporter._finished_spans) > 1000:
            exporter.clear()  # keep memory bounded, as tomograph's MemoryBackend does
        await middleware(scope, receive, send)

    return app


def one_request(app: ASGIApp, headers: list[tuple[bytes, bytes]]) -> Callable[[], None]:
    """One request through ``app``, with a fresh scope as a server makes it."""

    def request() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/hello",
            "raw_path": b"/hello",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
        }
        try:
            app(scope, receive, send).send(None)
        except StopIteration:
            return
        raise RuntimeError("the request waited: it needs an event loop")

    return request


def count(kind: str, case: str, iterations: int) -> None:
    """Worker under callgrind: one case ``iterations`` times (see ``_callgrind.run_counted``)."""
    app = build_app(kind)
    if app is None:
        raise SystemExit(f"{kind} is not installed")
    _callgrind.run_counted(one_request(app, CASES[case]), iterations)


def available(kind: str) -> bool:
    probe = subprocess.run(
        [sys.executable, __file__, "--count", kind, "new trace", "1"], check=False
    )
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        kind, case, iterations = args.count
        count(kind, case, int(iterations))
        return
    unit = "instructions" if args.instructions else "µs"
    results: list[Result] = []
    for case, headers in CASES.items():
        per_kind: dict[str, float] = {}
        for kind in KINDS:
            if args.instructions:
                if available(kind):
                    per_kind[kind] = _callgrind.instructions_per_op(
                        lambda n, kind=kind, case=case: [
                            sys.executable,
                            __file__,
                            "--count",
                            kind,
                            case,
                            str(n),
                        ],
                        *_callgrind.MANY_ITERATIONS,
                    )
                continue
            app = build_app(kind)
            if app is not None:
                per_kind[kind] = time_per_op(one_request(app, headers))
        for kind, value in per_kind.items():
            if kind != "bare":
                results.append(Result(case, LABELS[kind], value - per_kind["bare"]))
        missing = [kind for kind in KINDS if kind not in per_kind]
        if missing:
            print(f"({', '.join(missing)} not installed: skipped)", file=sys.stderr)
    print_table(
        f"ASGI middleware, in process ({unit} per request added to a trivial app; "
        "ratio: peer / tomograph)",
        results,
        unit=unit,
    )


if __name__ == "__main__":
    main()
