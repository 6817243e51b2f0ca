"""tomograph.opentracing.Tracer: what OpenTracing calls record in tomograph spans."""

from __future__ import annotations

import asyncio
import time

import opentracing
import pytest
from opentracing import Format

import tomograph
from tomograph.model import Endpoint, SpanKind
from tomograph.opentracing import ContextVarsScopeManager, SpanContext, Tracer
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import never


@pytest.fixture
def backend() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def ot(backend: MemoryBackend) -> Tracer:
    return Tracer(tomograph.Tracer("ot-service", backends=[backend]))


def test_finished_span_reaches_the_backend_with_name_and_tags(
    ot: Tracer, backend: MemoryBackend
) -> None:
    with ot.start_active_span("checkout", tags={"items": 3, "list": [1]}) as scope:
        scope.span.set_tag("paid", True).set_tag("ratio", 0.5)
    (span,) = backend.spans
    assert span.name == "checkout"
    assert span.tags == {"items": 3, "list": "[1]", "paid": True, "ratio": 0.5}
    assert span.service_name == "ot-service"


def test_child_of_span_and_references(ot: Tracer, backend: MemoryBackend) -> None:
    parent = ot.start_span("parent")
    child = ot.start_span("child", child_of=parent)
    follower = ot.start_span("later", references=[opentracing.follows_from(parent.context)])
    for span in (follower, child, parent):
        span.finish()
    by_name = {s.name: s for s in backend.spans}
    assert by_name["child"].parent_id == by_name["parent"].span_id
    assert by_name["later"].parent_id == by_name["parent"].span_id
    assert {s.trace_id for s in backend.spans} == {by_name["parent"].trace_id}


def test_child_of_reference_wins_over_follows_from(ot: Tracer) -> None:
    a, b = ot.start_span("a"), ot.start_span("b")
    child = ot.start_span(
        "c", references=[opentracing.follows_from(a.context), opentracing.child_of(b.context)]
    )
    assert child.tomograph_span.parent_id == b.tomograph_span.span_id


def test_explicit_start_and_finish_times(ot: Tracer, backend: MemoryBackend) -> None:
    start = time.time() - 10
    span = ot.start_span("timed", start_time=start)
    span.finish(finish_time=start + 2.5)
    (recorded,) = backend.spans
    assert abs(recorded.timestamp - int(start * 1e6)) <= 2
    assert abs(recorded.duration - 2_500_000) <= 2


def test_logs_become_notes(ot: Tracer, backend: MemoryBackend) -> None:
    with ot.start_span("op") as span:
        span.log_kv({"event": "cache miss"})
        span.log_kv({"event": "retry", "attempt": 2})
        span.log_kv({"payload": "x"}, timestamp=time.time() - 1)
        span.log_event("legacy")
    notes = backend.spans[0].annotations
    assert [note.value for note in notes] == [
        "cache miss",
        "event=retry attempt=2",
        "payload=x",
        "legacy",
    ]
    assert notes[0].timestamp - notes[2].timestamp > 900_000  # logged with a past timestamp


def test_exception_in_span_marks_error(ot: Tracer, backend: MemoryBackend) -> None:
    with pytest.raises(ValueError), ot.start_active_span("boom"):
        raise ValueError("bad input")
    (span,) = backend.spans
    assert span.error
    assert span.tags["error"] == "bad input"
    assert span.tags["exception.type"] == "ValueError"


def test_error_tag(ot: Tracer, backend: MemoryBackend) -> None:
    with ot.start_span("op") as span:
        span.set_tag("error", True)
    assert backend.spans[0].error
    assert backend.spans[0].tags == {"error": "true"}


def test_kind_and_peer_tags_set_kind_and_remote_endpoint(
    ot: Tracer, backend: MemoryBackend
) -> None:
    tags = {"span.kind": "client", "peer.service": "db", "peer.ipv4": "10.0.0.1"}
    with ot.start_span("query", tags=tags) as span:
        span.set_tag("peer.port", "5432").set_tag("peer.hostname", "db1")
    (recorded,) = backend.spans
    assert recorded.kind is SpanKind.CLIENT
    assert recorded.remote_endpoint == Endpoint("db", "10.0.0.1", None, 5432)
    assert recorded.tags == {"peer.hostname": "db1"}


