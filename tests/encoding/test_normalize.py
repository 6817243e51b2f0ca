"""One normalization: every decoder returns spans as Zipkin stores them, in Zipkin's field order.

Payloads are written here by hand (JSON text) or with the official message classes (protoc's
classes from Zipkin's own ``zipkin.proto``, and ``opentelemetry-proto``), never by the encoders
under test.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest

from tomograph.encoding import zipkin_json, zipkin_proto
from tomograph.encoding.normalize import normalize_annotations, normalize_trace_id, span_dict

# Zipkin writes span fields in this order (zipkin2.internal.V2SpanWriter).
ZIPKIN_ORDER = [
    "traceId",
    "parentId",
    "id",
    "kind",
    "name",
    "timestamp",
    "duration",
    "debug",
    "shared",
    "localEndpoint",
    "remoteEndpoint",
    "annotations",
    "tags",
]

#: One span with every field, as Zipkin stores it.
STORED = {
    "traceId": "00000000000000ab",
    "parentId": "0000000000000001",
    "id": "00000000000000cd",
    "kind": "CLIENT",
    "name": "get /cart",
    "timestamp": 1_700_000_000_000_000,
    "duration": 250,
    "debug": True,
    "shared": True,
    "localEndpoint": {"serviceName": "shop", "ipv4": "10.0.0.1", "port": 8080},
    "remoteEndpoint": {"serviceName": "cart-db", "ipv6": "2001:db8::1"},
    "annotations": [
        {"timestamp": 1_700_000_000_000_010, "value": "sent"},
        {"timestamp": 1_700_000_000_000_200, "value": "received"},
    ],
    "tags": {"http.method": "GET"},
}


def _in_zipkin_order(span: dict[str, Any]) -> bool:
    return list(span) == [key for key in ZIPKIN_ORDER if key in span]


def test_zipkin_json_decodes_to_the_stored_form_in_zipkin_order() -> None:
    # Fields in another order, upper-case names and ids, a 128-bit id with a zero high half,
    # annotations out of order and repeated.
    body = b"""[{
        "tags": {"http.method": "GET"},
        "annotations": [
            {"timestamp": 1700000000000200, "value": "received"},
            {"timestamp": 1700000000000010, "value": "sent"},
            {"timestamp": 1700000000000200, "value": "received"}
        ],
        "remoteEndpoint": {"serviceName": "Cart-DB", "ipv6": "2001:DB8:0::1"},
        "localEndpoint": {"serviceName": "SHOP", "ipv4": "10.0.0.1", "port": 8080},
        "shared": true, "debug": true, "duration": 250, "timestamp": 1700000000000000,
        "name": "GET /Cart", "kind": "CLIENT", "id": "00000000000000CD",
        "parentId": "0000000000000001", "traceId": "000000000000000000000000000000AB"
    }]"""
    [span] = zipkin_json.decode_spans(body)
    assert span == STORED
    assert _in_zipkin_order(span)


def test_zipkin_proto_decodes_to_the_stored_form_in_zipkin_order(zipkin_pb2: ModuleType) -> None:
    message = zipkin_pb2.ListOfSpans()
    out = message.spans.add()
    out.trace_id = bytes.fromhex("00" * 15 + "ab")
    out.parent_id = bytes.fromhex("0000000000000001")
    out.id = bytes.fromhex("00000000000000cd")
    out.kind = zipkin_pb2.Span.Kind.Value("CLIENT")
    out.name = "GET /Cart"
    out.timestamp = 1_700_000_000_000_000
    out.duration = 250
    out.local_endpoint.service_name = "SHOP"
    out.local_endpoint.ipv4 = bytes([10, 0, 0, 1])
    out.local_endpoint.port = 8080
    out.remote_endpoint.service_name = "Cart-DB"
    out.remote_endpoint.ipv6 = bytes.fromhex("20010db8" + "00" * 11 + "01")
    for stamp, value in ((200, "received"), (10, "sent"), (200, "received")):
        out.annotations.add(timestamp=1_700_000_000_000_000 + stamp, value=value)
    out.tags["http.method"] = "GET"
    out.debug = True
    out.shared = True
    [span] = zipkin_proto.decode_spans(message.SerializeToString())
    assert span == STORED
    assert _in_zipkin_order(span)


def test_otlp_decodes_in_zipkin_order_with_names_lower_cased() -> None:
    pytest.importorskip("opentelemetry.proto")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1 import trace_pb2

    from tomograph.encoding import otlp

    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value="SHOP"))
    )
    span = resource.scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("00" * 15 + "ab")
    span.span_id = bytes.fromhex("00000000000000cd")
    span.name = "GET /Cart"
    span.start_time_unix_nano = 1_700_000_000_000_000_000
    span.end_time_unix_nano = 1_700_000_000_000_250_000
    for stamp, name in ((200, "received"), (10, "sent"), (200, "received")):
        span.events.append(
            trace_pb2.Span.Event(time_unix_nano=1_700_000_000_000_000_000 + stamp * 1000, name=name)
        )
    [decoded] = otlp.decode_spans(request.SerializeToString())
    assert decoded == {
        "traceId": "00000000000000ab",
        "id": "00000000000000cd",
        "name": "get /cart",
        "timestamp": 1_700_000_000_000_000,
        "duration": 250,
        "localEndpoint": {"serviceName": "shop"},
        "annotations": STORED["annotations"],
    }
    assert _in_zipkin_order(decoded)


def test_one_span_through_json_and_proto_is_one_dict(zipkin_pb2: ModuleType) -> None:
    from_json = zipkin_json.decode_spans(json.dumps([STORED]).encode())
    message = zipkin_pb2.ListOfSpans()
    out = message.spans.add()
    out.trace_id = bytes.fromhex(STORED["traceId"])
    out.id = bytes.fromhex(STORED["id"])
    out.name = "Mixed-Case"
    [from_proto] = zipkin_proto.decode_spans(message.SerializeToString())
    [from_text] = zipkin_json.decode_spans(
        json.dumps(
            [{"traceId": STORED["traceId"], "id": STORED["id"], "name": "Mixed-Case"}]
        ).encode()
    )
    assert from_json == [STORED]
    assert (
        from_proto
        == from_text
        == {"traceId": "00000000000000ab", "id": "00000000000000cd", "name": "mixed-case"}
    )


def test_span_dict_leaves_out_what_is_empty_and_roots_have_no_parent() -> None:
    assert span_dict(
        "A" * 16,
        "B" * 16,
        parent_id="0" * 16,
        name="",
        local_endpoint={"serviceName": "", "port": 0},
        remote_endpoint={},
        annotations=[],
        tags={},
    ) == {"traceId": "a" * 16, "id": "b" * 16}


def test_trace_ids_with_a_zero_high_half_are_16_characters() -> None:
    assert normalize_trace_id("0" * 16 + "ABCDEF0123456789") == "abcdef0123456789"
    assert normalize_trace_id("1" + "0" * 31) == "1" + "0" * 31
    assert normalize_trace_id("00000000000000AB") == "00000000000000ab"


def test_annotations_are_a_set_in_time_order() -> None:
    assert normalize_annotations([(3, "c"), (1, "b"), (1, "a"), (3, "c")]) == [
        {"timestamp": 1, "value": "a"},
        {"timestamp": 1, "value": "b"},
        {"timestamp": 3, "value": "c"},
    ]
