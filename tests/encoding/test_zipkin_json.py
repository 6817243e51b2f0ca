"""Zipkin v2 JSON: the encoder's output, the decoder's validation, round trips.

The reference for what a span becomes is written here, from Zipkin's v2 model (zipkin2-api.yaml
and Zipkin's own JSON rules), never taken from the module under test; bodies are read back with
Python's own JSON parser. Validation of every body against Zipkin's OpenAPI ``ListOfSpans`` is
in test_zipkin.py.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from support.zipkin_server import validate_list_of_spans
from tomograph import Tracer
from tomograph.encoding import zipkin_json
from tomograph.encoding.errors import DecodeError
from tomograph.model import Endpoint
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

from .conftest import finished_spans, span_dicts

VALID = {"traceId": "000000000000000a", "id": "000000000000000b"}


def _address(text: str | None, version: int) -> str | None:
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    return address.compressed if address.version == version else None


def _endpoint(endpoint: Endpoint | None) -> dict[str, Any] | None:
    """Zipkin's Endpoint: a lower-case serviceName, valid addresses, a port 1 to 65535."""
    if endpoint is None:
        return None
    fields: dict[str, Any] = {}
    if endpoint.service_name:
        fields["serviceName"] = endpoint.service_name.lower()
    for key, text, version in (("ipv4", endpoint.ipv4, 4), ("ipv6", endpoint.ipv6, 6)):
        address = _address(text, version)
        if address:
            fields[key] = address
    if endpoint.port and 0 < endpoint.port <= 65535:
        fields["port"] = endpoint.port
    return fields or None


def expected_zipkin(span: Span) -> dict[str, Any]:
    """The Zipkin v2 JSON object of a finished span, from the span's own fields.

    Ids lower hex (a trace id that fits 64 bits in 16 characters), epoch-µs timestamp, duration
    at least 1 µs, annotations a set of (timestamp, value), tags strings (booleans ``true`` /
    ``false``), ``error: "true"`` for a failed span without an error tag, empty fields left out.
    """
    record: dict[str, Any] = {
        "traceId": f"{span.trace_id:016x}" if span.trace_id < 2**64 else f"{span.trace_id:032x}",
        "id": f"{span.span_id:016x}",
        "timestamp": span.timestamp,
        "duration": max(1, span.duration or 0),
    }
    if span.parent_id:
        record["parentId"] = f"{span.parent_id:016x}"
    if span.kind is not None:
        record["kind"] = span.kind.name
    if span.name:
        record["name"] = span.name
    for key, endpoint in (
        ("localEndpoint", span.local_endpoint),
        ("remoteEndpoint", span.remote_endpoint),
    ):
        fields = _endpoint(endpoint)
        if fields:
            record[key] = fields
    notes = list(dict.fromkeys((note.timestamp, note.value) for note in span.annotations))
    if notes:
        record["annotations"] = [{"timestamp": when, "value": value} for when, value in notes]
    tags = {
        key: ("true" if value else "false") if isinstance(value, bool) else str(value)
        for key, value in span.tags.items()
    }
    if span.error:
        tags.setdefault("error", "true")
    if tags:
        record["tags"] = tags
    if span.debug:
        record["debug"] = True
    if span.shared:
        record["shared"] = True
    return record


def decoded_zipkin(span: Span) -> dict[str, Any]:
    """What a decoder returns for a finished span: its Zipkin v2 object with Zipkin's ingest
    rules applied (the span name lower-cased, annotations sorted by time)."""
    record = expected_zipkin(span)
    if "name" in record:
        record["name"] = record["name"].lower()
    if "annotations" in record:
        record["annotations"].sort(key=lambda note: (note["timestamp"], note["value"]))
    return record


def _encoded(span: Span) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(zipkin_json.encode_spans([span]))[0]
    return record


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


def test_encoded_span_has_zipkin_v2_fields() -> None:
    span = _one_span()
    record = _encoded(span)
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
    assert len(_encoded(memory.spans[0])["traceId"]) == 16