def test_sampling_priority_forces_or_drops_recording(backend: MemoryBackend) -> None:
    ot = Tracer(tomograph.Tracer("svc", backends=[backend], sampler=never()))
    ot.start_span("dropped").finish()
    with ot.start_span("kept", tags={"sampling.priority": 1}) as span:
        span.set_tag("x", 1)
        assert span.context.sampled is True
    on = Tracer(tomograph.Tracer("svc", backends=[backend]))
    with on.start_span("unwanted") as span:
        span.set_tag("sampling.priority", 0)
    assert [(s.name, s.debug, s.tags) for s in backend.spans] == [("kept", True, {"x": 1})]


def test_baggage_is_inherited_by_children_and_native_spans(ot: Tracer) -> None:
    from tomograph.propagation.baggage import get_baggage

    parent = ot.start_span("parent").set_baggage_item("user", "alice")
    child = ot.start_span("child", child_of=parent)
    assert child.get_baggage_item("user") == "alice"
    assert get_baggage(child.tomograph_span) == {"user": "alice"}
    assert parent.context.baggage == {"user": "alice"}
    child.set_baggage_item("user", "bob")
    assert parent.get_baggage_item("user") == "alice"


def test_text_map_round_trip_with_baggage(ot: Tracer) -> None:
    span = ot.start_span("op").set_baggage_item("tenant", "acme")
    carrier: dict[str, str] = {}
    ot.inject(span.context, Format.TEXT_MAP, carrier)
    assert "baggage" in carrier
    extracted = ot.extract(Format.TEXT_MAP, carrier)
    assert isinstance(extracted, SpanContext)
    assert (extracted.trace_id, extracted.span_id) == (span.context.trace_id, span.context.span_id)
    assert extracted.baggage == {"tenant": "acme"}


def test_http_headers_accept_b3_from_other_tracers(ot: Tracer, backend: MemoryBackend) -> None:
    headers = {
        "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124",
        "X-B3-SpanId": "a2fb4a1d1a96d312",
        "X-B3-Sampled": "1",
    }
    context = ot.extract(Format.HTTP_HEADERS, headers)
    assert context is not None
    ot.start_span("server", child_of=context, tags={"span.kind": "server"}).finish()
    (span,) = backend.spans
    assert span.trace_id == 0x463AC35C9F6413AD48485A3953BB6124
    assert span.parent_id == 0xA2FB4A1D1A96D312
    assert span.kind is SpanKind.SERVER


def test_extract_without_context_gives_none(ot: Tracer) -> None:
    assert ot.extract(Format.HTTP_HEADERS, {"accept": "*/*"}) is None
    assert ot.extract(Format.HTTP_HEADERS, {"x-b3-traceid": "zz", "x-b3-spanid": "1"}) is None
    assert ot.extract(Format.BINARY, bytearray()) is None


def test_binary_round_trip_and_corruption(ot: Tracer) -> None:
    span = ot.start_span("op").set_baggage_item("k", "v")
    carrier = bytearray()
    ot.inject(span.context, Format.BINARY, carrier)
    extracted = ot.extract(Format.BINARY, bytes(carrier))
    assert extracted is not None
    assert extracted.trace_context == span.context.trace_context.replace(extra=None)
    assert extracted.baggage == {"k": "v"}
    with pytest.raises(opentracing.SpanContextCorruptedException):
        ot.extract(Format.BINARY, carrier[:-1])


def test_wrong_carriers_are_reported(ot: Tracer) -> None:
    span = ot.start_span("op")
    with pytest.raises(opentracing.InvalidCarrierException):
        ot.inject(span.context, Format.BINARY, b"immutable")
    with pytest.raises(opentracing.InvalidCarrierException):
        ot.inject(span.context, Format.TEXT_MAP, "not a dict")
    with pytest.raises(opentracing.InvalidCarrierException):
        ot.extract(Format.BINARY, "text")


def test_unsampled_spans_record_nothing(backend: MemoryBackend) -> None:
    ot = Tracer(tomograph.Tracer("svc", backends=[backend], sampler=never()))
    with ot.start_active_span("op") as scope:
        scope.span.set_tag("a", 1).log_kv({"event": "x"})
        assert scope.span.context.sampled is False
    assert backend.spans == []


