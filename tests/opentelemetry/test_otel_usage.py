"""The current span and the parent in the ways OpenTelemetry's API is really used: decorators on
sync and async functions, ``use_span`` inside a tomograph span, tasks that outlive the span that
started them, thread pools given a copied context, generators that yield inside a span,
non-recording and invalid parents, and the OpenTelemetry SDK coexisting with the bridge."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import tomograph
from support.traced_programs import environment, run_python
from tomograph.reporting.memory import MemoryBackend


def test_each_call_of_a_decorated_function_is_a_new_span_and_records_its_exception(
    otel: trace.Tracer, memory: MemoryBackend
) -> None:
    @otel.start_as_current_span("charge")
    def charge(fail: bool) -> trace.Span:
        if fail:
            raise ValueError("declined")
        return trace.get_current_span()

    @otel.start_as_current_span("refund")
    async def refund(fail: bool) -> trace.Span:
        await asyncio.sleep(0)
        if fail:
            raise KeyError("unknown")
        return trace.get_current_span()

    seen = [charge(False), charge(False), asyncio.run(refund(False))]
    with pytest.raises(ValueError):
        charge(True)
    with pytest.raises(KeyError):
        asyncio.run(refund(True))
    assert len({span.tomograph_span.span_id for span in seen}) == 3  # type: ignore[attr-defined]
    names = sorted(span.name for span in memory.spans)
    assert names == ["charge", "charge", "charge", "refund", "refund"]
    failed = {span.name: span for span in memory.spans if span.error}
    assert set(failed) == {"charge", "refund"}
    assert failed["charge"].tags["otel.status_code"] == "ERROR"
    assert any("declined" in note for _, note, _ in failed["charge"].notes_raw)
    assert all(span.parent_id is None for span in memory.spans)
    assert tomograph.current_span() is None


def test_use_span_ending_on_exit_inside_a_tomograph_span_gives_it_back(
    otel: trace.Tracer, native: tomograph.Tracer, memory: MemoryBackend
) -> None:
    with native.span("request") as request:
        span = otel.start_span("work")
        with trace.use_span(span, end_on_exit=True):
            assert tomograph.current_span() is span.tomograph_span  # type: ignore[attr-defined]
        assert tomograph.current_span() is request
        assert trace.get_current_span().get_span_context().span_id == request.span_id
        span.end()  # ended twice: once reported
    work = [recorded for recorded in memory.spans if recorded.name == "work"]
    assert len(work) == 1
    assert work[0].parent_id == request.span_id


def test_a_task_that_outlives_the_span_that_started_it_is_still_its_child(
    otel: trace.Tracer, memory: MemoryBackend
) -> None:
    async def late(started: asyncio.Event) -> None:
        await started.wait()
        with otel.start_as_current_span("late"):
            pass

    async def main() -> None:
        started = asyncio.Event()
        with otel.start_as_current_span("request"):
            task = asyncio.create_task(late(started))
        assert trace.get_current_span() is trace.INVALID_SPAN
        started.set()
        await task

    asyncio.run(main())
    spans = {span.name: span for span in memory.spans}
    assert spans["late"].parent_id == spans["request"].span_id


def test_a_thread_pool_given_a_copied_context_continues_the_trace(
    otel: trace.Tracer, memory: MemoryBackend
) -> None:
    def work(index: int) -> int:
        with otel.start_as_current_span(f"work {index}") as span:
            return span.tomograph_span.parent_id  # type: ignore[attr-defined, no-any-return]

    with otel.start_as_current_span("batch") as batch:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, work, index) for index in range(8)
            ]
            parents = {future.result() for future in futures}
            # Without a copied context a pool thread starts a new trace, as with the SDK.
            orphan = pool.submit(work, 99).result()
    assert parents == {batch.tomograph_span.span_id}  # type: ignore[attr-defined]
    assert orphan is None


def test_a_generator_yielding_inside_a_span_restores_the_current_span_when_closed(
    otel: trace.Tracer, memory: MemoryBackend
) -> None:
    def rows() -> Iterator[int]:
        with otel.start_as_current_span("query"):
            yield 1
            yield 2

    with otel.start_as_current_span("request") as request:
        assert list(rows()) == [1, 2]
        assert trace.get_current_span() is request
        partly = rows()
        next(partly)
        partly.close()
        assert trace.get_current_span() is request
        assert tomograph.current_span() is request.tomograph_span  # type: ignore[attr-defined]
    assert [span.name for span in memory.spans].count("query") == 2


def test_non_recording_and_invalid_parents(otel: trace.Tracer, native: tomograph.Tracer) -> None:
    sampled = NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(TraceFlags.SAMPLED)))
    unsampled = NonRecordingSpan(SpanContext(0xABC, 0xDEF, True, TraceFlags(0)))
    with trace.use_span(sampled):
        with otel.start_as_current_span("otel child") as child, native.span("native child") as n:
            assert child.is_recording() and n.sampled
            assert child.tomograph_span.trace_id == n.trace_id == 0xABC  # type: ignore[attr-defined]
            assert child.tomograph_span.parent_id == 0xDEF  # type: ignore[attr-defined]
    with trace.use_span(unsampled), otel.start_as_current_span("unsampled child") as child:
        assert not child.is_recording()
        assert child.get_span_context().trace_flags == TraceFlags(0)
        with native.span("native grandchild") as grandchild:
            assert not grandchild.sampled
    with native.span("native"), trace.use_span(trace.INVALID_SPAN):
        assert tomograph.current_span() is None
        with otel.start_as_current_span("new root") as root:
            assert root.tomograph_span.parent_id is None  # type: ignore[attr-defined]
    assert context.get_current() is not None


def test_sdk_spans_and_tomograph_spans_nest_under_the_tomograph_context(tmp_path: Path) -> None:
    # OTEL_PYTHON_CONTEXT=tomograph with the SDK as provider: one current span for both.
    program = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import tomograph
    from tomograph.opentelemetry import RuntimeContext
    from tomograph.reporting.memory import MemoryBackend
    from opentelemetry import context
    assert isinstance(context._RUNTIME_CONTEXT, RuntimeContext)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    memory = MemoryBackend()
    tomograph.configure(service="mixed", backends=[memory], environ={})
    tracer = trace.get_tracer("sdk")
    with tracer.start_as_current_span("sdk outer") as outer:
        with tomograph.span("native") as native:
            with tracer.start_as_current_span("sdk inner") as inner:
                assert trace.get_current_span() is inner
            assert tomograph.current_span() is native
        assert trace.get_current_span() is outer
    assert tomograph.current_span() is None
    outer_context = outer.get_span_context()
    assert native.trace_id == outer_context.trace_id
    assert native.parent_id == outer_context.span_id
    assert inner.parent.span_id == native.span_id
    assert [span.name for span in memory.spans] == ["native"]
    assert sorted(span.name for span in exporter.get_finished_spans()) == ["sdk inner", "sdk outer"]
    print("ok")
    """
    result = run_python(program, tmp_path, environment(OTEL_PYTHON_CONTEXT="tomograph"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
