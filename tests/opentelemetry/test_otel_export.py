"""What a span made through OpenTelemetry's API looks like on the wire: Zipkin v2 JSON and OTLP,
through tomograph's own encoders, and back through the collector's OTLP decoder."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

import tomograph
from tomograph.encoding import otlp, zipkin_json
from tomograph.opentelemetry import SpanLimits, TracerProvider
from tomograph.opentelemetry._context import uninstall_context
from tomograph.reporting.memory import MemoryBackend

LINKED = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736,
    0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(1),
    trace_state=TraceState([("vendor", "x1")]),
)


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend()


@pytest.fixture
def provider(memory: MemoryBackend) -> Iterator[TracerProvider]:
    try:
        yield TracerProvider(
            tracer=tomograph.Tracer("fallback", backends=[memory]),
            resource={"service.name": "checkout"},
            limits=SpanLimits(attributes=8, events=4, links=2),
        )
    finally:
        uninstall_context()


def otlp_spans(spans: list[tomograph.Span]) -> list[OtlpSpan]:
    request = ExportTraceServiceRequest.FromString(otlp.encode_spans(spans))
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def zipkin(spans: list[tomograph.Span]) -> list[dict[str, object]]:
    document = json.loads(zipkin_json.encode_spans(spans))
    assert isinstance(document, list)
    return document


def test_a_full_span_in_zipkin_and_otlp(provider: TracerProvider, memory: MemoryBackend) -> None:
    tracer = provider.get_tracer("payments", "3.1")
    with tracer.start_as_current_span(
        "charge",
        kind=SpanKind.CLIENT,
        attributes={"amount": 12.5, "retry": False, "items": [1, 2, 3], "tags": ("a", None)},
        links=[Link(LINKED, {"reason": "batch"})],
    ) as span:
        span.add_event("card checked", {"issuer": "visa", "attempt": 2})
        span.add_event("plain")
        try:
            raise ValueError("card declined")
        except ValueError as error:
            span.record_exception(error, {"payment.id": "p-1"})
        span.set_status(StatusCode.ERROR, "declined")

    (recorded,) = memory.spans
    (document,) = zipkin([recorded])
    assert document["kind"] == "CLIENT"
    assert document["localEndpoint"] == {"serviceName": "checkout"}
    assert document["tags"] == {
        "otel.scope.name": "payments",
        "otel.scope.version": "3.1",
        "amount": "12.5",
        "retry": "false",
        "items": '["1","2","3"]',
        "tags": '["a",""]',  # None items are allowed in OpenTelemetry arrays
        "otel.status_code": "ERROR",
        "error": "declined",
    }
    notes = [note["value"] for note in document["annotations"]]  # type: ignore[union-attr]
    assert notes[0] == (
        '{"link": {"reason": "batch", "spanId": "00f067aa0ba902b7", '
        '"traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}}'
    )
    assert notes[1:] == [
        '{"card checked": {"attempt": 2, "issuer": "visa"}}',
        "plain",
        "ValueError: card declined",
    ]

    (exported,) = otlp_spans([recorded])
    assert exported.kind == OtlpSpan.SPAN_KIND_CLIENT
    assert exported.status.code == Status.STATUS_CODE_ERROR
    assert exported.status.message == "declined"
    attributes = {kv.key: kv.value for kv in exported.attributes}
    assert attributes["amount"].double_value == 12.5
    assert attributes["retry"].HasField("bool_value") and not attributes["retry"].bool_value
    assert [v.int_value for v in attributes["items"].array_value.values] == [1, 2, 3]
    (link,) = exported.links
    assert link.trace_id == LINKED.trace_id.to_bytes(16, "big")
    assert link.span_id == LINKED.span_id.to_bytes(8, "big")
    assert link.trace_state == "vendor=x1"
    assert {kv.key: kv.value.string_value for kv in link.attributes} == {"reason": "batch"}
    events = {event.name: event for event in exported.events}
    assert set(events) == {"card checked", "plain", "exception"}
    checked = {kv.key: kv.value for kv in events["card checked"].attributes}
    assert checked["issuer"].string_value == "visa" and checked["attempt"].int_value == 2
    exception = {kv.key: kv.value.string_value for kv in events["exception"].attributes}
    assert exception["exception.type"] == "ValueError"
    assert exception["exception.message"] == "card declined"
    assert "raise ValueError" in exception["exception.stacktrace"]
    assert exception["payment.id"] == "p-1"


def test_record_exception_alone_does_not_fail_the_span(
    provider: TracerProvider, memory: MemoryBackend
) -> None:
    # OpenTelemetry keeps them apart: a handled exception recorded for the record is no error.
    with provider.get_tracer("lib").start_as_current_span("retrying") as span:
        span.record_exception(TimeoutError("first attempt"))
    (recorded,) = memory.spans
    assert not recorded.error and "error" not in recorded.tags
    (document,) = zipkin([recorded])
    assert "error" not in document.get("tags", {})  # type: ignore[operator]
    (exported,) = otlp_spans([recorded])
    assert exported.status.code == Status.STATUS_CODE_UNSET


def test_status_ok_is_final_and_exported(provider: TracerProvider, memory: MemoryBackend) -> None:
    with provider.get_tracer("lib").start_as_current_span("fixed") as span:
        span.set_status(StatusCode.ERROR, "first try failed")
        span.set_status(StatusCode.OK)
        span.set_status(StatusCode.ERROR, "after ok: ignored")
        span.set_status(StatusCode.UNSET)
    (recorded,) = memory.spans
    assert not recorded.error
    assert recorded.tags["otel.status_code"] == "OK" and "error" not in recorded.tags
    (exported,) = otlp_spans([recorded])
    assert exported.status.code == Status.STATUS_CODE_OK


def test_an_exception_leaving_start_as_current_span_fails_it(
    provider: TracerProvider, memory: MemoryBackend
) -> None:
    tracer = provider.get_tracer("lib")
    with pytest.raises(KeyError), tracer.start_as_current_span("lookup"):
        raise KeyError("sku")
    with (
        pytest.raises(KeyError),
        tracer.start_as_current_span(
            "quiet lookup", record_exception=False, set_status_on_exception=False
        ),
    ):
        raise KeyError("sku")
    spans = {span.name: span for span in memory.spans}
    assert spans["lookup"].error and spans["lookup"].tags["error"] == "KeyError: 'sku'"
    assert [str(n.value) for n in spans["lookup"].annotations] == ["KeyError: 'sku'"]
    assert not spans["quiet lookup"].error and spans["quiet lookup"].annotations == []


def test_limits_bound_a_span_and_count_what_they_dropped(
    provider: TracerProvider, memory: MemoryBackend
) -> None:
    with provider.get_tracer("").start_as_current_span("busy", links=[Link(LINKED)] * 3) as span:
        for index in range(20):
            span.set_attribute(f"key{index}", index)
            span.add_event(f"event {index}")
    (recorded,) = memory.spans
    assert recorded.tags["otel.dropped_links_count"] == 1
    assert recorded.tags["otel.dropped_events_count"] == 16
    assert recorded.tags["otel.dropped_attributes_count"] >= 12  # type: ignore[operator]
    assert len([note for note in recorded.notes_raw if "link" in note[1]]) == 2
    assert [str(n[1]) for n in recorded.notes_raw if n[1].startswith("event")] == [
        f"event {i}" for i in range(4)
    ]


def test_hostile_values_never_raise_and_still_encode(
    provider: TracerProvider, memory: MemoryBackend
) -> None:
    tracer = provider.get_tracer("\ud800 scope")
    with tracer.start_as_current_span("\udfff name", start_time=math.nan) as span:  # type: ignore[arg-type]
        span.set_attribute("huge", 2**63)
        span.set_attribute("nan", math.nan)
        span.set_attribute("big text", "x" * 10_000_000)
        span.set_attribute("lone \ud800", "value \udc00")
        span.set_attribute("", "empty keys are dropped")
        span.set_attribute(7, "keys must be strings")  # type: ignore[arg-type]
        span.set_attribute("mixed", [1, "a"])
        span.set_attribute("nested", [[1]])  # type: ignore[list-item]
        span.add_event("\ud800", {"\udc00": "\ud800"}, timestamp=-5)
        span.add_link(trace.INVALID_SPAN_CONTEXT)
        span.end(end_time=2**80)
    (recorded,) = memory.spans
    assert recorded.tags["huge"] == 2**63
    assert "" not in recorded.tags and 7 not in recorded.tags
    assert "mixed" not in recorded.tags and "nested" not in recorded.tags
    assert recorded.duration is not None and recorded.duration >= 1
    document = zipkin([recorded])
    assert document[0]["tags"]["huge"] == str(2**63)  # type: ignore[index]
    (exported,) = otlp_spans([recorded])
    assert {kv.key for kv in exported.attributes} >= {"huge", "nan", "big text"}


def test_the_collector_keeps_links_of_otlp_spans_as_notes(
    provider: TracerProvider, memory: MemoryBackend
) -> None:
    with provider.get_tracer("lib").start_as_current_span(
        "consume", links=[Link(LINKED, {"reason": "batch"})]
    ):
        pass
    (recorded,) = memory.spans
    (decoded,) = otlp.decode_spans(otlp.encode_spans([recorded]))
    (document,) = zipkin([recorded])
    assert [a["value"] for a in decoded["annotations"]] == [  # type: ignore[index]
        a["value"]
        for a in document["annotations"]  # type: ignore[union-attr]
    ]