def test_default_tracer_is_looked_up_at_each_span(memory: MemoryBackend) -> None:
    ot = Tracer()
    ot.start_span("op").finish()
    assert [s.service_name for s in memory.spans] == ["test-service"]


def test_contextvars_scope_makes_span_tomographs_current(backend: MemoryBackend) -> None:
    tracer = tomograph.Tracer("svc", backends=[backend])
    ot = Tracer(tracer, scope_manager=ContextVarsScopeManager())
    with ot.start_active_span("outer") as scope:
        with tracer.span("native"):
            pass
        assert tomograph.current_span() is scope.span.tomograph_span
    assert tomograph.current_span() is None
    by_name = {s.name: s for s in backend.spans}
    assert by_name["native"].parent_id == by_name["outer"].span_id


def test_ot_spans_nest_under_tomographs_current_span(backend: MemoryBackend) -> None:
    tracer = tomograph.Tracer("svc", backends=[backend])
    ot = Tracer(tracer)
    with tracer.span("request") as request:
        inner = ot.start_span("library call")
        inner.finish()
        ignored = ot.start_span("new trace", ignore_active_span=True)
    assert inner.tomograph_span.parent_id == request.span_id
    assert ignored.tomograph_span.parent_id is None


def test_contextvars_scopes_are_isolated_between_tasks(backend: MemoryBackend) -> None:
    ot = Tracer(tomograph.Tracer("svc", backends=[backend]), ContextVarsScopeManager())

    async def worker(name: str) -> tuple[str, int | None]:
        with ot.start_active_span(name) as scope:
            await asyncio.sleep(0.01)
            with ot.start_active_span(name + "-child") as child:
                return (
                    name,
                    child.span.tomograph_span.parent_id == scope.span.tomograph_span.span_id,
                )

    async def main() -> list[tuple[str, int | None]]:
        with ot.start_active_span("root"):
            return list(await asyncio.gather(worker("a"), worker("b")))

    assert asyncio.run(main()) == [("a", True), ("b", True)]
    root = next(s for s in backend.spans if s.name == "root")
    assert {s.parent_id for s in backend.spans if s.name in ("a", "b")} == {root.span_id}


def test_early_api_start_join_and_text_contexts(ot: Tracer, backend: MemoryBackend) -> None:
    root = ot.start_trace("client call")
    root.set_trace_attribute("user", "alice")
    ids, attributes = ot.trace_context_to_text(root.trace_context)
    assert "baggage" not in ids
    assert attributes == {"user": "alice"}
    received = ot.trace_context_from_text(ids, attributes)
    assert received is not None
    server = ot.join_trace("handle", received)
    child = server.start_child("db")
    child.add_tag("rows", 2).add_tags({"table": "users"})
    child.info("fetched %d rows", 2)
    assert server.get_trace_attribute("user") == "alice"
    for span in (child, server, root):
        span.finish()
    by_name = {s.name: s for s in backend.spans}
    assert by_name["handle"].parent_id == by_name["client call"].span_id
    assert by_name["db"].parent_id == by_name["handle"].span_id
    assert by_name["db"].tags == {"rows": 2, "table": "users"}
    assert [n.value for n in by_name["db"].annotations] == ["fetched 2 rows"]


def test_early_api_error_marks_span(ot: Tracer, backend: MemoryBackend) -> None:
    span = ot.start_trace("op")
    span.error("failed after %d tries", 3)
    span.finish()
    assert backend.spans[0].error
    assert backend.spans[0].tags["error"] == "failed after 3 tries"


def test_join_trace_without_context_starts_a_trace(ot: Tracer) -> None:
    span = ot.join_trace("handle", None)
    assert span.tomograph_span.parent_id is None


def test_propagator_chooses_the_header_formats(backend: MemoryBackend) -> None:
    from tomograph.propagation import Propagator

    ot = Tracer(tomograph.Tracer("svc", backends=[backend]), propagator=Propagator(["b3"]))
    span = ot.start_span("op")
    carrier: dict[str, str] = {}
    ot.inject(span.context, Format.HTTP_HEADERS, carrier)
    assert set(carrier) == {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"}
    assert (
        ot.extract(Format.HTTP_HEADERS, {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
        is None
    )
    extracted = ot.extract(Format.HTTP_HEADERS, carrier)
    assert extracted is not None and extracted.span_id == span.context.span_id
