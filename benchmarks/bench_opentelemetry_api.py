"""OpenTelemetry API cost: tomograph as the API's SDK beside OpenTelemetry's own SDK.

1. Spans made through the OpenTelemetry API (``opentelemetry.trace``), as an instrumented
   library makes them: ``start_as_current_span`` with 3 attributes and 1 event (and the same
   with a 2-attribute event), ``start_span`` + ``end``, and ``trace.get_current_span()`` +
   ``set_attribute`` inside an active span (for tomograph, a ``tomograph.span``);
2. OpenTelemetry's Flask instrumentation (``FlaskInstrumentor``) on a minimal view, with
   tomograph or the SDK as the provider: µs per request added to the same app untraced, for a
   new trace and for a request carrying ``traceparent``. tomograph's own Flask extension is a
   reference row.

tomograph records into its ``MemoryBackend``; the SDK into its ``InMemorySpanExporter`` through
a ``SimpleSpanProcessor`` (and, as a second row for the API cases, a ``BatchSpanProcessor``);
both keep at most 100 spans, so the numbers are the cost of tracing, not of exporting.

The API sets its tracer provider and its runtime context once per process, and
``tomograph.opentelemetry.install()`` replaces the runtime context with tomograph's bridge; so
each library runs in a worker process of its own: the SDK's with OpenTelemetry's default
runtime context, exactly as an application using the SDK has it. The parent asks the workers
for one case after another, taking turns, and keeps each one's best round. After each case a
worker checks that its library recorded the span the case makes (name, attributes, events,
parent): one that recorded less would look faster than it is.

``--instructions`` counts instructions with valgrind's callgrind instead (see ``_callgrind``):
numbers that machine load does not move.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import Result, print_table, time_per_op

HERE = Path(__file__).resolve().parent
KEEP = 100  # spans each library keeps in memory

ATTRIBUTES: dict[str, Any] = {"db.system": "postgresql", "db.rows": 7, "cache.hit": False}
EVENT_ATTRIBUTES: dict[str, Any] = {"message.id": "a1b2", "message.size": 512}

API_CASES = (
    "span, 3 attributes, 1 event",
    "span, 3 attributes, 1 event with 2 attributes",
    "start_span + end, 3 attributes, 1 event",
    "get_current_span + set_attribute",
)
FLASK_CASES = {"new trace": {}, "incoming traceparent": "traceparent"}

API_SIDES = ("tomograph", "otel-sdk", "otel-sdk-batch")
FLASK_SIDES = ("tomograph", "otel-sdk")
LABELS = {
    "tomograph": "tomograph",
    "otel-sdk": "otel-sdk (simple)",
    "otel-sdk-batch": "otel-sdk (batch)",
}


@dataclass
class Recorded:
    """What a library recorded for the last span it finished."""

    name: str
    attributes: dict[str, Any]
    events: list[str]
    parent_id: int | None


@dataclass
class Case:
    operation: Callable[[], object]
    #: Entered around the whole measurement (the active span the operation runs in).
    around: Callable[[], AbstractContextManager[Any]] = nullcontext
    #: Name and attributes (a subset) the last finished span must have once the case ran:
    #: a library that recorded less would look faster than it is.
    name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    parent_id: int | None = None


@dataclass
class Library:
    """One library's set-up in a worker process."""

    active_span: Callable[[], AbstractContextManager[Any]]
    flush: Callable[[], object]
    last_span: Callable[[], Recorded | None]


@dataclass
class Side:
    library: Library
    cases: dict[str, Case] = field(default_factory=dict)

    def check(self, case_name: str) -> None:
        """Fail if the last span does not show what ``case_name`` records (flushed first)."""
        case = self.cases[case_name]
        if case.name is None and not case.attributes:
            return  # untraced
        self.library.flush()
        last = self.library.last_span()
        wrong = (
            last is None
            or (case.name is not None and last.name != case.name)
            or any(last.attributes.get(k) != v for k, v in case.attributes.items())
            or last.events != case.events
            or (case.parent_id is not None and last.parent_id != case.parent_id)
        )
        if wrong:
            raise SystemExit(f"{case_name}: the last span recorded is {last}, not {case}")


# -- worker side ---------------------------------------------------------------------------


def set_up_tomograph() -> Library:
    import tomograph
    from tomograph.opentelemetry import install
    from tomograph.reporting.memory import MemoryBackend

    memory = MemoryBackend(max_spans=KEEP)
    tomograph.configure(service="bench", backends=[memory], environ={})
    provider = install()

    def last_span() -> Recorded | None:
        spans = memory.spans
        if not spans:
            return None
        span = spans[-1]
        events = [getattr(note, "name", note) for _, note, _ in span.notes_raw]
        return Recorded(span.name, dict(span.tags), events, span.parent_id)

    return Library(lambda: tomograph.span("request"), provider.force_flush, last_span)


