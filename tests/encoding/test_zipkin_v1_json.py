"""Zipkin v1 JSON: decoding what v1 tracers send, clear errors, round trips, the v1 marker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.encoding.errors import DecodeError
from tomograph.encoding.zipkin_json import decode_spans as decode_v2
from tomograph.encoding.zipkin_v1 import V1Annotation, V1BinaryAnnotation, V1Span
from tomograph.encoding.zipkin_v1_json import decode_spans, encode_spans, parse_spans, v1_marker

WEB = {"serviceName": "web", "ipv4": "10.0.0.1"}
API = {"serviceName": "api", "ipv4": "10.0.0.2", "port": 9000}


def body(*spans: dict[str, Any]) -> bytes:
    return json.dumps(list(spans)).encode()


#: What zipkin-js 0.22 writes for a client span (its JSON_V1 encoder), field for field.
ZIPKIN_JS_CLIENT = {
    "traceId": "5af7183fb1d4cf5f",
    "parentId": "6b221d5bc9e6496c",
    "id": "352bff9a74ca9ad2",
    "name": "get",
    "timestamp": 1556604172355737,
    "duration": 1431,
    "annotations": [
        {"value": "cs", "timestamp": 1556604172355737, "endpoint": {"serviceName": "Web"}},
        {"value": "cr", "timestamp": 1556604172357168, "endpoint": {"serviceName": "Web"}},
    ],
    "binaryAnnotations": [
        {"key": "http.path", "value": "/api", "endpoint": {"serviceName": "Web"}},
        {"key": "sa", "value": True, "endpoint": {"serviceName": "api", "port": 9000}},
    ],
}


def test_zipkin_js_client_span_becomes_a_v2_client_span() -> None:
    assert decode_spans(body(ZIPKIN_JS_CLIENT)) == [
        {
            "traceId": "5af7183fb1d4cf5f",
            "parentId": "6b221d5bc9e6496c",
            "id": "352bff9a74ca9ad2",
            "kind": "CLIENT",
            "name": "get",
            "timestamp": 1556604172355737,
            "duration": 1431,
            "localEndpoint": {"serviceName": "web"},
            "remoteEndpoint": {"serviceName": "api", "port": 9000},
            "tags": {"http.path": "/api"},
        }
    ]


def test_decoded_spans_have_the_shape_v2_decoding_gives() -> None:
    (span,) = decode_spans(body(ZIPKIN_JS_CLIENT))
    assert decode_v2(json.dumps([span]).encode()) == [span]


def test_typed_values_become_tag_text_and_false_addresses_are_dropped() -> None:
    span = {
        "traceId": "000000000000000a",
        "id": "000000000000000b",
        "binaryAnnotations": [
            {"key": "retry", "value": False, "endpoint": WEB},
            {"key": "http.status_code", "value": 200, "endpoint": WEB},
            {"key": "ratio", "value": 0.5, "endpoint": WEB},
            {"key": "sa", "value": False, "endpoint": API},
            {"key": "nothing", "value": None},
        ],
    }
    (decoded,) = decode_spans(body(span))
    assert decoded["tags"] == {"retry": "false", "http.status_code": "200", "ratio": "0.5"}
    assert decoded["localEndpoint"] == WEB
    assert "remoteEndpoint" not in decoded


def test_a_128_bit_trace_id_with_zero_high_bits_is_written_as_16_characters() -> None:
    span = {"traceId": "0" * 16 + "00000000000000ab", "id": "00000000000000cd"}
    assert parse_spans(body(span))[0].trace_id == "00000000000000ab"


@pytest.mark.parametrize(
    ("span", "message"),
    [
        ({"id": "000000000000000b"}, "span 1: traceId is missing"),
        ({"traceId": "xyz", "id": "000000000000000b"}, "span 1: traceId must be 16 or 32"),
        ({"traceId": "000000000000000a", "id": "0" * 16}, "span 1: id must not be all zeros"),
        (
            {"traceId": "000000000000000a", "id": "000000000000000b", "timestamp": "1"},
            "span 1: timestamp must be an integer",
        ),
        (
            {"traceId": "000000000000000a", "id": "000000000000000b", "annotations": [{}]},
            "span 1: annotations[0] needs a timestamp and a value",
        ),
        (
            {
                "traceId": "000000000000000a",
                "id": "000000000000000b",
                "binaryAnnotations": [{"key": "k", "value": "v", "endpoint": {"ipv4": "x"}}],
            },
            "span 1: binaryAnnotations[0].endpoint.ipv4 is not an IPv4 address",
        ),
        (
            {
                "traceId": "000000000000000a",
                "id": "000000000000000b",
                "binaryAnnotations": [{"value": "v"}],
            },
            "span 1: binaryAnnotations[0].key must be a string",
        ),
    ],
)
def test_errors_name_the_span_index_and_the_field(span: dict[str, Any], message: str) -> None:
    good = {"traceId": "000000000000000a", "id": "000000000000000b"}
    with pytest.raises(DecodeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_spans(body(good, span))


@pytest.mark.parametrize("data", [b"", b"{}", b"[1]", b"[NaN]", b"[" * 100_000, b"\xff"])
def test_malformed_bodies_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_spans(data)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_decode_error(data: bytes) -> None:
    try:
        decode_spans(data)
    except DecodeError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
span_keys = st.sampled_from(
    ["traceId", "id", "parentId", "name", "timestamp", "duration", "debug", "annotations",
     "binaryAnnotations", "endpoint", "key", "value", "serviceName", "ipv4", "port"]
)  # fmt: skip


@given(st.lists(st.dictionaries(span_keys, json_values, max_size=8), max_size=3))
def test_arbitrary_json_raises_nothing_but_decode_error(spans: list[dict[str, Any]]) -> None:
    try:
        decode_spans(json.dumps(spans).encode())
    except DecodeError:
        pass


hex16 = st.integers(1, 2**64 - 1).map(lambda n: f"{n:016x}")
endpoints = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "serviceName": st.text(min_size=1).map(str.lower).filter(lambda s: s == s.lower()),
        "ipv4": st.ip_addresses(v=4).map(str),
        "ipv6": st.ip_addresses(v=6).map(lambda a: a.compressed),
        "port": st.integers(1, 65535),
    },
).map(lambda e: e or None)
micros = st.integers(0, 2**62)
v1_spans = st.builds(
    V1Span,
    trace_id=st.one_of(hex16, st.tuples(hex16, hex16).map("".join)),
    id=hex16,
    parent_id=st.none() | hex16,
    name=st.text(),
    timestamp=micros,
    duration=micros,
    annotations=st.lists(st.builds(V1Annotation, micros, st.text(), endpoints), max_size=4),
    binary_annotations=st.lists(
        st.builds(
            V1BinaryAnnotation,
            st.text().filter(lambda k: k not in ("ca", "sa", "ma")),
            st.text(),
            endpoints,
        )
        | st.builds(
            V1BinaryAnnotation,
            st.sampled_from(["ca", "sa", "ma"]),
            st.none(),
            endpoints.filter(bool),
        ),
        max_size=4,
    ),
    debug=st.booleans(),
)


@given(st.lists(v1_spans, max_size=3))
def test_parse_reads_back_what_encode_writes(spans: list[V1Span]) -> None:
    assert parse_spans(encode_spans(spans)) == spans


@given(st.lists(v1_spans, max_size=3))
def test_every_v1_span_decodes_to_at_least_one_v2_span(spans: list[V1Span]) -> None:
    decoded = decode_spans(encode_spans(spans))
    assert {(s["traceId"], s["id"]) for s in decoded} == {(s.trace_id, s.id) for s in spans}


def test_v1_marker_names_binary_annotations_and_annotation_endpoints() -> None:
    assert v1_marker(body(ZIPKIN_JS_CLIENT)) == "span 0 has binaryAnnotations"
    notes_only = {"traceId": "a", "id": "b", "annotations": ZIPKIN_JS_CLIENT["annotations"]}
    assert v1_marker(body({"traceId": "a", "id": "b"}, notes_only)) == (
        "span 1 has annotations[0].endpoint"
    )


def test_v1_marker_does_not_take_v2_for_v1() -> None:
    v2 = {
        "traceId": "a",
        "id": "b",
        "localEndpoint": {"serviceName": "endpoint"},
        "annotations": [{"timestamp": 1, "value": "endpoint"}],
        "tags": {"binaryAnnotations": "endpoint"},
    }
    assert v1_marker(body(v2)) is None
    assert v1_marker(b'["endpoint", 1') is None  # not JSON: v2 decoding reports it
