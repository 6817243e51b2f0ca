"""One current span for OpenTelemetry's API and tomograph's: nesting both ways, in threads,
asyncio tasks and greenlets, and suppression in both directions.

The provider is used directly (never set globally: OpenTelemetry's API sets it once per
process); the runtime context bridge is installed for each test and removed after it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from opentelemetry import baggage, context, trace

import tomograph
from tomograph.context import SUPPRESS_TRACING, suppress_tracing
from tomograph.opentelemetry import RuntimeContext, TracerProvider
from tomograph.opentelemetry._context import installed_context, uninstall_context
from tomograph.reporting.memory import MemoryBackend


def by_name(memory: MemoryBackend) -> dict[str, tomograph.Span]:
    spans = {span.name: span for span in memory.spans}
    assert len(spans) == len(memory.spans), "span names are unique in these tests"
    return spans


def test_making_a_provider_installs_the_bridge_and_uninstall_removes_it(
    native: tomograph.Tracer,
) -> None:
    before = context._RUNTIME_CONTEXT
    TracerProvider(tracer=native)
    try:
        assert isinstance(context._RUNTIME_CONTEXT, RuntimeContext)
        assert installed_context() is context._RUNTIME_CONTEXT
    finally:
        uninstall_context()
    assert context._RUNTIME_CONTEXT is before


def test_a_tomograph_span_inside_an_otel_span_is_its_child_and_the_reverse(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    with otel.start_as_current_span("otel outer") as outer:
        assert tomograph.current_span() is outer.tomograph_span
        with native.span("native middle") as middle:
            seen = trace.get_current_span()
            assert seen.tomograph_span is middle  # type: ignore[attr-defined]
            assert seen.get_span_context().span_id == middle.span_id
            with otel.start_as_current_span("otel inner"):
                pass
        assert trace.get_current_span() is outer
    assert tomograph.current_span() is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    spans = by_name(memory)
    assert spans["native middle"].parent_id == spans["otel outer"].span_id
    assert spans["otel inner"].parent_id == spans["native middle"].span_id
    assert {span.trace_id for span in memory.spans} == {spans["otel outer"].trace_id}


def test_attributes_set_on_the_current_span_through_otel_land_on_the_tomograph_span(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    with native.span("request"):
        trace.get_current_span().set_attribute("user.tier", "gold")
        trace.get_current_span().add_event("validated", {"fields": 3})
    (span,) = memory.spans
    assert span.tags["user.tier"] == "gold"
    assert [str(note.value) for note in span.annotations] == ['{"validated": {"fields": 3}}']


def test_use_span_and_explicit_contexts_pick_the_parent(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    root = otel.start_span("root")
    with trace.use_span(root, end_on_exit=True):
        with native.span("under root"):
            pass
        saved = context.get_current()
    other = otel.start_span("elsewhere", context=saved)
    other.end()
    detached = otel.start_span("detached", context=context.Context())
    detached.end()
    spans = by_name(memory)
    assert spans["under root"].parent_id == spans["root"].span_id
    assert spans["elsewhere"].parent_id == spans["root"].span_id
    assert spans["detached"].parent_id is None
    assert spans["detached"].trace_id != spans["root"].trace_id


def test_a_context_taken_in_one_thread_continues_the_trace_in_another(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    with otel.start_as_current_span("handler"):
        handed_over = context.get_current()

    def work() -> None:
        assert tomograph.current_span() is None  # a new thread starts with none
        token = context.attach(handed_over)
        try:
            with native.span("in thread"):
                pass
        finally:
            context.detach(token)
        assert tomograph.current_span() is None

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    spans = by_name(memory)
    assert spans["in thread"].parent_id == spans["handler"].span_id


def test_thirty_two_threads_starting_at_once_keep_their_own_trees(
    native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    # A fresh provider and first calls from every thread at the same moment: lazy binding and
    # the tracer cache must hold under the race.
    provider = TracerProvider(tracer=native)
    barrier = threading.Barrier(32)
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            tracer = provider.get_tracer("racing")
            with tracer.start_as_current_span(f"outer {index}"):
                with native.span(f"inner {index}"):
                    with tracer.start_as_current_span(f"leaf {index}"):
                        pass
        except BaseException as error:  # reported below
            errors.append(error)

    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        uninstall_context()
    assert errors == []
    spans = by_name(memory)
    assert len(spans) == 96
    for index in range(32):
        outer, inner, leaf = (spans[f"{kind} {index}"] for kind in ("outer", "inner", "leaf"))
        assert outer.parent_id is None
        assert inner.parent_id == outer.span_id and inner.trace_id == outer.trace_id
        assert leaf.parent_id == inner.span_id and leaf.trace_id == outer.trace_id


def test_asyncio_tasks_inherit_the_current_span_and_stay_apart(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    async def child(name: str) -> None:
        with otel.start_as_current_span(name):
            await asyncio.sleep(0)
            with native.span(f"{name} native"):
                await asyncio.sleep(0)

    async def main() -> None:
        with native.span("request"):
            await asyncio.gather(child("task a"), child("task b"))

    asyncio.run(main())
    spans = by_name(memory)
    for name in ("task a", "task b"):
        assert spans[name].parent_id == spans["request"].span_id
        assert spans[f"{name} native"].parent_id == spans[name].span_id


def test_greenlets_keep_their_own_current_span(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    gevent = pytest.importorskip("gevent")

    def work(name: str) -> None:
        with otel.start_as_current_span(name):
            gevent.sleep(0)  # the other greenlet runs here, inside its own span
            with native.span(f"{name} native"):
                gevent.sleep(0)

    with native.span("request"):
        context_copy = contextvars.copy_context()
        greenlets = [
            gevent.spawn(context_copy.copy().run, work, name) for name in ("green a", "green b")
        ]
        gevent.joinall(greenlets, raise_error=True)
    spans = by_name(memory)
    for name in ("green a", "green b"):
        assert spans[name].parent_id == spans["request"].span_id
        assert spans[f"{name} native"].parent_id == spans[name].span_id


def test_otel_suppression_turns_off_tomograph_integrations_and_back(
    otel: trace.Tracer,
) -> None:
    token = context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        assert SUPPRESS_TRACING.get() is True
    finally:
        context.detach(token)
    assert SUPPRESS_TRACING.get() is False


def test_tomograph_suppression_is_seen_by_otel_instrumentations(otel: trace.Tracer) -> None:
    # While tomograph delivers spans it suppresses tracing: an OpenTelemetry HTTP
    # instrumentation must not trace those requests (each would make a span to deliver).
    from opentelemetry.instrumentation.utils import is_instrumentation_enabled

    assert is_instrumentation_enabled()
    with suppress_tracing():
        assert not is_instrumentation_enabled()
    assert is_instrumentation_enabled()


def test_otel_baggage_and_tomograph_baggage_are_one(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    from tomograph.propagation.baggage import get_baggage, set_baggage

    with native.span("request"):
        set_baggage("tenant", "acme")
        assert baggage.get_all() == {"tenant": "acme"}
        token = context.attach(baggage.set_baggage("user", "alice"))
        try:
            assert get_baggage() == {"tenant": "acme", "user": "alice"}
            with otel.start_as_current_span("charge") as charge:
                assert get_baggage(charge.tomograph_span) == {"tenant": "acme", "user": "alice"}
        finally:
            context.detach(token)
        # detached: the user entry was the attached context's only
        assert get_baggage() == {"tenant": "acme"}
        assert baggage.get_all() == {"tenant": "acme"}


def test_baggage_set_through_otel_outside_any_span_goes_to_the_next_root(
    otel: trace.Tracer, memory: MemoryBackend
) -> None:
    from tomograph.propagation.baggage import get_baggage

    token = context.attach(baggage.set_baggage("request.class", "batch"))
    try:
        with otel.start_as_current_span("job") as job:
            assert get_baggage(job.tomograph_span) == {"request.class": "batch"}
    finally:
        context.detach(token)


def test_an_unsampled_tomograph_span_is_a_non_recording_otel_span(memory: MemoryBackend) -> None:
    from tomograph.sampling import never

    tracer = tomograph.Tracer("shop", backends=[memory], sampler=never())
    provider = TracerProvider(tracer=tracer)
    try:
        otel = provider.get_tracer("lib")
        with otel.start_as_current_span("dropped") as span:
            assert not span.is_recording()
            assert span.get_span_context().is_valid
            assert not span.get_span_context().trace_flags.sampled
            span.set_attribute("ignored", 1)
            with otel.start_as_current_span("child") as child:
                assert not child.is_recording()
                assert child.get_span_context().trace_id == span.get_span_context().trace_id
    finally:
        uninstall_context()
    assert memory.spans == []