def set_up_sdk(batch: bool) -> Library:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter(max_spans=KEEP)  # bounded as tomograph's MemoryBackend
    provider = TracerProvider()
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    tracer = trace.get_tracer("bench")

    def last_span() -> Recorded | None:
        spans = exporter.get_finished_spans()
        if not spans:
            return None
        span = spans[-1]
        parent_id = span.parent.span_id if span.parent else None
        events = [event.name for event in span.events]
        return Recorded(span.name, dict(span.attributes or {}), events, parent_id)

    return Library(lambda: tracer.start_as_current_span("request"), provider.force_flush, last_span)


def api_cases(active_span: Callable[[], AbstractContextManager[Any]]) -> dict[str, Case]:
    from opentelemetry import trace

    # As an instrumented library does: its tracer, taken once the provider is set.
    tracer = trace.get_tracer("bench.library", "1.0")
    get_current_span = trace.get_current_span

    def span_with_event() -> None:
        with tracer.start_as_current_span("op", attributes=ATTRIBUTES) as span:
            span.add_event("e")

    def span_with_event_attributes() -> None:
        with tracer.start_as_current_span("op", attributes=ATTRIBUTES) as span:
            span.add_event("e", EVENT_ATTRIBUTES)

    def start_and_end() -> None:
        span = tracer.start_span("op", attributes=ATTRIBUTES)
        span.add_event("e")
        span.end()

    def tag_current() -> None:
        get_current_span().set_attribute("user.id", 7)

    operations = (span_with_event, span_with_event_attributes, start_and_end)
    cases = {
        name: Case(op, name="op", attributes=ATTRIBUTES, events=["e"])
        for name, op in zip(API_CASES, operations)
    }
    cases[API_CASES[3]] = Case(tag_current, active_span, "request", {"user.id": 7})
    return cases


def flask_cases(side: str) -> dict[str, Case]:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    from bench_flask import TRACEPARENT, make_app, one_request

    instrumented = make_app()
    FlaskInstrumentor.instrument_app(instrumented)  # with the global provider
    apps: dict[str, Any] = {"bare": make_app(), "instrumented": instrumented}
    if side == "tomograph":
        from tomograph.integrations.flask import Tracing

        native = make_app()
        Tracing(native, service_name="bench")
        apps["native"] = native
    cases = {}
    route = {"http.route": "/users/<int:user_id>", "http.status_code": 200}
    for case, header in FLASK_CASES.items():
        extra = {"HTTP_TRACEPARENT": TRACEPARENT} if header else {}
        parent_id = int(TRACEPARENT.split("-")[2], 16) if header else None
        for kind, app in apps.items():
            expected: dict[str, Any] = (
                {} if kind == "bare" else {"attributes": route, "parent_id": parent_id}
            )
            cases[f"{kind}: {case}"] = Case(one_request(app, extra), **expected)
    return cases


def make_side(side: str, part: str) -> Side:
    if side == "tomograph":
        library = set_up_tomograph()
    else:
        library = set_up_sdk(batch=side == "otel-sdk-batch")
    cases = api_cases(library.active_span) if part == "api" else flask_cases(side)
    return Side(library, cases)


def serve(side: str, part: str) -> None:
    """Worker: print the case names as JSON, then answer each case name read from stdin with
    its µs per operation."""
    worker = make_side(side, part)
    print(json.dumps(list(worker.cases)), flush=True)
    for line in sys.stdin:
        case = worker.cases[line.strip()]
        with case.around():
            took = time_per_op(case.operation, min_time=0.1, repeats=3)
        worker.check(line.strip())
        print(took, flush=True)


def count(side: str, part: str, case_name: str, iterations: int) -> None:
    """Worker under callgrind: run one case ``iterations`` times after a warm-up, GC off."""
    worker = make_side(side, part)
    case = worker.cases[case_name]
    operation = case.operation
    with case.around():
        for _ in range(300):
            operation()
        gc.collect()
        gc.disable()
        for _ in range(iterations):
            operation()
    worker.check(case_name)


# -- parent side ---------------------------------------------------------------------------