def test_failed_span_without_error_tag_gets_one() -> None:
    memory = MemoryBackend()
    span = Tracer("svc", backends=[memory]).start_span("op")
    span.error = True
    span.finish()
    assert _encoded(span)["tags"] == {"error": "true"}


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
    assert _encoded(span)["annotations"] == expected
    body = json.dumps([{**VALID, "annotations": expected + expected}]).encode()
    assert zipkin_json.decode_spans(body)[0]["annotations"] == expected


def test_invalid_endpoint_addresses_are_left_out() -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    with tracer.span("op", remote_endpoint=Endpoint("peer", "999.1.1.1", "not-v6", 70000)):
        pass
    assert _encoded(memory.spans[0])["remoteEndpoint"] == {"serviceName": "peer"}


@settings(max_examples=150, deadline=None)
@given(st.lists(finished_spans(), max_size=4))
def test_encoded_spans_are_the_zipkin_model_of_each_span(spans: list[Span]) -> None:
    assert json.loads(zipkin_json.encode_spans(spans)) == [expected_zipkin(s) for s in spans]


@settings(max_examples=150, deadline=None)
@given(st.lists(finished_spans(), max_size=4))
def test_decode_of_encoded_spans_gives_the_normalized_zipkin_model(spans: list[Span]) -> None:
    expected = [decoded_zipkin(s) for s in spans]
    assert zipkin_json.decode_spans(zipkin_json.encode_spans(spans)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(span_dicts(), max_size=4))
def test_normalized_dicts_decode_unchanged(spans: list[dict[str, Any]]) -> None:
    assert zipkin_json.decode_spans(json.dumps(spans).encode()) == spans


