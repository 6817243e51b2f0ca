"""Zipkin v2 proto3: checked against classes that protoc generates from Zipkin's own schema."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tomograph.encoding import zipkin_json, zipkin_proto
from tomograph.encoding.errors import DecodeError
from tomograph.span import Span

from .conftest import finished_spans, span_dicts

fixture_ok = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _to_protobuf(pb2: ModuleType, spans: list[dict[str, Any]]) -> bytes:
    """Build a ListOfSpans with the generated classes, from normalized dicts."""
    import ipaddress

    message = pb2.ListOfSpans()
    for span in spans:
        out = message.spans.add()
        out.trace_id = bytes.fromhex(span["traceId"])
        out.id = bytes.fromhex(span["id"])
        if "parentId" in span:
            out.parent_id = bytes.fromhex(span["parentId"])
        if "kind" in span:
            out.kind = pb2.Span.Kind.Value(span["kind"])
        out.name = span.get("name", "")
        out.timestamp = span.get("timestamp", 0)
        out.duration = span.get("duration", 0)
        for key, endpoint in (
            ("localEndpoint", out.local_endpoint),
            ("remoteEndpoint", out.remote_endpoint),
        ):
            if key in span:
                fields = span[key]
                endpoint.service_name = fields.get("serviceName", "")
                if "ipv4" in fields:
                    endpoint.ipv4 = ipaddress.IPv4Address(fields["ipv4"]).packed
                if "ipv6" in fields:
                    endpoint.ipv6 = ipaddress.IPv6Address(fields["ipv6"]).packed
                endpoint.port = fields.get("port", 0)
        for note in span.get("annotations", []):
            out.annotations.add(timestamp=note["timestamp"], value=note["value"])
        for key, value in span.get("tags", {}).items():
            out.tags[key] = value
        out.debug = span.get("debug", False)
        out.shared = span.get("shared", False)
    return bytes(message.SerializeToString())


@fixture_ok
@given(st.lists(span_dicts(), max_size=4))
def test_dicts_round_trip(spans: list[dict[str, Any]]) -> None:
    assert zipkin_proto.decode_spans(zipkin_proto.encode_dicts(spans)) == spans


@fixture_ok
@given(st.lists(finished_spans(), max_size=4))
def test_spans_decode_to_the_same_dicts_as_json(spans: list[Span]) -> None:
    expected = zipkin_json.decode_spans(zipkin_json.encode_spans(spans))
    assert zipkin_proto.decode_spans(zipkin_proto.encode_spans(spans)) == expected


@fixture_ok
@given(spans=st.lists(finished_spans(), max_size=4))
def test_protobuf_reads_the_spans_as_they_were_named(
    zipkin_pb2: ModuleType, spans: list[Span]
) -> None:
    parsed = zipkin_pb2.ListOfSpans.FromString(zipkin_proto.encode_spans(spans))
    assert [(s.id.hex(), s.name) for s in parsed.spans] == [
        (f"{span.span_id:016x}", span.name) for span in spans
    ]


@fixture_ok
@given(spans=st.lists(span_dicts(), max_size=4))
def test_protobuf_reads_what_we_write(zipkin_pb2: ModuleType, spans: list[dict[str, Any]]) -> None:
    parsed = zipkin_pb2.ListOfSpans.FromString(zipkin_proto.encode_dicts(spans))
    assert len(parsed.spans) == len(spans)
    for ours, theirs in zip(spans, parsed.spans, strict=True):
        assert theirs.trace_id.hex() == ours["traceId"]
        assert theirs.id.hex() == ours["id"]
        assert theirs.parent_id.hex() == ours.get("parentId", "")
        assert theirs.name == ours.get("name", "")
        assert theirs.timestamp == ours.get("timestamp", 0)
        assert theirs.duration == ours.get("duration", 0)
        assert dict(theirs.tags) == ours.get("tags", {})
        assert [(a.timestamp, a.value) for a in theirs.annotations] == [
            (a["timestamp"], a["value"]) for a in ours.get("annotations", [])
        ]
        assert theirs.local_endpoint.service_name == ours.get("localEndpoint", {}).get(
            "serviceName", ""
        )
        assert theirs.remote_endpoint.port == ours.get("remoteEndpoint", {}).get("port", 0)
        assert theirs.debug == ours.get("debug", False)
        assert theirs.shared == ours.get("shared", False)


@fixture_ok
@given(spans=st.lists(span_dicts(), max_size=4))
def test_we_read_what_protobuf_writes(zipkin_pb2: ModuleType, spans: list[dict[str, Any]]) -> None:
    assert zipkin_proto.decode_spans(_to_protobuf(zipkin_pb2, spans)) == spans


def test_unknown_fields_are_skipped() -> None:
    body = zipkin_proto.encode_dicts([{"traceId": "000000000000000a", "id": "000000000000000b"}])
    # field 99 varint, field 98 fixed32, field 97 fixed64 at list level and inside the span
    extra = b"\x98\x06\x01" + b"\x95\x06abcd" + b"\x89\x06" + b"\x00" * 8
    inner = body[2:] + extra
    rebuilt = b"\x0a" + bytes([len(inner)]) + inner + extra
    assert zipkin_proto.decode_spans(rebuilt) == zipkin_proto.decode_spans(body)


GOOD = bytes.fromhex("0a08000000000000000a1a08000000000000000b")


def _wrap(span: bytes) -> bytes:
    return b"\x0a" + bytes([len(span)]) + span


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x0a", "body: truncated varint"),
        (b"\x0a\x80", "body: truncated varint"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "body: varint longer than 10 bytes"),
        (b"\x0a\x50" + GOOD, "body: length 80 runs past the end"),
        (b"\x0b", "body: spans has wire type 3, expected 2"),  # a start-group wire type
        (b"\x00", "body: field number 0 is invalid"),
        (b"\x0f", "body: spans has wire type 7"),
        (b"\x17", "body: field 2 has unsupported wire type 7"),
        (_wrap(GOOD[:10]), "span 0: id must be 8 bytes, not 0"),
        (_wrap(b"\x0a\x03abc" + GOOD[10:]), "span 0: traceId must be 8 or 16 bytes, not 3"),
        (_wrap(GOOD + b"\x12\x02ab"), "span 0: parentId must be 8 bytes"),
        (_wrap(GOOD + b"\x08\x01"), "span 0: traceId has wire type 0, expected 2"),
        (_wrap(GOOD + b"\x20\x09"), "span 0: kind 9 is not a known span kind"),
        (_wrap(GOOD + b"\x2a\x02\xff\xfe"), "span 0: name is not valid UTF-8"),
        (_wrap(GOOD + b"\x31\x01\x02"), "span 0: truncated fixed64"),
        (_wrap(GOOD + b"\x42\x03\x12\x01\x01"), "span 0: localEndpoint: ipv4 must be 4 bytes"),
        (_wrap(GOOD + b"\x4a\x04\x20\xff\xff\x07"), "span 0: remoteEndpoint: port must be 0 to"),
        (_wrap(GOOD + b"\x52\x02\x09\x00"), "span 0: annotations[0]: truncated fixed64"),
        (_wrap(GOOD + b"\x5a\x02\x08\x01"), "span 0: tags: tag key has wire type 0"),
        (_wrap(GOOD.replace(b"\x0b", b"\x00")), "span 0: id must not be all zeros"),
    ],
)
def test_malformed_input_raises_decode_error_naming_the_place(body: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as raised:
        zipkin_proto.decode_spans(body)
    assert str(raised.value).startswith(message), str(raised.value)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        result = zipkin_proto.decode_spans(data)
    except DecodeError:
        return
    assert zipkin_proto.decode_spans(zipkin_proto.encode_dicts(result)) == result


@fixture_ok
@given(span=span_dicts(), data=st.data())
def test_mutations_that_protobuf_rejects_are_rejected(
    zipkin_pb2: ModuleType, span: dict[str, Any], data: st.DataObject
) -> None:
    from google.protobuf.message import DecodeError as ProtobufDecodeError

    body = bytearray(zipkin_proto.encode_dicts([span]))
    position = data.draw(st.integers(0, len(body) - 1))
    body[position] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(position, len(body)))]
    try:
        zipkin_pb2.ListOfSpans.FromString(bytes(body))
    except ProtobufDecodeError:
        with pytest.raises(DecodeError):
            zipkin_proto.decode_spans(bytes(body))
        return
    try:
        result = zipkin_proto.decode_spans(bytes(body))
    except DecodeError:
        return  # stricter than protobuf: bad id lengths, zero ids, unknown kinds
    assert zipkin_proto.decode_spans(zipkin_proto.encode_dicts(result)) == result