class Worker:
    def __init__(self, side: str, part: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", side, part],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self._in, self._out = self.process.stdin, self.process.stdout
        first = self._out.readline()
        self.cases: list[str] = json.loads(first) if first else []

    def measure(self, case: str) -> float:
        self._in.write(case + "\n")
        self._in.flush()
        reply = self._out.readline()
        if not reply:
            raise RuntimeError(f"the worker failed on {case!r} (its error is above)")
        return float(reply)

    def close(self) -> None:
        self._in.close()
        self.process.wait()


def workers(sides: tuple[str, ...], part: str) -> Iterator[tuple[str, Worker]]:
    for side in sides:
        worker = Worker(side, part)
        if worker.cases:
            yield side, worker
        else:
            print(f"({side}: could not set up, skipped)", file=sys.stderr)
            worker.close()


def best_times(
    sides: tuple[str, ...], part: str, rounds: int, only: str | None = None
) -> dict[tuple[str, str], float]:
    """µs per operation for every (case, side): the best of rounds in which the workers take
    turns, so that a burst of other work on the machine hits every library alike."""
    running = dict(workers(sides, part))
    best: dict[tuple[str, str], float] = {}
    try:
        for _ in range(rounds):
            for side, worker in running.items():
                for case in worker.cases:
                    if only is not None and only not in case:
                        continue
                    took = worker.measure(case)
                    best[case, side] = min(best.get((case, side), took), took)
    finally:
        for worker in running.values():
            worker.close()
    return best


def instruction_counts(
    sides: tuple[str, ...], part: str, only: str | None = None
) -> dict[tuple[str, str], float]:
    import _callgrind

    cases: dict[str, list[str]] = {}
    for side in sides:
        listing = subprocess.run(
            [sys.executable, __file__, "--list", side, part],
            check=False,
            capture_output=True,
            text=True,
        )
        if listing.returncode == 0:
            cases[side] = json.loads(listing.stdout)
        else:
            print(f"({side}: could not set up, skipped)", file=sys.stderr)
    counts = {}
    for side, names in cases.items():
        for case in names:
            if only is not None and only not in case:
                continue
            counts[case, side] = _callgrind.instructions_per_op(
                lambda n, side=side, case=case: [
                    sys.executable,
                    __file__,
                    "--count",
                    side,
                    part,
                    case,
                    str(n),
                ]
            )
    return counts


def report_api(numbers: dict[tuple[str, str], float], unit: str) -> None:
    results = [Result(case, LABELS[side], value) for (case, side), value in numbers.items()]
    print_table(
        f"OpenTelemetry API spans ({unit} per operation; ratio: peer / tomograph)",
        results,
        unit=unit,
    )


def report_flask(numbers: dict[tuple[str, str], float], unit: str) -> None:
    results = []
    for case in FLASK_CASES:
        for side in FLASK_SIDES:
            bare = numbers.get((f"bare: {case}", side))
            for kind, label in (
                ("instrumented", LABELS[side]),
                ("native", "tomograph's own Flask extension"),
            ):
                value = numbers.get((f"{kind}: {case}", side))
                if bare is not None and value is not None:
                    results.append(Result(case, label, value - bare))
    print_table(
        f"OpenTelemetry's Flask instrumentation ({unit} per request added to the untraced app; "
        "ratio: peer / tomograph as provider)",
        results,
        unit=unit,
    )
    print(f"\nwhole request ({unit}):")
    for (case, side), value in numbers.items():
        print(f"  {LABELS[side]}, {case}: {value:,.1f}")
    for side in FLASK_SIDES:
        bare = [
            f"{case} {numbers[f'bare: {case}', side]:,.1f}"
            for case in FLASK_CASES
            if (f"bare: {case}", side) in numbers
        ]
        if bare:
            print(f"untraced Flask request ({side}'s process, {unit}): " + ", ".join(bare))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--part", choices=("api", "flask"), action="append")
    parser.add_argument("--side", choices=API_SIDES, action="append", help="only these")
    parser.add_argument("--only", help="only the cases whose names contain this text")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--list", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.list:
        print(json.dumps(list(make_side(*args.list).cases)))
        return
    if args.count:
        side, part, case, iterations = args.count
        count(side, part, case, int(iterations))
        return
    parts = args.part or ["api", "flask"]
    unit = "instructions" if args.instructions else "µs"

    def measure(sides: tuple[str, ...], part: str) -> dict[tuple[str, str], float]:
        if args.instructions:
            return instruction_counts(sides, part, args.only)
        return best_times(sides, part, args.rounds, args.only)

    chosen = args.side or API_SIDES
    if "api" in parts:
        report_api(measure(tuple(s for s in API_SIDES if s in chosen), "api"), unit)
    if "flask" in parts:
        report_flask(measure(tuple(s for s in FLASK_SIDES if s in chosen), "flask"), unit)


if __name__ == "__main__":
    main()
