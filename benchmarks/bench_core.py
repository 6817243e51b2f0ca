"""Span creation cost: tomograph beside the OpenTelemetry SDK and py_zipkin, in one process.

Cases:
1. a sampled root span with 3 tags and 1 note, start to finish, into an in-memory backend;
2. three nested sampled spans;
3. case 1 when the trace is not sampled;
4. an unsampled span with nothing in it, as a new root (the sampler says no);
5. the same as the child of an unsampled span (the parent's decision is followed);
6. case 4 through the package-level ``tomograph.span`` (the default tracer, looked up per span).

``--instructions`` counts instructions with valgrind's callgrind instead of timing (see
``_callgrind``): numbers that machine load does not move. ``--only TEXT`` keeps the cases whose
names contain ``TEXT``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import _callgrind
from _harness import Result, print_table, time_per_op

Case = tuple[Callable[[], object], AbstractContextManager[Any]]
LIBRARIES = ("tomograph", "opentelemetry-sdk", "py_zipkin")


def tomograph_cases() -> dict[str, Case]:
    import tomograph
    from tomograph.reporting.memory import MemoryBackend
    from tomograph.sampling import never

    memory = MemoryBackend(max_spans=1000)
    tracer = tomograph.Tracer("bench", backends=[memory])
    unsampled = tomograph.Tracer("bench", backends=[memory], sampler=never())
    tomograph.configure(service="bench", backends=[memory], sampler=never(), environ={})

    def one_span(tracer: tomograph.Tracer = tracer) -> None:
        with tracer.span("op") as span:
            span.tag("http.method", "GET")
            span.tag("http.status_code", 200)
            span.tag("peer", "db")
            span.annotate("cache miss")

    def nested() -> None:
        with tracer.span("a"), tracer.span("b"), tracer.span("c"):
            pass

    def empty_span(span: Callable[[str], Any] = unsampled.span) -> None:
        with span("op"):
            pass

    def empty_default_span(span: Callable[[str], Any] = tomograph.span) -> None:
        with span("op"):
            pass

    return {
        "1 span, 3 tags, 1 note": (one_span, nullcontext()),
        "3 nested spans": (nested, nullcontext()),
        "1 span unsampled, 3 tags, 1 note": (lambda: one_span(unsampled), nullcontext()),
        "unsampled root span": (empty_span, nullcontext()),
        "unsampled child span": (empty_span, unsampled.span("parent")),
        "unsampled root, tomograph.span": (empty_default_span, nullcontext()),
    }


def otel_cases() -> dict[str, Case] | None:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
    except ImportError:
        return None

    def make(sampler: object) -> Any:
        provider = TracerProvider(sampler=sampler)
        exporter = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("bench"), exporter

    tracer, exporter = make(ALWAYS_ON)
    off_tracer, _ = make(ParentBased(ALWAYS_OFF))

    def one_span(tracer: Any = tracer) -> None:
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

    def empty_span() -> None:
        with off_tracer.start_as_current_span("op"):
            pass

    return {
        "1 span, 3 tags, 1 note": (one_span, nullcontext()),
        "3 nested spans": (nested, nullcontext()),
        "1 span unsampled, 3 tags, 1 note": (lambda: one_span(off_tracer), nullcontext()),
        "unsampled root span": (empty_span, nullcontext()),
        "unsampled child span": (empty_span, off_tracer.start_as_current_span("parent")),
    }


def py_zipkin_cases() -> dict[str, Case] | None:
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

    def empty_root() -> None:
        with zipkin_span(
            service_name="bench", span_name="op", transport_handler=transport, sample_rate=0.0
        ):
            pass

    def empty_child() -> None:
        with zipkin_span(service_name="bench", span_name="op"):
            pass

    unsampled_parent = zipkin_span(
        service_name="bench", span_name="parent", transport_handler=transport, sample_rate=0.0
    )
    return {
        "1 span, 3 tags, 1 note": (one_span, nullcontext()),
        "3 nested spans": (nested, nullcontext()),
        "1 span unsampled, 3 tags, 1 note": (lambda: one_span(0.0), nullcontext()),
        "unsampled root span": (empty_root, nullcontext()),
        "unsampled child span": (empty_child, unsampled_parent),
    }


MAKERS = {
    "tomograph": tomograph_cases,
    "opentelemetry-sdk": otel_cases,
    "py_zipkin": py_zipkin_cases,
}


def count(library: str, case_name: str, iterations: int) -> None:
    """Worker under callgrind: run one case ``iterations`` times after a warm-up, GC off."""
    cases = MAKERS[library]()
    assert cases is not None
    operation, around = cases[case_name]
    with around:
        _callgrind.run_counted(operation, iterations)


def case_names(library: str) -> list[str] | None:
    """The cases ``library`` has (asked in a process of its own: imports stay out of ours)."""
    listing = subprocess.run(
        [sys.executable, __file__, "--list", library], capture_output=True, text=True, check=False
    )
    if listing.returncode:
        return None
    return listing.stdout.split("\n")[:-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--only", help="only the cases whose names contain this text")
    parser.add_argument("--library", choices=list(MAKERS), action="append", help="only these")
    parser.add_argument("--list", help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        cases = MAKERS[args.list]()
        if cases is None:
            raise SystemExit(1)
        print("\n".join(cases))
        return
    if args.count:
        library, case, iterations = args.count
        count(library, case, int(iterations))
        return
    results: list[Result] = []
    unit = "instructions" if args.instructions else "µs"
    for library, make_cases in MAKERS.items():
        if args.library and library not in args.library:
            continue
        if args.instructions:
            names = case_names(library)
            if names is None:
                print(f"({library} not installed: skipped)", file=sys.stderr)
                continue
            for name in names:
                if args.only is None or args.only in name:
                    per_op = _callgrind.instructions_per_op(
                        lambda n, library=library, name=name: [
                            sys.executable,
                            __file__,
                            "--count",
                            library,
                            name,
                            str(n),
                        ],
                        *_callgrind.MANY_ITERATIONS,
                    )
                    results.append(Result(name, library, per_op))
            continue
        cases = make_cases()
        if cases is None:
            print(f"({library} not installed: skipped)", file=sys.stderr)
            continue
        for name, (operation, around) in cases.items():
            if args.only is None or args.only in name:
                with around:
                    results.append(Result(name, library, time_per_op(operation)))
    print_table(
        f"Span creation ({unit} per operation; ratios: peer / tomograph)", results, unit=unit
    )


if __name__ == "__main__":
    main()