def test_decode_normalizes_case_zero_values_and_unknown_fields() -> None:
    body = json.dumps(
        [
            {
                "traceId": "0000000000000000ABCDEF0123456789",
                "parentId": "0000000000000000",
                "id": "00000000000000FF",
                "name": "",
                "timestamp": 0,
                "annotations": [{"timestamp": 2, "value": "b"}, {"timestamp": 1, "value": "a"}],
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
            "shared": True,
            "localEndpoint": {"serviceName": "web"},
            "annotations": [{"timestamp": 1, "value": "a"}, {"timestamp": 2, "value": "b"}],
            "tags": {"n": "5", "ok": "true"},
        }
    ]


def test_decode_lower_cases_span_and_service_names() -> None:
    body = (
        b'[{"traceId":"000000000000000a","id":"000000000000000b","name":"GET /Cart",'
        b'"localEndpoint":{"serviceName":"Web-Shop"},"remoteEndpoint":{"serviceName":"DB"}}]'
    )
    [span] = zipkin_json.decode_spans(body)
    assert span["name"] == "get /cart"
    assert span["localEndpoint"] == {"serviceName": "web-shop"}
    assert span["remoteEndpoint"] == {"serviceName": "db"}


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
    # What the decoder accepts, Python's own parser reads as a list of as many span objects.
    parsed = json.loads(data)
    assert isinstance(parsed, list) and len(parsed) == len(result)
    assert all(isinstance(item, dict) for item in parsed)
    validate_list_of_spans(result)  # what decodes is valid Zipkin, already normalized
    assert zipkin_json.decode_spans(json.dumps(result).encode()) == result


@settings(max_examples=300, deadline=None)
@given(span_dicts(), st.data())
def test_mutated_bodies_decode_or_raise_decode_error(
    span: dict[str, Any], data: st.DataObject
) -> None:
    body = bytearray(json.dumps([span]).encode())
    position = data.draw(st.integers(0, len(body) - 1))
    body[position] = data.draw(st.integers(0, 255))
    body = body[: data.draw(st.integers(position, len(body)))]
    try:
        result = zipkin_json.decode_spans(bytes(body))
    except DecodeError:
        return
    # Whatever is accepted is normalized: it survives another round trip unchanged.
    assert zipkin_json.decode_spans(json.dumps(result).encode()) == result


# Each field of a span object as senders write it, and the odd forms the decoder must still
# check or normalize the same way (case, zeros, wrong types, lookalike numbers, surrogates).
_ODD_FIELDS: dict[str, list[Any]] = {
    "traceId": [
        "00000000000000a1",
        "0123456789abcdef0123456789abcdef",
        "0000000000000000abcdef0123456789",
        "ABCDEF0123456789",
        "0" * 16,
        "0" * 32,
        "abc",
        "g" * 16,
        7,
        None,
    ],
    "id": ["00000000000000b2", "00000000000000B2", "0" * 16, "xyz", 12, None],
    "parentId": ["00000000000000c3", "0" * 16, "00000000000000C3", "c3", 5, None],
    "kind": ["CLIENT", "SERVER", "client", "", 1, None],
    "name": ["get /Cart", "", "caf\u00e9", "\ud800", 3, False, None],
    "timestamp": [1_700_000_000_000_000, 0, -1, 2**64, 2**64 - 1, 1.5, True, "1", None],
    "duration": [150, 0, -5, 2**63, 1.0, False, None],
    "debug": [True, False, 1, "true", None],
    "shared": [True, False, 0, None],
    "localEndpoint": [
        {"serviceName": "Web", "ipv4": "10.0.0.1", "port": 8080},
        {"serviceName": "web", "port": True},
        {"serviceName": "web", "port": 1},
        {"port": 80.0},
        {"port": 80},
        {"ipv4": "1.2.3"},
        {"ipv6": "::1", "serviceName": ""},
        {"serviceName": 1},
        {"serviceName": "db", "extra": [1]},
        {},
        [],
        None,
    ],
    "remoteEndpoint": [{"serviceName": "DB"}, {"port": 65536}, {"ipv4": ""}, "db", None],
    "annotations": [
        [{"timestamp": 2, "value": "b"}, {"timestamp": 1, "value": "a"}],
        [{"timestamp": 1, "value": "a"}, {"timestamp": 1, "value": "a"}],
        [{"timestamp": 0, "value": "\ud83d"}],
        [{"timestamp": -1, "value": "a"}],
        [{"timestamp": 1, "value": 2}],
        [{"value": "a"}],
        [3],
        [],
        {},
        None,
    ],
    "tags": [
        {"http.method": "GET", "component": "bench"},
        {"n": 5, "ok": True, "f": 1.5},
        {"caf\u00e9": "cr\u00e8me", "lone": "\ud800"},
        {"big": 2**70},
        {"a": None},
        {"a": [1]},
        {"a": {"b": "c"}},
        {},
        [],
        None,
    ],
}


@st.composite
def _span_objects(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for field, values in _ODD_FIELDS.items():
        # the plain form half of the time: odd forms mostly meet spans that are otherwise plain
        value = draw(st.just(values[0]) | st.sampled_from([*values, "absent"]))
        if value != "absent":
            raw[field] = value
    return raw


def _each_careful(objects: list[dict[str, Any]]) -> list[Any]:
    """What span_from_object, the decoder's careful path, makes of each object alone."""
    answers: list[Any] = []
    for index, raw in enumerate(objects):
        try:
            answers.append(zipkin_json.span_from_object(index, raw))
        except DecodeError as error:
            return [*answers, str(error)]
    return answers


_PLAIN = {"traceId": "00000000000000a1", "id": "00000000000000b2"}


@settings(max_examples=500, deadline=None)
@given(st.lists(_span_objects(), min_size=1, max_size=6))
@example([{**_PLAIN, "localEndpoint": {"port": 1}}, {**_PLAIN, "localEndpoint": {"port": True}}])
@example([{**_PLAIN, "remoteEndpoint": {"port": 80}}, {**_PLAIN, "remoteEndpoint": {"port": 80.0}}])
@example([_PLAIN, {**_PLAIN, "traceId": "0" * 16}])
def test_a_batch_decodes_as_each_of_its_spans_checked_alone(objects: list[dict[str, Any]]) -> None:
    # spans of a batch share checked trace ids and endpoints: the answer must be each span's own
    body = json.dumps(objects).encode()
    try:
        decoded: list[Any] = zipkin_json.decode_spans(body)
    except DecodeError as error:
        decoded = [str(error)]
    careful = _each_careful(json.loads(body))
    if isinstance(careful[-1], str):
        assert decoded == careful[-1:]
    else:
        assert decoded == careful
