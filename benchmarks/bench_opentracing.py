"""OpenTracing API cost: tomograph.opentracing beside the OpenTelemetry OpenTracing shim and
opentracing's own reference MockTracer, in one process.

Cases:
1. ``start_span`` + 2 tags + 1 log + ``finish`` (a sampled span into an in-memory store);
2. ``start_active_span`` with a nested active child (scope manager work included);
3. ``inject`` a span context into HTTP headers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import tomograph
from _harness import Result, print_table, time_per_op
from tomograph.reporting.memory import MemoryBackend

Cases = dict[str, Callable[[], object]]


def cases_for(tracer: Any, clear: Callable[[], None]) -> Cases:
    from opentracing import Format

    def one_span() -> None:
        span = tracer.start_span("op")
        span.set_tag("http.method", "GET")
        span.set_tag("http.status_code", 200)
        span.log_kv({"event": "cache miss"})
        span.finish()
        clear()

    def nested_active() -> None:
        with tracer.start_active_span("parent"), tracer.start_active_span("child"):
            pass
        clear()

    context = tracer.start_span("propagated").context

    def inject() -> None:
        tracer.inject(context, Format.HTTP_HEADERS, {})

    return {
        "span, 2 tags, 1 log": one_span,
        "2 nested active spans": nested_active,
        "inject HTTP headers": inject,
    }


def tomograph_cases() -> Cases:
    from tomograph.opentracing import Tracer

    memory = MemoryBackend(max_spans=1000)
    return cases_for(Tracer(tomograph.Tracer("bench", backends=[memory])), lambda: None)


def otel_shim_cases() -> Cases | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.shim.opentracing_shim import create_tracer
    except ImportError:
        return None
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def clear() -> None:
        if len(exporter._finished_spans) > 1000:
            exporter.clear()

    return cases_for(create_tracer(provider), clear)


def mocktracer_cases() -> Cases | None:
    try:
        from opentracing.mocktracer import MockTracer
    except ImportError:
        return None
    tracer = MockTracer()

    def clear() -> None:
        if len(tracer._finished_spans) > 1000:
            tracer.reset()

    return cases_for(tracer, clear)


def main() -> None:
    results: list[Result] = []
    for library, make_cases in (
        ("tomograph", tomograph_cases),
        ("otel-opentracing-shim", otel_shim_cases),
        ("opentracing-mocktracer", mocktracer_cases),
    ):
        cases = make_cases()
        if cases is None:
            print(f"({library} not installed: skipped)", file=sys.stderr)
            continue
        for case, operation in cases.items():
            results.append(Result(case, library, time_per_op(operation)))
    print_table("OpenTracing API (µs per operation; ratios: peer time / tomograph time)", results)


if __name__ == "__main__":
    main()
