"""Spans: life cycle, nesting, recording, errors, decorators."""

from __future__ import annotations

import asyncio
import copy
import time

import pytest

import tomograph
from tomograph import Endpoint, SpanKind, TraceContext, Tracer
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import never, rate_limited
from tomograph.span import Span


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def local_tracer(backend: MemoryBackend) -> Tracer:
    return Tracer("svc", backends=[backend])


def test_with_block_reports_one_finished_span(local_tracer: Tracer, backend: MemoryBackend) -> None:
    with local_tracer.span("work") as span:
        assert not span.finished
    assert backend.spans == [span]
    assert span.finished
    assert span.duration is not None and span.duration >= 1


def test_span_is_current_inside_its_block_only(local_tracer: Tracer) -> None:
    assert tomograph.current_span() is None
    with local_tracer.span("outer") as outer:
        assert tomograph.current_span() is outer
        with local_tracer.span("inner") as inner:
            assert tomograph.current_span() is inner
        assert tomograph.current_span() is outer
    assert tomograph.current_span() is None


def test_child_shares_trace_id_and_points_at_parent(local_tracer: Tracer) -> None:
    with local_tracer.span("parent") as parent, local_tracer.span("child") as child:
        pass
    assert child.trace_id == parent.trace_id
    assert child.parent_id == parent.span_id
    assert parent.parent_id is None
    assert child.span_id != parent.span_id


def test_root_ids_are_nonzero_and_sized(local_tracer: Tracer) -> None:
    for _ in range(200):
        with local_tracer.span("x") as span:
            pass
        assert 0 < span.trace_id < 2**128
        assert 0 < span.span_id < 2**64


def test_64_bit_trace_ids_when_asked() -> None:
    tracer = Tracer("svc", trace_id_bits=64)
    ids = [tracer.start_span("x").trace_id for _ in range(200)]
    assert all(0 < trace_id < 2**64 for trace_id in ids)
    assert len(set(ids)) == 200


def test_parent_none_starts_a_new_trace(local_tracer: Tracer) -> None:
    with local_tracer.span("a") as a, local_tracer.span("b", parent=None) as b:
        pass
    assert b.trace_id != a.trace_id
    assert b.parent_id is None


def test_timestamps_are_epoch_microseconds(local_tracer: Tracer) -> None:
    before = time.time_ns() // 1000
    with local_tracer.span("sleep") as span:
        time.sleep(0.02)
    after = time.time_ns() // 1000
    assert before - 1000 <= span.timestamp <= after
    assert span.duration is not None
    assert 19_000 <= span.duration <= (after - before) + 1000


def test_tags_keep_their_types_and_notes_their_order(local_tracer: Tracer) -> None:
    with local_tracer.span("w", tags={"given": "yes"}) as span:
        span.tag("count", 3)
        span.tag("ratio", 0.5)
        span.tag("ok", True)
        span.annotate("first")
        span.annotate("second", duration_us=250)
    assert span.tags == {"given": "yes", "count": 3, "ratio": 0.5, "ok": True}
    notes = span.annotations
    assert [n.value for n in notes] == ["first", "second"]
    assert notes[1].duration == 250
    assert span.timestamp <= notes[0].timestamp <= notes[1].timestamp


def test_given_tags_dict_is_not_mutated(local_tracer: Tracer) -> None:
    given = {"a": 1}
    with local_tracer.span("w", tags=given) as span:
        span.tag("b", 2)
    assert given == {"a": 1}


def test_exception_marks_error_and_is_reraised_untouched(
    local_tracer: Tracer, backend: MemoryBackend
) -> None:
    error = ValueError("boom")
    with pytest.raises(ValueError) as raised, local_tracer.span("fails"):
        raise error
    assert raised.value is error
    span = backend.find("fails")
    assert span.error
    assert span.tags["error"] == "boom"
    assert span.tags["exception.type"] == "ValueError"
    assert span.annotations[-1].value == "ValueError: boom"
    assert tomograph.current_span() is None


def test_exception_without_message_uses_type_name(local_tracer: Tracer) -> None:
    with pytest.raises(KeyError), local_tracer.span("fails") as span:
        raise KeyError
    assert span.tags["error"] == "KeyError"


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def test_an_exception_that_cannot_be_printed_is_reraised_untouched_and_recorded(
    local_tracer: Tracer, backend: MemoryBackend
) -> None:
    # Its message was read with str(): the RuntimeError replaced the application's exception
    # and the span was never finished (lost without a word).
    error = Unprintable()
    with pytest.raises(Unprintable) as raised, local_tracer.span("fails"):
        raise error
    assert raised.value is error
    span = backend.find("fails")
    assert span.tags["error"] == "<unprintable Unprintable>"
    assert span.tags["exception.type"] == "Unprintable"
    assert span.annotations[-1].value == "Unprintable: <unprintable Unprintable>"


