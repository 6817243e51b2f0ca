"""Zipkin v2 JSON: the encoder's output, the decoder's validation, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.zipkin_server import validate_list_of_spans
from tomograph import Tracer
from tomograph.model import Endpoint
from tomograph.reporting import zipkin_json
from tomograph.reporting.errors import DecodeError
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

from .conftest import finished_spans, span_dicts

VALID = {"traceId": "000000000000000a", "id": "000000000000000b"}


def _reference_json(spans: list[Span]) -> bytes:
    return json.dumps(
        [zipkin_json.span_to_zipkin(s) for s in spans], separators=(",", ":")
    ).encode()


def _one_span() -> Span:
    memory = MemoryBackend()
    tracer = Tracer("Checkout", backends=[memory])
    with tracer.span(
        "charge",
        kind="client",
        tags={"amount": 12.5, "retry": False, "n": 3},
        remote_endpoint=Endpoint("Bank", "10.1.2.3", None, 443),
    ) as span:
        span.annotate("sent")
    return memory.spans[0]


def test_span_to_zipkin_has_zipkin_v2_fields() -> None:
    span = _one_span()
    record = zipkin_json.span_to_zipkin(span)
    assert record["traceId"] == f"{span.trace_id:032x}"
    assert record["id"] == f"{span.span_id:016x}"
    assert record["kind"] == "CLIENT"
    assert record["timestamp"] == span.timestamp
    assert record["duration"] == span.duration >= 1
    assert record["localEndpoint"] == {"serviceName": "checkout"}
    assert record["remoteEndpoint"] == {"serviceName": "bank", "ipv4": "10.1.2.3", "port": 443}
    assert record["annotations"] == [{"timestamp": span.annotations[0].timestamp, "value": "sent"}]
    assert record["tags"] == {"amount": "12.5", "retry": "false", "n": "3"}
    assert "debug" not in record and "shared" not in record and "parentId" not in record


def test_64_bit_trace_ids_are_16_hex_characters() -> None:
    memory = MemoryBackend()
    with Tracer("svc", backends=[memory], trace_id_bits=64).span("op"):
        pass
    assert len(zipkin_json.span_to_zipkin(memory.spans[0])["traceId"]) == 16


def test_failed_span_without_error_tag_gets_one() -> None:
    memory = MemoryBackend()
    span = Tracer("svc", backends=[memory]).start_span("op")
    span.error = True
    span.finish()
    assert zipkin_json.span_to_zipkin(span)["tags"] == {"error": "true"}
    assert json.loads(zipkin_json.encode_spans([span]))[0]["tags"] == {"error": "true"}


def test_duplicate_notes_are_written_once() -> None:
    memory = MemoryBackend()
    span = Tracer("svc", backends=[memory]).start_span("op")
    span.annotate_at("retry", 1_000_000)
    span.annotate_at("retry", 1_000_000)
    span.annotate_at("retry", 1_000_001)
    span.finish()
    expected = [
        {"timestamp": 1_000_000, "value": "retry"},
        {"timestamp": 1_000_001, "value": "retry"},
    ]
    assert zipkin_json.span_to_zipkin(span)["annotations"] == expected
    assert json.loads(zipkin_json.encode_spans([span]))[0]["annotations"] == expected
    body = json.dumps([{**VALID, "annotations": expected + expected}]).encode()
    assert zipkin_json.decode_spans(body)[0]["annotations"] == expected


def test_invalid_endpoint_addresses_are_left_out() -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    with tracer.span("op", remote_endpoint=Endpoint("peer", "999.1.1.1", "not-v6", 70000)):
        pass
    assert zipkin_json.span_to_zipkin(memory.spans[0])["remoteEndpoint"] == {"serviceName": "peer"}


@settings(max_examples=150, deadline=None)
@given(st.lists(finished_spans(), max_size=4))
def test_fast_encoder_matches_json_dumps_of_span_to_zipkin(spans: list[Span]) -> None:
    assert zipkin_json.encode_spans(spans) == _reference_json(spans)


@settings(max_examples=150, deadline=None)
@given(st.lists(finished_spans(), max_size=4))
def test_decode_of_encoded_spans_gives_span_to_zipkin(spans: list[Span]) -> None:
    expected = [zipkin_json.span_to_zipkin(s) for s in spans]
    assert zipkin_json.decode_spans(zipkin_json.encode_spans(spans)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(span_dicts(), max_size=4))
def test_dicts_round_trip(spans: list[dict[str, Any]]) -> None:
    assert zipkin_json.decode_spans(zipkin_json.encode_dicts(spans)) == spans


def test_decode_normalizes_case_zero_values_and_unknown_fields() -> None:
    body = json.dumps(
        [
            {
                "traceId": "0000000000000000ABCDEF0123456789",
                "parentId": "0000000000000000",
                "id": "00000000000000FF",
                "name": "",
                "timestamp": 0,
                "duration": 0,
                "localEndpoint": {"serviceName": "Web", "port": 0, "ipv4": ""},
                "remoteEndpoint": {},
                "tags": {"n": 5, "ok": True},
                "debug": False,
                "shared": True,
                "somethingNew": [1, 2],
            }
        ]
    ).encode()
    assert zipkin_json.decode_spans(body) == [
        {
            "traceId": "abcdef0123456789",
            "id": "00000000000000ff",
            "localEndpoint": {"serviceName": "web"},
            "tags": {"n": "5", "ok": "true"},
            "shared": True,
        }
    ]


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({"id": "000000000000000b"}, "span 1: traceId is missing"),
        ({"traceId": "000000000000000a"}, "span 1: id is missing"),
        ({**VALID, "traceId": "abc"}, "span 1: traceId must be 16 or 32 hex"),
        ({**VALID, "traceId": "0" * 32}, "span 1: traceId must not be all zeros"),
        ({**VALID, "id": "000000000000000g"}, "span 1: id must be 16 hex"),
        ({**VALID, "id": "0" * 16}, "span 1: id must not be all zeros"),
        ({**VALID, "parentId": 7}, "span 1: parentId must be 16 hex"),
        ({**VALID, "kind": "client"}, "span 1: kind must be one of"),
        ({**VALID, "name": 3}, "span 1: name must be a string"),
        ({**VALID, "timestamp": -1}, "span 1: timestamp must be a non-negative integer"),
        ({**VALID, "timestamp": 1.5}, "span 1: timestamp must be a non-negative integer"),
        ({**VALID, "duration": "10"}, "span 1: duration must be a non-negative integer"),
        ({**VALID, "localEndpoint": []}, "span 1: localEndpoint must be an object"),
        ({**VALID, "remoteEndpoint": {"ipv4": "1.2.3"}}, "span 1: remoteEndpoint.ipv4"),
        ({**VALID, "localEndpoint": {"ipv6": "::g"}}, "span 1: localEndpoint.ipv6"),
        ({**VALID, "localEndpoint": {"port": 65536}}, "span 1: localEndpoint.port"),
        ({**VALID, "localEndpoint": {"serviceName": 1}}, "span 1: localEndpoint.serviceName"),
        ({**VALID, "annotations": {}}, "span 1: annotations must be a list"),
        ({**VALID, "annotations": [{"value": "x"}]}, "span 1: annotations[0].timestamp"),
        ({**VALID, "annotations": [{"timestamp": 1}]}, "span 1: annotations[0].value"),
        ({**VALID, "annotations": [3]}, "span 1: annotations[0] must be an object"),
        ({**VALID, "tags": []}, "span 1: tags must be an object"),
        ({**VALID, "tags": {"a": None}}, "span 1: tags['a'] must be a string"),
        ({**VALID, "debug": 1}, "span 1: debug must be true or false"),
        ("span", "span 1: must be a JSON object"),
    ],
)
def test_decode_error_names_span_index_and_field(span: Any, message: str) -> None:
    body = json.dumps([VALID, span]).encode()
    with pytest.raises(DecodeError) as raised:
        zipkin_json.decode_spans(body)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    "body", [b"", b"{", b'{"traceId": 1}', b"[NaN]", b"\xff\xfe\x00", b"[" * 100_000]
)
def test_decode_rejects_bodies_that_are_not_a_json_list(body: bytes) -> None:
    with pytest.raises(DecodeError):
        zipkin_json.decode_spans(body)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        result = zipkin_json.decode_spans(data)
    except DecodeError:
        return
    validate_list_of_spans(result)  # what decodes is valid Zipkin, already normalized
    assert zipkin_json.decode_spans(json.dumps(result).encode()) == result


@settings(max_examples=300, deadline=None)
@given(span_dicts(), st.data())
def test_mutated_bodies_decode_or_raise_decode_error(
    span: dict[str, Any], data: st.DataObject
) -> None:
    body = bytearray(zipkin_json.encode_dicts([span]))
    position = data.draw(st.integers(0, len(body) - 1))
    body[position] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(position, len(body)))]
    try:
        result = zipkin_json.decode_spans(bytes(body))
    except DecodeError:
        return
    # Whatever is accepted is normalized: it survives another round trip unchanged.
    assert zipkin_json.decode_spans(zipkin_json.encode_dicts(result)) == result
