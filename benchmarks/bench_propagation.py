"""Propagation cost: inject a context into a dict of headers, then extract it again.

tomograph beside the OpenTelemetry propagators (and py_zipkin for B3 multi-header), in one
process. Each case writes and reads the same information on both sides:

1. W3C traceparent + tracestate (2 foreign members);
2. W3C baggage with 3 entries;
3. B3 multi-header; 4. B3 single header;
5. a W3C + baggage composite on both sides (OpenTelemetry's default propagators);
6. tomograph's default composite (writes W3C, baggage and B3 multi; reads W3C first), beside an
   OpenTelemetry composite writing the same headers (tracecontext, baggage, B3 multi);
7. tomograph-only formats: X-Trace-Info and Jaeger's uber-trace-id;
8. extract only, from a WSGI environ carrying the default headers (what a server does per
   request), OpenTelemetry reading it through a WSGI getter like its WSGI instrumentation's;
9. B3 single header, extract only (py_zipkin reads the ``b3`` header but never writes it).

py_zipkin validates nothing (any string is an id); tomograph checks every field.

``--instructions`` counts instructions with valgrind's callgrind instead (see ``_callgrind``):
numbers that machine load does not move. ``--only TEXT`` keeps the cases whose names hold TEXT.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from _harness import Result, print_table, time_per_op
from tomograph.model import TraceContext
from tomograph.propagation import Propagator, b3, baggage, jaeger, w3c, xtraceinfo
from tomograph.propagation.baggage import BaggageEntry

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACESTATE = (("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE"))
BAGGAGE = {"user.id": "alice", "tenant": "acme corp", "request.class": "gold"}
B3_SINGLE = {"b3": f"{TRACE_ID:032x}-{SPAN_ID:016x}-1"}

CASES = [
    "w3c traceparent+tracestate",
    "w3c baggage (3 entries)",
    "b3 multi",
    "b3 single",
    "w3c + baggage composite",
    "default composite",
    "x-trace-info",
    "jaeger uber-trace-id",
    "extract defaults from environ",
    "b3 single, extract only",
]


def round_trip(inject: Any, extract: Any, context: Any) -> Any:
    def operation() -> None:
        headers: dict[str, str] = {}
        inject(context, headers)
        extract(headers)

    return operation


def tomograph_cases() -> dict[str, Any]:
    entries = tuple(BaggageEntry(k, v) for k, v in BAGGAGE.items())
    plain = TraceContext(TRACE_ID, SPAN_ID, sampled=True)
    with_state = plain.replace(extra={"tracestate": TRACESTATE})
    with_baggage = plain.replace(extra={"baggage": entries})
    full = plain.replace(extra={"tracestate": TRACESTATE, "baggage": entries})
    default = Propagator()
    w3c_baggage = Propagator(["w3c", "baggage"])
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.version": (1, 0)}
    headers: dict[str, str] = {}
    default.inject(full, headers)
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})

    return {
        CASES[0]: round_trip(w3c.inject, w3c.extract, with_state),
        CASES[1]: round_trip(baggage.inject, baggage.extract, with_baggage),
        CASES[2]: round_trip(b3.inject, b3.extract, plain),
        CASES[3]: round_trip(b3.inject_single, b3.extract, plain),
        CASES[4]: round_trip(w3c_baggage.inject, w3c_baggage.extract, full),
        CASES[5]: round_trip(default.inject, default.extract, full),
        CASES[6]: round_trip(xtraceinfo.inject, xtraceinfo.extract, plain),
        CASES[7]: round_trip(jaeger.inject, jaeger.extract, plain),
        CASES[8]: lambda: default.extract(environ),
        CASES[9]: lambda: b3.extract(B3_SINGLE),
    }


def otel_cases() -> dict[str, Any] | None:
    try:
        from opentelemetry import baggage as otel_baggage
        from opentelemetry import trace
        from opentelemetry.baggage.propagation import W3CBaggagePropagator
        from opentelemetry.context import Context
        from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.propagators.textmap import Getter
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None

    span_context = SpanContext(
        TRACE_ID,
        SPAN_ID,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState(list(TRACESTATE)),
    )
    context = trace.set_span_in_context(NonRecordingSpan(span_context))
    for key, value in BAGGAGE.items():
        context = otel_baggage.set_baggage(key, value, context)
    bare = trace.set_span_in_context(NonRecordingSpan(span_context), Context())

    def otel_round_trip(propagator: Any, ctx: Any) -> Any:
        def operation() -> None:
            headers: dict[str, str] = {}
            propagator.inject(headers, ctx)
            propagator.extract(headers)

        return operation

    composite = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    same_headers = CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator(), B3MultiFormat()]
    )
    headers: dict[str, str] = {}
    composite.inject(headers, context)

    class WSGIGetter(Getter[dict[str, Any]]):
        """What OpenTelemetry's WSGI instrumentation uses to read headers from an environ."""

        def get(self, carrier: dict[str, Any], key: str) -> list[str] | None:
            value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
            return None if value is None else [value]

        def keys(self, carrier: dict[str, Any]) -> list[str]:
            return list(carrier)

    wsgi_getter = WSGIGetter()
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.version": (1, 0)}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})

    return {
        CASES[0]: otel_round_trip(TraceContextTextMapPropagator(), bare),
        CASES[1]: otel_round_trip(W3CBaggagePropagator(), context),
        CASES[2]: otel_round_trip(B3MultiFormat(), bare),
        CASES[3]: otel_round_trip(B3SingleFormat(), bare),
        CASES[4]: otel_round_trip(composite, context),
        CASES[5]: otel_round_trip(same_headers, context),
        CASES[8]: lambda: composite.extract(environ, getter=wsgi_getter),
        CASES[9]: lambda: B3SingleFormat().extract(B3_SINGLE),
    }


