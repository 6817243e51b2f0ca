"""The short cuts on the per-span path (start_as_current_span's context manager, attributes
given at start, the current span read inside a tomograph span, extraction from a WSGI environ)
behave as the general path does.

The provider is used directly, never set globally; the runtime context bridge its creation
installs is removed after each test.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.trace")

from opentelemetry import context as context_api
from opentelemetry import trace

import tomograph
from tomograph.opentelemetry import Propagator, TracerProvider, uninstall
from tomograph.reporting.memory import MemoryBackend

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def tracer(memory: MemoryBackend) -> Iterator[trace.Tracer]:
    provider = TracerProvider(tomograph.Tracer("svc", backends=[memory]))
    try:
        yield provider.get_tracer("lib", "1.0")
    finally:
        uninstall()


def test_a_span_made_current_is_current_in_both_apis_and_restored_after(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    before = context_api.get_current()
    with tracer.start_as_current_span("op") as span:
        assert trace.get_current_span() is span
        assert tomograph.current_span() is span.tomograph_span  # type: ignore[attr-defined]
    assert tomograph.current_span() is None
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert context_api.get_current() == before
    assert memory.names() == ["op"]


def test_leaving_a_current_span_in_another_context_logs_as_the_api_does_and_ends_it(
    tracer: trace.Tracer, memory: MemoryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    manager = tracer.start_as_current_span("op")
    contextvars.copy_context().run(manager.__enter__)
    with caplog.at_level(logging.ERROR, logger="opentelemetry.context"):
        manager.__exit__(None, None, None)  # in this context, which never entered it
    assert "Failed to detach context" in caplog.text
    assert memory.names() == ["op"]


def test_an_exception_leaving_the_block_fails_the_span_and_is_recorded(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    with pytest.raises(ValueError), tracer.start_as_current_span("op"):
        raise ValueError("bad input")
    (span,) = memory.spans
    assert span.error
    assert span.tags["otel.status_code"] == "ERROR"
    assert [note.value for note in span.annotations] == ["ValueError: bad input"]


def test_a_span_ended_inside_its_block_is_reported_once(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    with tracer.start_as_current_span("op") as span:
        span.end()
    assert memory.names() == ["op"]


def test_end_on_exit_false_leaves_the_span_open(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    with tracer.start_as_current_span("op", end_on_exit=False) as span:
        pass
    assert span.is_recording()
    assert memory.names() == []
    span.end()
    assert memory.names() == ["op"]


class Key(str):
    pass


def test_attributes_given_at_start_follow_the_attribute_rules(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    given: dict[Any, Any] = {
        "text": "a",
        "count": 2**63,
        "ratio": float("nan"),
        "flag": False,
        "list": ["x", None],
        "": "empty key",
        7: "not a str key",
        "map": {"no": "maps"},
        Key("subclassed"): "kept",
        "mixed": [1, "x"],
    }
    tracer.start_span("op", attributes=given).end()
    tags = memory.spans[0].tags
    kept = {key: value for key, value in tags.items() if not key.startswith("otel.scope")}
    assert kept.keys() == {"text", "count", "ratio", "flag", "list", "subclassed"}
    assert kept["count"] == 2**63
    assert kept["list"] == ("x", None)
    assert kept["ratio"] != kept["ratio"]  # NaN kept as given


def test_the_attribute_limit_counts_what_it_drops(memory: MemoryBackend) -> None:
    from tomograph.opentelemetry import SpanLimits

    provider = TracerProvider(
        tomograph.Tracer("svc", backends=[memory]), limits=SpanLimits(attributes=4)
    )
    try:
        tracer = provider.get_tracer("lib", "1.0")  # two scope tags
        tracer.start_span("op", attributes={"a": 1, "b": 2, "c": 3}).end()
    finally:
        uninstall()
    tags = memory.spans[0].tags
    assert [key for key in tags if not key.startswith("otel.")] == ["a", "b"]
    assert tags["otel.dropped_attributes_count"] == 1


def test_the_current_span_read_inside_tomograph_spans_follows_them(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    otel_tracer = tomograph.Tracer("svc", backends=[memory])
    with otel_tracer.span("outer") as outer:
        first = trace.get_current_span()
        assert first is trace.get_current_span()  # read again: the same view
        with otel_tracer.span("inner") as inner:
            assert trace.get_current_span().tomograph_span is inner  # type: ignore[attr-defined]
            with tracer.start_as_current_span("api") as api:
                assert trace.get_current_span() is api
            assert trace.get_current_span().tomograph_span is inner  # type: ignore[attr-defined]
        assert trace.get_current_span() == first
        assert first.tomograph_span is outer  # type: ignore[attr-defined]
        assert first.get_span_context().span_id == outer.span_id
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_the_current_span_is_per_thread_when_read_from_many_threads(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    import threading

    otel_tracer = tomograph.Tracer("svc", backends=[memory])
    wrong: list[str] = []
    start = threading.Barrier(8)

    def work(index: int) -> None:
        start.wait()
        with otel_tracer.span(f"t{index}") as mine:
            for _ in range(2000):
                seen = trace.get_current_span()
                if seen.tomograph_span is not mine:  # type: ignore[attr-defined]
                    wrong.append(f"t{index} saw {seen!r}")
                    return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def wsgi_getter() -> Any:
    wsgi = pytest.importorskip("opentelemetry.instrumentation.wsgi")
    return wsgi.wsgi_getter


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": TRACEPARENT, "baggage": "user=7,tenant=a%20b"},
        {
            "x-b3-traceid": "4bf92f3577b34da6a3ce929d0e0e4736",
            "x-b3-spanid": "00f067aa0ba902b7",
            "x-b3-sampled": "0",
        },
        {"b3": "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-d"},
        {"traceparent": "00-not-a-trace-01"},
        {"baggage": "only=baggage"},
        {},
    ],
)
def test_extracting_through_the_wsgi_getter_reads_what_the_headers_say(
    tracer: trace.Tracer, headers: dict[str, str]
) -> None:
    getter = wsgi_getter()
    environ = {
        "REQUEST_METHOD": "GET",
        "wsgi.version": (1, 0),
        **{"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()},
    }
    propagator = Propagator(tomograph.propagation.Propagator())

    def seen(context: Any) -> tuple[Any, Any]:
        span_context = trace.get_current_span(context).get_span_context()
        baggage = context.get(next(k for k in _context_keys() if "baggage" in k), None)
        return (
            (span_context.trace_id, span_context.span_id, span_context.trace_flags)
            if span_context.is_valid
            else None,
            dict(baggage) if baggage else None,
        )

    assert seen(propagator.extract(environ, getter=getter)) == seen(propagator.extract(headers))


def _context_keys() -> list[str]:
    from opentelemetry import baggage

    return [baggage._BAGGAGE_KEY]


def test_the_wsgi_getter_on_a_carrier_that_is_not_an_environ_still_reads_through_it(
    tracer: trace.Tracer,
) -> None:
    getter = wsgi_getter()

    class Headers(dict):  # type: ignore[type-arg]
        pass

    carrier = Headers(HTTP_TRACEPARENT=TRACEPARENT)
    context = Propagator(tomograph.propagation.Propagator()).extract(carrier, getter=getter)
    assert trace.get_current_span(context).get_span_context().span_id == 0x00F067AA0BA902B7


def test_set_attribute_follows_the_attribute_rules(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    with tracer.start_as_current_span("op") as span:
        span.set_attribute("text", "a")
        span.set_attribute("count", 2**63)
        span.set_attribute("flag", True)
        span.set_attribute("list", [1, 2])
        span.set_attribute("", "empty key")
        span.set_attribute(7, "not a str key")  # type: ignore[arg-type]
        span.set_attribute("map", {"no": "maps"})  # type: ignore[arg-type]
        span.set_attribute(Key("subclassed"), "kept")
    tags = memory.spans[0].tags
    kept = {key: value for key, value in tags.items() if not key.startswith("otel.scope")}
    assert kept == {"text": "a", "count": 2**63, "flag": True, "list": (1, 2), "subclassed": "kept"}


def test_an_event_with_attributes_keeps_them_and_reads_as_json_in_zipkin(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    with tracer.start_as_current_span("op") as span:
        span.add_event("cache miss", {"key": "user:7", "sizes": [1, 2], "é": "ü"})
        span.add_event("again", {"key": "user:8"})
    first, second = (note.value for note in memory.spans[0].annotations)
    assert first == '{"cache miss": {"key": "user:7", "sizes": [1, 2], "é": "ü"}}'
    assert first.attributes == {"key": "user:7", "sizes": (1, 2), "é": "ü"}  # type: ignore[attr-defined]
    assert second == '{"again": {"key": "user:8"}}'


def test_a_tomograph_span_under_an_attached_extracted_context_continues_its_trace(
    tracer: trace.Tracer, memory: MemoryBackend
) -> None:
    extracted = Propagator(tomograph.propagation.Propagator()).extract({"traceparent": TRACEPARENT})
    token = context_api.attach(extracted)
    try:
        with tomograph.Tracer("svc", backends=[memory]).span("child"):
            pass
    finally:
        context_api.detach(token)
    (child,) = memory.spans
    assert f"{child.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert f"{child.parent_id:016x}" == TRACEPARENT.split("-")[2]
    assert tomograph.current_span() is None
