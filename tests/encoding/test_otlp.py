"""OTLP/HTTP trace requests decoded to Zipkin v2 spans, as OpenTelemetry's Zipkin mapping says."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("opentelemetry.proto")

from google.protobuf.json_format import MessageToJson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from tests.support.collector import otlp_sharing_attributes

from tomograph import Tracer, __version__
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.otlp import (
    UNCOPIED_TAG,
    decode_json_spans,
    decode_spans,
    encode_spans,
    export_response,
)
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

from .conftest import finished_spans

TRACE = bytes.fromhex("4e441824ec2b6a44ffdc9bb9a6453df3")
SPAN = bytes.fromhex("ffdc9bb9a6453df3")
PARENT = bytes.fromhex("0102030405060708")


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def sample_request(**span_fields: object) -> ExportTraceServiceRequest:
    span = trace_pb2.Span(
        trace_id=TRACE,
        span_id=SPAN,
        parent_span_id=PARENT,
        name="GET /Users",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=1_700_000_000_123_456_700,
        end_time_unix_nano=1_700_000_000_125_456_700,
        attributes=[
            kv("http.method", string_value="GET"),
            kv("http.status_code", int_value=503),
            kv("retry", bool_value=True),
            kv("ratio", double_value=0.5),
            kv("peer.service", string_value="Users-API"),
            kv("network.peer.address", string_value="10.0.0.7"),
            kv("server.port", int_value=8080),
        ],
        events=[
            trace_pb2.Span.Event(time_unix_nano=1_700_000_000_124_000_000, name="sent"),
            trace_pb2.Span.Event(
                time_unix_nano=1_700_000_000_125_000_000,
                name="exception",
                attributes=[kv("exception.type", string_value="Timeout")],
            ),
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message="upstream 503"),
        **span_fields,
    )
    return ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource={
                    "attributes": [
                        kv("service.name", string_value="Checkout"),
                        kv("deployment.environment", string_value="prod"),
                    ]
                },
                scope_spans=[
                    trace_pb2.ScopeSpans(scope={"name": "my.lib", "version": "1.2"}, spans=[span])
                ],
            )
        ]
    )


def test_protobuf_request_maps_to_zipkin() -> None:
    [span] = decode_spans(sample_request().SerializeToString())
    assert span["traceId"] == TRACE.hex()
    assert span["id"] == SPAN.hex()
    assert span["parentId"] == PARENT.hex()
    assert span["name"] == "get /users"
    assert span["kind"] == "CLIENT"
    assert span["timestamp"] == 1_700_000_000_123_457
    assert span["duration"] == 2000
    assert span["localEndpoint"] == {"serviceName": "checkout"}
    assert span["remoteEndpoint"] == {"serviceName": "users-api", "ipv4": "10.0.0.7", "port": 8080}
    tags = span["tags"]
    assert tags["http.method"] == "GET"
    assert tags["http.status_code"] == "503"
    assert tags["retry"] == "true"
    assert tags["ratio"] == "0.5"
    assert tags["deployment.environment"] == "prod"
    assert tags["otel.scope.name"] == "my.lib"
    assert tags["otel.scope.version"] == "1.2"
    assert tags["otel.status_code"] == "ERROR"
    assert tags["error"] == "upstream 503"
    assert "service.name" not in tags
    assert tags["exception.type"] == "Timeout"
    assert span["annotations"] == [
        {"timestamp": 1_700_000_000_124_000, "value": "sent"},
        {"timestamp": 1_700_000_000_125_000, "value": "Timeout"},
    ]


def test_events_with_attributes_keep_them_as_json() -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.events[0].attributes.append(kv("bytes", int_value=512))
    [decoded] = decode_spans(request.SerializeToString())
    assert decoded["annotations"][0]["value"] == '{"sent": {"bytes": 512}}'


def test_exception_event_is_the_note_tomograph_writes_with_type_and_stack_as_tags() -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    del span.events[:]
    span.events.add(
        time_unix_nano=1_700_000_000_125_000_000,
        name="exception",
        attributes=[
            kv("exception.type", string_value="ConnectionError"),
            kv("exception.message", string_value="refused"),
            kv("exception.stacktrace", string_value="Traceback ...\nConnectionError: refused"),
        ],
    )
    [decoded] = decode_spans(request.SerializeToString())
    assert [a["value"] for a in decoded["annotations"]] == ["ConnectionError: refused"]
    assert decoded["tags"]["exception.type"] == "ConnectionError"
    assert decoded["tags"]["exception.stacktrace"] == "Traceback ...\nConnectionError: refused"


def test_an_error_status_without_message_keeps_the_spans_error_attribute() -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.status.message = ""
    span.attributes.append(kv("error", string_value="card declined"))
    [decoded] = decode_spans(request.SerializeToString())
    assert decoded["tags"]["error"] == "card declined"
    span.attributes.pop()
    [decoded] = decode_spans(request.SerializeToString())
    assert decoded["tags"]["error"] == ""  # still an error in every Zipkin view


@pytest.mark.parametrize(
    "code", [trace_pb2.Status.STATUS_CODE_UNSET, trace_pb2.Status.STATUS_CODE_OK]
)
@pytest.mark.parametrize("value", [{"bool_value": False}, {"string_value": "false"}])
def test_error_false_is_not_shown_as_a_failure(code: int, value: dict[str, object]) -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.status.code = code  # type: ignore[assignment]
    span.attributes.append(kv("error", **value))
    [decoded] = decode_spans(request.SerializeToString())
    assert "error" not in decoded["tags"]


def test_an_error_attribute_without_error_status_is_still_an_error() -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.status.code = trace_pb2.Status.STATUS_CODE_UNSET
    span.attributes.append(kv("error", string_value="timeout"))
    [decoded] = decode_spans(request.SerializeToString())
    assert decoded["tags"]["error"] == "timeout"


def test_trace_state_becomes_the_w3c_tracestate_tag() -> None:
    [decoded] = decode_spans(
        sample_request(trace_state="rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").SerializeToString()
    )
    assert decoded["tags"]["w3c.tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    [plain] = decode_spans(sample_request().SerializeToString())
    assert "w3c.tracestate" not in plain["tags"]


def test_internal_spans_have_no_kind_and_ok_status_is_tagged() -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.kind = trace_pb2.Span.SPAN_KIND_INTERNAL
    span.status.code = trace_pb2.Status.STATUS_CODE_OK
    [decoded] = decode_spans(request.SerializeToString())
    assert "kind" not in decoded
    assert decoded["tags"]["otel.status_code"] == "OK"
    assert "error" not in decoded["tags"]


def test_missing_service_name_is_unknown_service() -> None:
    request = sample_request()
    del request.resource_spans[0].resource.attributes[:]
    [span] = decode_spans(request.SerializeToString())
    assert span["localEndpoint"] == {"serviceName": "unknown_service"}


def test_sub_microsecond_spans_last_one_microsecond() -> None:
    request = sample_request()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.end_time_unix_nano = span.start_time_unix_nano + 10
    assert decode_spans(request.SerializeToString())[0]["duration"] == 1


def test_json_request_uses_hex_ids() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE.hex(),
                                "spanId": SPAN.hex(),
                                "name": "work",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000001000000",
                                "attributes": [
                                    {"key": "n", "value": {"intValue": "3"}},
                                    {
                                        "key": "list",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"intValue": 1}]
                                            }
                                        },
                                    },
                                ],
                                "status": {"code": "STATUS_CODE_ERROR"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [span] = decode_json_spans(json.dumps(body).encode())
    assert span["traceId"] == TRACE.hex()
    assert span["id"] == SPAN.hex()
    assert span["kind"] == "SERVER"
    assert span["duration"] == 1000
    assert span["tags"]["n"] == "3"
    assert span["tags"]["list"] == '["a",1]'
    assert span["tags"]["error"] == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', "hex"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abcd"}]}]}]}', "32 hex"),
        # whitespace, which bytes.fromhex skips, is no id: "\r" read as no parent at all
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"parentSpanId": "\\r"}]}]}]}', "hex"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": " 0a0b"}]}]}]}', "hex"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "0a0b0"}]}]}]}', "hex"),
        (b'{"resourceSpans": 5}', "OTLP JSON"),
    ],
)
def test_bad_json_is_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_json_spans(body)


def test_bad_ids_are_refused_with_the_span_named() -> None:
    request = sample_request()
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x00" * 8
    with pytest.raises(DecodeError, match=r"spans\[0\]: spanId must not be all zeros"):
        decode_spans(request.SerializeToString())
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01" * 3
    with pytest.raises(DecodeError, match="spanId must be 8 bytes"):
        decode_spans(request.SerializeToString())


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_an_all_zero_parent_span_id_is_a_root_span(encoding: str) -> None:
    # OTLP exporters of several SDKs (.NET, C++, Java before their fixes) sent root spans
    # with the invalid span id, eight zero bytes, as parent: the OpenTelemetry Collector
    # reads that as no parent, and a 400 would make the exporter drop the whole batch.
    request = sample_request()
    request.resource_spans[0].scope_spans[0].spans[0].parent_span_id = b"\x00" * 8
    if encoding == "protobuf":
        (span,) = decode_spans(request.SerializeToString())
    else:
        body = MessageToJson(request)
        ids = {base64.b64encode(raw).decode(): raw.hex() for raw in (TRACE, SPAN, b"\x00" * 8)}
        for encoded, hex_id in ids.items():
            body = body.replace(f'"{encoded}"', f'"{hex_id}"')  # OTLP/JSON writes ids as hex
        (span,) = decode_json_spans(body.encode())
    assert span["id"] == SPAN.hex()
    assert "parentId" not in span


def copied(spans: list[dict[str, Any]]) -> int:
    """How many of ``spans`` got their resource attribute (the others are marked uncopied)."""
    with_resource = [span for span in spans if "k8s.labels" in span["tags"]]
    without = [span for span in spans if UNCOPIED_TAG in span["tags"]]
    assert len(with_resource) + len(without) == len(spans)  # each one or the other
    assert all(UNCOPIED_TAG not in span["tags"] for span in with_resource)
    assert all("otel.scope.name" not in span["tags"] for span in without)
    return len(with_resource)


def test_copies_of_shared_attributes_stop_at_the_bound_and_every_span_is_kept() -> None:
    # a 10 KB resource attribute under 1,000 spans: a 40 KB request that decodes to 10 MB
    body = otlp_sharing_attributes(TRACE, 1000, "x" * 10_000)
    assert len(body) < 50_000
    per_span = 10_002 + len('"k8s.labels"') + 48 + len('"lib"') + len('""') + 2 * 48
    spans = decode_spans(body, max_copied=300 * per_span + per_span // 2)
    assert len(spans) == 1000
    assert copied(spans) == 300  # the first ones, in request order
    assert [span["id"] for span in spans] == [f"{n + 1:016x}" for n in range(1000)]
    assert all(span["localEndpoint"] == {"serviceName": "unknown_service"} for span in spans)
    assert copied(decode_spans(body, max_copied=1000 * per_span)) == 1000
    assert copied(decode_spans(body)) == 1000  # no bound given


@pytest.mark.parametrize(
    ("text", "stored_bytes"),
    [("\x01" * 1000, 6000), ('"' * 1000, 2000), ("😀" * 1000, 4000), ("é" * 1000, 2000)],
)
def test_copies_count_the_bytes_stored_not_the_characters(text: str, stored_bytes: int) -> None:
    # a control character is stored as \u0001: counting characters let a request within the
    # bound store six times the bound
    body = otlp_sharing_attributes(TRACE, 100, text, scope_name="")
    per_span = stored_bytes + 2 + len('"k8s.labels"') + 48
    assert copied(decode_spans(body, max_copied=10 * per_span)) == 10


def test_the_scope_counts_against_the_bound_too() -> None:
    body = otlp_sharing_attributes(TRACE, 1000, "", scope_name="s" * 10_000)
    assert copied(decode_spans(body, max_copied=5_000_000)) < 500
    assert {span["tags"]["otel.scope.name"] for span in decode_spans(body)} == {"s" * 10_000}


def test_the_bound_holds_for_json_requests() -> None:
    body = otlp_sharing_attributes(TRACE, 1000, "x" * 10_000)
    request = ExportTraceServiceRequest.FromString(body)
    text = MessageToJson(request)
    for n in range(1000):  # OTLP/JSON writes ids as hex
        raw = (n + 1).to_bytes(8, "big")
        text = text.replace(f'"{base64.b64encode(raw).decode()}"', f'"{raw.hex()}"')
    text = text.replace(f'"{base64.b64encode(TRACE).decode()}"', f'"{TRACE.hex()}"')
    assert copied(decode_json_spans(text.encode(), max_copied=5_000_000)) < 500
    assert copied(decode_json_spans(text.encode())) == 1000


@given(st.binary(max_size=300))
def test_random_protobuf_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    try:
        spans = decode_spans(data)
    except DecodeError:
        return
    for span in spans:
        assert len(span["id"]) == 16


@given(
    st.integers(min_value=0, max_value=len(sample_request().SerializeToString()) - 1),
    st.integers(min_value=0, max_value=255),
)
def test_mutated_protobuf_decodes_or_raises_a_decode_error(position: int, byte: int) -> None:
    data = bytearray(sample_request().SerializeToString())
    data[position] = byte
    try:
        decode_spans(bytes(data))
    except DecodeError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "resourceSpans",
                        "scopeSpans",
                        "spans",
                        "traceId",
                        "spanId",
                        "name",
                        "attributes",
                        "key",
                        "value",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_random_json_decodes_or_raises_a_decode_error(document: object) -> None:
    try:
        decode_json_spans(json.dumps(document).encode())
    except DecodeError:
        pass


@pytest.mark.parametrize(
    "body",
    [
        rb'{"resourceSpans":[{"resource":"\ud800"}]}',
        rb'{"resourceSpans":[{"\ud800":1}]}',
        rb'{"\udc00resourceSpans":[]}',
        rb'{"resourceSpans":[{"scopeSpans":[{"scope":{"name":"\ud800"}}]}]}',
    ],
)
def test_json_with_lone_surrogates_is_a_decode_error_naming_where(body: bytes) -> None:
    with pytest.raises(DecodeError, match="lone surrogate"):
        decode_json_spans(body)


def test_the_export_response_carries_a_warning_as_partial_success() -> None:
    assert export_response("", as_json=False) == b""
    response = ExportTraceServiceResponse()
    response.ParseFromString(export_response("3 texts were cut", as_json=False))
    assert response.partial_success.error_message == "3 texts were cut"
    assert response.partial_success.rejected_spans == 0
    document = json.loads(export_response("3 texts were cut", as_json=True))
    assert document == {"partialSuccess": {"errorMessage": "3 texts were cut"}}


@settings(max_examples=150, deadline=None)
@given(st.lists(finished_spans(), max_size=4, unique_by=lambda span: span.span_id))
def test_encoded_spans_decode_to_their_ids_kinds_names_times_and_services(
    spans: list[Span],
) -> None:
    decoded = {span["id"]: span for span in decode_spans(encode_spans(spans))}
    for span in spans:
        got = decoded[f"{span.span_id:016x}"]
        trace_id = f"{span.trace_id:032x}"
        assert got["traceId"] == (trace_id[16:] if span.trace_id < 2**64 else trace_id)
        assert got.get("parentId") == (f"{span.parent_id:016x}" if span.parent_id else None)
        assert got.get("kind") == (span.kind.name if span.kind is not None else None)
        assert got.get("name") == (span.name.lower() or None)
        assert got["timestamp"] == (span.start_ns + span.epoch_offset_ns + 500) // 1000
        service = (span.service_name or "unknown_service").lower()
        assert got["localEndpoint"] == {"serviceName": service}


def test_links_the_sdk_sends_to_an_invalid_context_do_not_cost_the_request() -> None:
    # OpenTelemetry's SDK keeps a link to an invalid span context when it has attributes, and
    # its OTLP exporter sends it with all-zero ids: the span and its batch must still be taken.
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import INVALID_SPAN_CONTEXT, Link

    tracer = TracerProvider().get_tracer("batch.consumer")
    span = tracer.start_span("consume", links=[Link(INVALID_SPAN_CONTEXT, {"reason": "gone"})])
    span.end()
    request = sdk_encode([span])
    assert len(request.resource_spans[0].scope_spans[0].spans[0].links) == 1
    (decoded,) = decode_spans(request.SerializeToString())
    assert decoded["name"] == "consume"
    (note,) = [a["value"] for a in decoded.get("annotations", []) if "link" in a["value"]]
    assert json.loads(note) == {"link": {"reason": "gone", "spanId": "0" * 16, "traceId": "0" * 32}}


def test_a_link_with_malformed_ids_is_left_out_and_its_span_kept() -> None:
    request = sample_request(
        links=[
            trace_pb2.Span.Link(trace_id=b"\x01" * 15, span_id=b"\x01" * 8),
            trace_pb2.Span.Link(trace_id=b"\x01" * 16, span_id=b"\x01" * 9),
            trace_pb2.Span.Link(trace_id=TRACE, span_id=PARENT),
        ]
    )
    (decoded,) = decode_spans(request.SerializeToString())
    links = [a["value"] for a in decoded["annotations"] if a["value"].startswith('{"link"')]
    assert [json.loads(link)["link"]["spanId"] for link in links] == [PARENT.hex()]


def test_spans_are_exported_under_the_instrumentation_scope_they_were_made_in() -> None:
    # Spans made through OpenTelemetry's API carry their tracer's scope as tags; an OTLP
    # backend shows it as the scope (the library that made the span), as the SDK exports it.
    tracer = Tracer("shop", backends=[MemoryBackend()])
    flask = {"otel.scope.name": "opentelemetry.instrumentation.flask", "otel.scope.version": "1"}
    spans = [
        tracer.start_span("GET /a", "SERVER", flask, parent=None),
        tracer.start_span("select", "CLIENT", {"otel.scope.name": "sqlalchemy"}, parent=None),
        tracer.start_span("GET /b", "SERVER", {**flask, "http.route": "/b"}, parent=None),
        tracer.start_span("native", parent=None),
    ]
    for span in spans:
        span.finish()
    (resource,) = ExportTraceServiceRequest.FromString(encode_spans(spans)).resource_spans
    scopes = {
        (scope.scope.name, scope.scope.version): [
            (span.name, {kv.key for kv in span.attributes}) for span in scope.spans
        ]
        for scope in resource.scope_spans
    }
    assert scopes == {
        ("opentelemetry.instrumentation.flask", "1"): [
            ("GET /a", set()),
            ("GET /b", {"http.route"}),
        ],
        ("sqlalchemy", ""): [("select", set())],
        ("tomograph", __version__): [("native", set())],
    }
    decoded = {span["name"]: span.get("tags", {}) for span in decode_spans(encode_spans(spans))}
    assert decoded["get /a"] == {
        "otel.scope.name": "opentelemetry.instrumentation.flask",
        "otel.scope.version": "1",
    }
    assert decoded["select"] == {"otel.scope.name": "sqlalchemy"}


def test_the_exception_event_names_the_type_fully_qualified_as_python_prints_it() -> None:
    # The semantic conventions' exception.type, and what the SDK writes: the module and the
    # class (Python's own exceptions by their name alone); the Zipkin note keeps the class name.
    tracer = Tracer("shop", backends=[MemoryBackend()])
    span = tracer.start_span("parse", parent=None)
    for error in (json.JSONDecodeError("bad", "{", 0), ValueError("bad value")):
        try:
            raise error
        except (ValueError, json.JSONDecodeError) as raised:
            span.record_exception(raised)
    span.finish()
    (resource,) = ExportTraceServiceRequest.FromString(encode_spans([span])).resource_spans
    events = resource.scope_spans[0].spans[0].events
    exceptions = [{kv.key: kv.value.string_value for kv in event.attributes} for event in events]
    assert [event["exception.type"] for event in exceptions] == [
        "json.decoder.JSONDecodeError",
        "ValueError",
    ]
    assert exceptions[0]["exception.stacktrace"].splitlines()[-1] == (
        "json.decoder.JSONDecodeError: bad: line 1 column 1 (char 0)"
    )
    assert [value for _, value, _ in span.notes_raw] == [
        "JSONDecodeError: bad: line 1 column 1 (char 0)",
        "ValueError: bad value",
    ]


def test_a_status_set_through_opentelemetry_is_exported_as_the_status_alone() -> None:
    # OpenTelemetry's Span.set_status(ERROR, "card declined") tags otel.status_code and error
    # (what Zipkin shows); over OTLP the SDK writes them as the status only, not as attributes.
    tracer = Tracer("shop", backends=[MemoryBackend()])
    span = tracer.start_span("charge", tags={"otel.status_code": "ERROR"}, parent=None)
    span.tags["error"] = "card declined"
    span.finish()
    (resource,) = ExportTraceServiceRequest.FromString(encode_spans([span])).resource_spans
    exported = resource.scope_spans[0].spans[0]
    assert exported.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert exported.status.message == "card declined"
    assert [kv.key for kv in exported.attributes] == []
