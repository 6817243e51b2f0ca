"""The classic tomograph API works as the original README wrote it."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

import tomograph
from tomograph import Endpoint
from tomograph.reporting.memory import MemoryBackend


def test_readme_example(memory: MemoryBackend) -> None:
    tomograph.start("my service", "a query", "127.0.0.1", 80)
    tomograph.annotate("something happened")
    tomograph.tag("key", "value")
    tomograph.stop("a query")
    (span,) = memory.spans
    assert span.name == "a query"
    assert span.local_endpoint == Endpoint("my service", "127.0.0.1", None, 80)
    assert [n.value for n in span.annotations] == ["start", "something happened", "stop"]
    assert span.tags == {"key": "value"}


def test_start_and_stop_notes_bound_the_span(memory: MemoryBackend) -> None:
    tomograph.start("svc", "q", "::1", 8080)
    tomograph.stop("q")
    (span,) = memory.spans
    start, stop = span.annotations
    assert start.timestamp == span.timestamp
    assert span.duration is not None
    assert stop.timestamp - start.timestamp <= span.duration <= stop.timestamp - start.timestamp + 1
    assert span.local_endpoint is not None and span.local_endpoint.ipv6 == "::1"


def test_pairs_nest_arbitrarily(memory: MemoryBackend) -> None:
    tomograph.start("svc", "a", "127.0.0.1", 1)
    tomograph.start("svc", "b", "127.0.0.1", 1)
    tomograph.start("svc", "c", "127.0.0.1", 1)
    tomograph.stop("c")
    tomograph.start("svc", "d", "127.0.0.1", 1)
    tomograph.stop("d")
    tomograph.stop("b")
    tomograph.stop("a")
    spans = {s.name: s for s in memory.spans}
    assert spans["b"].parent_id == spans["a"].span_id
    assert spans["c"].parent_id == spans["b"].span_id
    assert spans["d"].parent_id == spans["b"].span_id
    assert len({s.trace_id for s in spans.values()}) == 1
    assert tomograph.current_span() is None


def test_stop_with_wrong_name_raises_and_keeps_stack(memory: MemoryBackend) -> None:
    tomograph.start("svc", "outer", "127.0.0.1", 1)
    tomograph.start("svc", "inner", "127.0.0.1", 1)
    with pytest.raises(tomograph.TracingError, match="innermost open span is 'inner'"):
        tomograph.stop("outer")
    current = tomograph.current_span()
    assert current is not None and current.name == "inner"
    tomograph.stop("inner")
    tomograph.stop("outer")
    assert memory.names() == ["inner", "outer"]


def test_stop_without_start_raises(memory: MemoryBackend) -> None:
    with pytest.raises(tomograph.TracingError, match="no span is open"):
        tomograph.stop("nothing")


def test_stop_does_not_close_a_with_block_span(memory: MemoryBackend) -> None:
    with tomograph.span("block"), pytest.raises(tomograph.TracingError):
        tomograph.stop("block")
    assert memory.names() == ["block"]


def test_annotate_and_tag_outside_a_span_do_nothing(memory: MemoryBackend) -> None:
    tomograph.annotate("lost")
    tomograph.tag("k", "v")
    assert memory.spans == []


@pytest.mark.parametrize("value", ["s", 1, 2.5, True])
def test_tag_value_types(memory: MemoryBackend, value: object) -> None:
    with tomograph.span("x") as span:
        tomograph.tag("k", value)  # type: ignore[arg-type]
    assert span.tags["k"] == value


def test_tag_takes_lists_of_values(memory: MemoryBackend) -> None:
    with tomograph.span("x") as span:
        tomograph.tag("k", [1, 2])
    assert span.tags["k"] == [1, 2]


def test_tag_rejects_other_types(memory: MemoryBackend) -> None:
    with tomograph.span("x"), pytest.raises(TypeError, match="tag values"):
        tomograph.tag("k", {"a": 1})  # type: ignore[arg-type]


def test_annotate_with_duration(memory: MemoryBackend) -> None:
    with tomograph.span("x") as span:
        tomograph.annotate("cache lookup", duration=120)
    assert span.annotations[0].duration == 120


def test_trace_info_continues_in_another_thread(memory: MemoryBackend) -> None:
    tomograph.start("my service", "request", "127.0.0.1", 80)
    token = tomograph.get_trace_info()

    def other_thread() -> None:
        tomograph.start("my service", "a query", "127.0.0.1", 80, token)
        tomograph.stop("a query")

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    tomograph.stop("request")
    query, request = memory.spans
    assert query.trace_id == request.trace_id
    assert query.parent_id == request.span_id


def test_trace_info_is_plain_data_that_survives_pickling(memory: MemoryBackend) -> None:
    with tomograph.span("x"):
        token = tomograph.get_trace_info()
    assert token is not None
    assert pickle.loads(pickle.dumps(token)) == token


def test_trace_info_outside_span_is_none(memory: MemoryBackend) -> None:
    assert tomograph.get_trace_info() is None


def test_trace_info_as_id_tuple(memory: MemoryBackend) -> None:
    tomograph.start("svc", "q", "127.0.0.1", 1, (0xAB, 0xCD))
    tomograph.stop("q")
    (span,) = memory.spans
    assert (span.trace_id, span.parent_id) == (0xAB, 0xCD)


def test_bad_trace_info_is_a_tracing_error(memory: MemoryBackend) -> None:
    with pytest.raises(tomograph.TracingError, match="trace_info"):
        tomograph.start("svc", "q", "127.0.0.1", 1, "not a token")  # type: ignore[arg-type]
    assert tomograph.current_span() is None


def test_traced_decorator(memory: MemoryBackend) -> None:
    @tomograph.traced("My Server", "myfunc")
    def myfunc(x: int) -> int:
        tomograph.annotate("inside")
        return x * 2

    assert myfunc(21) == 42
    (span,) = memory.spans
    assert span.name == "myfunc"
    assert span.service_name == "My Server"
    assert [n.value for n in span.annotations] == ["start", "inside", "stop"]


def test_traced_records_errors_and_reraises(memory: MemoryBackend) -> None:
    @tomograph.traced("svc", "fails")
    def fails() -> None:
        raise LookupError("missing")

    with pytest.raises(LookupError):
        fails()
    (span,) = memory.spans
    assert span.error
    assert span.annotations[-1].value == "stop"


def test_traced_on_coroutines(memory: MemoryBackend) -> None:
    @tomograph.traced("svc", "async op")
    async def op() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert asyncio.run(op()) == "ok"
    assert memory.names() == ["async op"]


def test_classic_and_modern_spans_interleave(memory: MemoryBackend) -> None:
    with tomograph.span("modern") as modern:
        tomograph.start("svc", "classic", "127.0.0.1", 1)
        with tomograph.span("inner") as inner:
            pass
        tomograph.stop("classic")
    classic = memory.find("classic")
    assert classic.parent_id == modern.span_id
    assert inner.parent_id == classic.span_id