def test_kind_accepts_strings_and_enum(local_tracer: Tracer) -> None:
    assert local_tracer.span("a", kind="client").kind is SpanKind.CLIENT
    assert local_tracer.span("a", kind=SpanKind.SERVER).kind is SpanKind.SERVER
    assert local_tracer.span("a", kind="local").kind is None
    with pytest.raises(ValueError, match="unknown span kind"):
        local_tracer.span("a", kind="sideways")


def test_endpoints_default_to_the_tracer_service(local_tracer: Tracer) -> None:
    span = local_tracer.start_span("x", remote_endpoint=Endpoint("db", port=5432))
    assert span.service_name == "svc"
    assert span.remote_endpoint == Endpoint("db", None, None, 5432)


def test_start_span_is_not_current_and_finish_reports_once(
    local_tracer: Tracer, backend: MemoryBackend
) -> None:
    span = local_tracer.start_span("manual")
    assert tomograph.current_span() is None
    span.finish()
    span.finish()
    assert backend.names() == ["manual"]


def test_explicit_timestamps(local_tracer: Tracer) -> None:
    span = local_tracer.start_span("past", timestamp_us=1_700_000_000_000_000)
    span.finish(timestamp_us=1_700_000_000_250_000)
    assert span.timestamp == 1_700_000_000_000_000
    assert span.duration == 250_000


def test_unsampled_span_records_nothing_but_has_ids(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend], sampler=never())
    with tracer.span("quiet", tags={"t": 1}) as span:
        span.tag("a", 1)
        span.annotate("n")
        with tracer.span("child") as child:
            pass
    assert backend.spans == []
    assert span.trace_id and span.span_id
    assert child.trace_id == span.trace_id and child.parent_id == span.span_id
    assert not child.sampled
    assert span.annotations == []
    assert "a" not in span.tags
    assert span.finished
    assert span.duration is None  # unsampled spans keep no end time


def test_remote_parent_continues_trace(local_tracer: Tracer) -> None:
    remote = TraceContext(trace_id=0xABC, span_id=0x123, sampled=True)
    with local_tracer.span("server", kind="server", parent=remote) as span:
        pass
    assert span.trace_id == 0xABC
    assert span.parent_id == 0x123
    assert span.span_id != 0x123
    assert not span.shared


def test_remote_unsampled_decision_is_obeyed(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("s", parent=TraceContext(1, 2, sampled=False)) as span:
        pass
    assert not span.sampled
    assert backend.spans == []


def test_remote_debug_forces_sampling(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend], sampler=never())
    with tracer.span("s", parent=TraceContext(1, 2, sampled=False, debug=True)) as span:
        with tracer.span("child") as child:
            pass
    assert span.sampled and span.debug and child.debug
    assert backend.names() == ["child", "s"]


def test_join_shared_spans_reuses_client_span_id(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend], join_shared_spans=True)
    remote = TraceContext(trace_id=7, span_id=8, parent_id=9, sampled=True)
    with tracer.span("rpc", kind="server", parent=remote) as server:
        pass
    assert (server.trace_id, server.span_id, server.parent_id, server.shared) == (7, 8, 9, True)
    with tracer.span("local", parent=remote) as local:
        pass
    assert local.parent_id == 8 and not local.shared


def test_extra_state_is_inherited_by_children(local_tracer: Tracer) -> None:
    remote = TraceContext(1, 2, sampled=True, extra={"tracestate": "a=b"})
    with local_tracer.span("s", parent=remote) as span, local_tracer.span("c") as child:
        pass
    assert span.extra == {"tracestate": "a=b"}
    assert child.context.extra == {"tracestate": "a=b"}


def test_context_snapshot(local_tracer: Tracer) -> None:
    with local_tracer.span("s") as span:
        context = span.context
    assert (context.trace_id, context.span_id, context.sampled) == (
        span.trace_id,
        span.span_id,
        True,
    )


def test_decorator_makes_a_span_per_call(local_tracer: Tracer, backend: MemoryBackend) -> None:
    @local_tracer.span("add", tags={"op": "+"})
    def add(a: int, b: int) -> int:
        return a + b

    assert add(1, 2) == 3
    assert add(3, 4) == 7
    spans = backend.spans
    assert [s.name for s in spans] == ["add", "add"]
    assert spans[0].span_id != spans[1].span_id
    assert spans[0].tags == {"op": "+"}
    assert add.__name__ == "add"


def test_decorator_records_exceptions(local_tracer: Tracer, backend: MemoryBackend) -> None:
    @local_tracer.span("bad")
    def bad() -> None:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        bad()
    assert backend.find("bad").error


