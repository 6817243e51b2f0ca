"""Span creation cost: tomograph beside the OpenTelemetry SDK and py_zipkin, in one process.

Cases:
1. a sampled root span with 3 tags and 1 note, start to finish, into an in-memory backend;
2. three nested sampled spans;
3. case 1 when the trace is not sampled.
"""

from __future__ import annotations

import sys
from collections import deque

import tomograph
from _harness import Result, print_table, time_per_op
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import never


def tomograph_cases() -> dict[str, object]:
    memory = MemoryBackend(max_spans=1000)
    tracer = tomograph.Tracer("bench", backends=[memory])
    unsampled = tomograph.Tracer("bench", backends=[memory], sampler=never())

    def one_span(tracer: tomograph.Tracer = tracer) -> None:
        with tracer.span("op") as span:
            span.tag("http.method", "GET")
            span.tag("http.status_code", 200)
            span.tag("peer", "db")
            span.annotate("cache miss")

    def nested() -> None:
        with tracer.span("a"), tracer.span("b"), tracer.span("c"):
            pass

    return {
        "1 span, 3 tags, 1 note": one_span,
        "3 nested spans": nested,
        "1 span unsampled": lambda: one_span(unsampled),
    }


def otel_cases() -> dict[str, object] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
    except ImportError:
        return None

    def make(sampler: object) -> object:
        provider = TracerProvider(sampler=sampler)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("bench"), exporter

    tracer, exporter = make(ALWAYS_ON)
    off_tracer, _ = make(ALWAYS_OFF)

    def one_span(tracer: object = tracer) -> None:
        with tracer.start_as_current_span("op") as span:
            span.set_attribute("http.method", "GET")
            span.set_attribute("http.status_code", 200)
            span.set_attribute("peer", "db")
            span.add_event("cache miss")
        exporter.clear() if len(exporter._finished_spans) > 1000 else None

    def nested() -> None:
        with tracer.start_as_current_span("a"), tracer.start_as_current_span("b"):
            with tracer.start_as_current_span("c"):
                pass
        exporter.clear() if len(exporter._finished_spans) > 1000 else None

    return {
        "1 span, 3 tags, 1 note": one_span,
        "3 nested spans": nested,
        "1 span unsampled": lambda: one_span(off_tracer),
    }


def py_zipkin_cases() -> dict[str, object] | None:
    try:
        from py_zipkin.transport import BaseTransportHandler
        from py_zipkin.zipkin import zipkin_span
    except ImportError:
        return None

    received: deque[bytes] = deque(maxlen=1000)

    class MemoryTransport(BaseTransportHandler):  # type: ignore[misc]
        def get_max_payload_bytes(self) -> None:
            return None

        def send(self, payload: bytes) -> None:
            received.append(payload)

    transport = MemoryTransport()

    def one_span(rate: float = 100.0) -> None:
        with zipkin_span(
            service_name="bench", span_name="op", transport_handler=transport, sample_rate=rate
        ) as span:
            span.update_binary_annotations({"http.method": "GET", "http.status_code": 200})
            span.update_binary_annotations({"peer": "db"})
            span.add_annotation("cache miss")

    def nested() -> None:
        with zipkin_span(
            service_name="bench", span_name="a", transport_handler=transport, sample_rate=100.0
        ):
            with zipkin_span(service_name="bench", span_name="b"):
                with zipkin_span(service_name="bench", span_name="c"):
                    pass

    return {
        "1 span, 3 tags, 1 note": one_span,
        "3 nested spans": nested,
        "1 span unsampled": lambda: one_span(0.0),
    }


def main() -> None:
    results: list[Result] = []
    for library, make_cases in (
        ("tomograph", tomograph_cases),
        ("opentelemetry-sdk", otel_cases),
        ("py_zipkin", py_zipkin_cases),
    ):
        cases = make_cases()
        if cases is None:
            print(f"({library} not installed: skipped)", file=sys.stderr)
            continue
        for case, operation in cases.items():
            results.append(Result(case, library, time_per_op(operation)))  # type: ignore[arg-type]
    print_table("Span creation (µs per operation; ratios: peer time / tomograph time)", results)


if __name__ == "__main__":
    main()