def py_zipkin_cases() -> dict[str, Any] | None:
    try:
        from py_zipkin.request_helpers import create_http_headers, extract_zipkin_attrs_from_headers
        from py_zipkin.storage import Stack
        from py_zipkin.zipkin import ZipkinAttrs
    except ImportError:
        return None
    stack = Stack()
    stack.push(ZipkinAttrs(f"{TRACE_ID:032x}", f"{SPAN_ID:016x}", None, "0", True))

    def operation() -> None:
        extract_zipkin_attrs_from_headers(create_http_headers(context_stack=stack))

    return {
        CASES[2]: operation,
        CASES[9]: lambda: extract_zipkin_attrs_from_headers(B3_SINGLE),
    }


MAKERS = {"tomograph": tomograph_cases, "opentelemetry": otel_cases, "py_zipkin": py_zipkin_cases}


def load_cases(chosen: list[str]) -> dict[str, dict[str, Any]]:
    libraries: dict[str, dict[str, Any]] = {}
    for library in chosen:
        make_cases = MAKERS[library]
        try:
            cases = make_cases()
        except ImportError as error:
            print(f"({library}: {error}: skipped)", file=sys.stderr)
            continue
        if cases is None:
            print(f"({library} not installed: skipped)", file=sys.stderr)
            continue
        libraries[library] = cases
    return libraries


def count(library: str, case: str, iterations: int) -> None:
    """Run one case ``iterations`` times after a warm-up, the garbage collector off (what
    callgrind measures)."""
    cases = MAKERS[library]()
    assert cases is not None
    operation = cases[case]
    for _ in range(200):
        operation()
    gc.collect()
    gc.disable()
    for _ in range(iterations):
        operation()


def instruction_counts(libraries: dict[str, dict[str, Any]], cases: list[str]) -> list[Result]:
    import _callgrind

    results = []
    for case in cases:
        for library, available in libraries.items():
            if case in available:
                per_op = _callgrind.instructions_per_op(
                    lambda n, library=library, case=case: [
                        sys.executable,
                        __file__,
                        "--count",
                        library,
                        case,
                        str(n),
                    ]
                )
                results.append(Result(case, library, per_op))
                print(f"({case}, {library}: {per_op:,.0f})", file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--only", help="only the cases whose names contain this text")
    parser.add_argument("--library", choices=list(MAKERS), action="append", help="only these")
    parser.add_argument("--count", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        library, case, iterations = args.count
        count(library, case, int(iterations))
        return
    libraries = load_cases(args.library or list(MAKERS))
    cases = [case for case in CASES if args.only is None or args.only in case]
    if args.instructions:
        results = instruction_counts(libraries, cases)
        unit = "instructions"
    else:
        # Case by case, the libraries back to back: the machine's load changes less between them.
        results = []
        for case in cases:
            for library, available in libraries.items():
                if case in available:
                    results.append(Result(case, library, time_per_op(available[case])))
        unit = "µs"
    print_table(
        f"Propagation, inject + extract ({unit} per operation; ratios: peer / tomograph)",
        results,
        unit=unit,
    )


if __name__ == "__main__":
    main()