def test_decorator_on_coroutine_function(local_tracer: Tracer, backend: MemoryBackend) -> None:
    @local_tracer.span("fetch")
    async def fetch() -> int:
        await asyncio.sleep(0.01)
        inner = tomograph.current_span()
        assert inner is not None and inner.name == "fetch"
        return 5

    assert asyncio.run(fetch()) == 5
    span = backend.find("fetch")
    assert span.duration is not None and span.duration >= 9000


def test_decorator_on_generator_spans_whole_iteration(
    local_tracer: Tracer, backend: MemoryBackend
) -> None:
    @local_tracer.span("rows")
    def rows() -> object:
        for i in range(3):
            current = tomograph.current_span()
            assert current is not None and current.name == "rows"
            yield i

    seen = []
    for item in rows():
        # Between items the consumer is not inside the generator's span.
        assert tomograph.current_span() is None
        seen.append(item)
    assert seen == [0, 1, 2]
    assert backend.names() == ["rows"]


def test_generator_return_value_and_send(local_tracer: Tracer) -> None:
    @local_tracer.span("echo")
    def echo() -> object:
        received = yield "ready"
        yield f"got {received}"
        return "done"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("x") == "got x"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"


def test_generator_closed_early_is_not_an_error(
    local_tracer: Tracer, backend: MemoryBackend
) -> None:
    @local_tracer.span("endless")
    def endless() -> object:
        while True:
            yield 1

    gen = endless()
    next(gen)
    gen.close()
    span = backend.find("endless")
    assert not span.error


def test_generator_exception_is_recorded(local_tracer: Tracer, backend: MemoryBackend) -> None:
    @local_tracer.span("broken")
    def broken() -> object:
        yield 1
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        list(broken())
    assert backend.find("broken").tags["error"] == "bad row"


def test_async_generator_decorator(local_tracer: Tracer, backend: MemoryBackend) -> None:
    @local_tracer.span("stream")
    async def stream() -> object:
        for i in range(2):
            current = tomograph.current_span()
            assert current is not None and current.name == "stream"
            yield i

    async def consume() -> list[int]:
        out = []
        async for item in stream():  # type: ignore[attr-defined]
            assert tomograph.current_span() is None
            out.append(item)
        return out

    assert asyncio.run(consume()) == [0, 1]
    assert backend.names() == ["stream"]


def test_set_name_and_remote_endpoint(local_tracer: Tracer) -> None:
    with local_tracer.span("GET") as span:
        span.set_name("GET /users/{id}")
        span.set_remote_endpoint("users", ipv4="127.0.0.1", port=80)
    assert span.name == "GET /users/{id}"
    assert span.remote_endpoint == Endpoint("users", "127.0.0.1", None, 80)


def test_span_exited_in_another_context_does_not_break(local_tracer: Tracer) -> None:
    import contextvars

    span = local_tracer.span("cross")
    contextvars.copy_context().run(span.__enter__)
    span.__exit__(None, None, None)
    assert span.finished
    assert tomograph.current_span() is None


def test_failing_custom_backend_never_reaches_the_application(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def report(self, span: object) -> None:
            raise OSError("disk full")

        def flush(self, timeout: float | None = None) -> bool:
            return True

        def close(self, timeout: float | None = None) -> None:
            pass

    good = MemoryBackend()
    tracer = Tracer("svc", backends=[Broken(), good])
    for _ in range(3):
        with tracer.span("x"):
            pass
    assert len(good) == 3
    assert sum("failed to accept a span" in r.message for r in caplog.records) == 1


def test_sampling_override_records_from_then_on(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend], sampler=never())
    with tracer.span("forced") as span:
        span.tag("lost", 1)
        time.sleep(0.002)
        span.set_sampling(True, debug=True)
        span.tag("kept", 2)
        with tracer.span("child") as child:
            pass
    assert backend.names() == ["child", "forced"]
    assert span.tags == {"kept": 2}
    assert span.debug and child.debug and child.sampled
    assert span.duration is not None and span.duration >= 2000  # the real start time


def test_sampling_override_can_drop_a_sampled_span(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("dropped") as span:
        span.set_sampling(False)
    assert backend.spans == []


def test_sampling_override_after_finish_does_nothing(backend: MemoryBackend) -> None:
    tracer = Tracer("svc", backends=[backend], sampler=never())
    span = tracer.start_span("done")
    span.finish()
    span.set_sampling(True)
    assert not span.sampled and backend.spans == []


def test_a_copied_span_has_the_same_fields_and_starts_nothing() -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory], sampler=rate_limited(1, clock=lambda: 0.0))
    span = tracer.start_span("op", tags={"k": "v"})
    copied = copy.copy(span)
    assert copied is not span and copied.__class__ is Span
    assert (copied.trace_id, copied.span_id, copied.name, copied.tags) == (
        span.trace_id,
        span.span_id,
        "op",
        {"k": "v"},
    )
    assert copied.tracer is tracer
    assert not tracer.span("next trace").sampled  # the copy spent no trace of the sampler
