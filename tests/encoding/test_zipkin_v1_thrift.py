"""Zipkin v1 Thrift encoding: checked against Zipkin's own IDL and by round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.scribe_server import ZIPKIN_CORE, load_zipkin_core
from tomograph import Tracer
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.zipkin_v1_thrift import (
    decode_span,
    decode_spans,
    encode_list,
    encode_span,
    parse_spans,
)
from tomograph.model import Endpoint, SpanKind, TraceContext
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

ids64 = st.integers(min_value=1, max_value=(1 << 64) - 1)
texts = st.text(max_size=20)
tag_values = st.one_of(texts, st.integers(-(2**40), 2**40), st.booleans())
endpoints = st.builds(
    Endpoint,
    service_name=st.none() | texts,
    ipv4=st.none() | st.ip_addresses(v=4).map(str),
    ipv6=st.none() | st.ip_addresses(v=6).map(str),
    port=st.none() | st.integers(1, 65535),
)


@st.composite
def span_specs(draw: st.DrawFn) -> dict[str, Any]:
    """What a span is made of; the span itself is built in the test (ids use ``random``)."""
    return {
        "service": draw(texts) or "svc",
        "bits": draw(st.sampled_from([64, 128])),
        "parent": draw(
            st.none()
            | st.builds(
                TraceContext,
                trace_id=ids64,
                span_id=ids64,
                sampled=st.just(True),
                debug=st.booleans(),
            )
        ),
        "name": draw(texts),
        "kind": draw(st.none() | st.sampled_from(list(SpanKind))),
        "tags": draw(st.dictionaries(texts, tag_values, max_size=4)),
        "notes": draw(st.lists(texts, max_size=3)),
        "remote": draw(st.none() | endpoints),
    }


def build(spec: dict[str, Any]) -> Span:
    memory = MemoryBackend()
    tracer = Tracer(spec["service"], backends=[memory], trace_id_bits=spec["bits"])
    span = tracer.start_span(spec["name"], kind=spec["kind"], parent=spec["parent"])
    for key, value in spec["tags"].items():
        span.tag(key, value)
    for note in spec["notes"]:
        span.annotate(note)
    span.remote_endpoint = spec["remote"]
    span.finish()
    return span


@given(span_specs())
def test_round_trip(spec: dict[str, Any]) -> None:
    span = build(spec)
    decoded = decode_span(encode_span(span))
    assert decoded["trace_id"] == span.trace_id & (2**64 - 1)
    assert (decoded["trace_id_high"] or 0) == span.trace_id >> 64
    assert decoded["id"] == span.span_id
    assert decoded["parent_id"] == span.parent_id
    assert decoded["name"] == span.name
    assert decoded["debug"] == span.debug
    assert decoded["timestamp"] == span.timestamp
    assert decoded["duration"] == span.duration
    values = [a["value"] for a in decoded["annotations"]]
    for note in span.annotations:
        assert note.value in values
    tags = {
        b["key"]: b["value"] for b in decoded["binary_annotations"] if b["annotation_type"] == 6
    }
    for key, value in span.tags.items():
        expected = (
            {True: "true", False: "false"}.get(value, str(value))
            if isinstance(value, bool)
            else str(value)
        )
        assert tags[key] == expected.encode()


@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        decode_span(data)
    except DecodeError:
        pass


@given(span_specs(), st.data())
def test_truncated_spans_are_rejected(spec: dict[str, Any], data: st.DataObject) -> None:
    span = build(spec)
    encoded = encode_span(span)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        decode_span(encoded[:cut])
    with pytest.raises(DecodeError):
        decode_span(encoded + b"\x00")


@given(span_specs(), st.data())
def test_flipped_bytes_never_raise_anything_else(spec: dict[str, Any], data: st.DataObject) -> None:
    span = build(spec)
    encoded = bytearray(encode_span(span))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_span(bytes(encoded))
    except DecodeError:
        pass


@pytest.fixture(scope="module")
def zipkin_core() -> Any:
    if not ZIPKIN_CORE.exists():
        pytest.fail(
            f"{ZIPKIN_CORE} is missing: the shared specs folder must sit beside the checkout"
        )
    return load_zipkin_core()


@given(spec=span_specs())
@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_zipkins_idl_reads_what_we_write(zipkin_core: Any, spec: dict[str, Any]) -> None:
    span = build(spec)
    from thriftpy2.protocol import TBinaryProtocolFactory
    from thriftpy2.utils import deserialize

    theirs = deserialize(zipkin_core.Span(), encode_span(span), TBinaryProtocolFactory())
    ours = decode_span(encode_span(span))
    assert theirs.name == span.name
    assert theirs.id & (2**64 - 1) == span.span_id
    assert (theirs.trace_id_high or 0) & (2**64 - 1) == span.trace_id >> 64
    assert [a.value for a in theirs.annotations] == [a["value"] for a in ours["annotations"]]
    assert [(b.key, b.value) for b in theirs.binary_annotations] == [
        (b["key"], b["value"]) for b in ours["binary_annotations"]
    ]
    if span.local_endpoint is not None and theirs.annotations:
        assert theirs.annotations[0].host.service_name == (span.local_endpoint.service_name or "")


def test_kinds_become_core_annotations() -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    for kind in SpanKind:
        tracer.start_span(kind.value, kind=kind).finish()
    core = {
        span.name: [a["value"] for a in decode_span(encode_span(span))["annotations"]]
        for span in memory.spans
    }
    assert core == {
        "CLIENT": ["cs", "cr"],
        "SERVER": ["sr", "ss"],
        "PRODUCER": ["ms"],
        "CONSUMER": ["mr"],
    }


def test_shared_server_span_leaves_timing_to_the_client() -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory], join_shared_spans=True)
    tracer.start_span("get", kind="server", parent=TraceContext(5, 6, sampled=True)).finish()
    decoded = decode_span(encode_span(memory.spans[0]))
    assert decoded["id"] == 6
    assert decoded["timestamp"] is None and decoded["duration"] is None
    assert [a["value"] for a in decoded["annotations"]] == ["sr", "ss"]


# -- lists of spans, as POST /api/v1/spans takes them ----------------------------------------


def thrift_list(zipkin_core: Any, spans: list[Any]) -> bytes:
    """A ``list<Span>`` in TBinaryProtocol, written by thriftpy2 from Zipkin's own IDL."""
    from thriftpy2.protocol.binary import write_val
    from thriftpy2.thrift import TType
    from thriftpy2.transport import TMemoryBuffer

    buffer = TMemoryBuffer()
    write_val(buffer, TType.LIST, spans, spec=(TType.STRUCT, zipkin_core.Span))
    return bytes(buffer.getvalue())


def test_thriftpy2_list_of_client_and_server_spans(zipkin_core: Any) -> None:
    core = zipkin_core
    web = core.Endpoint(ipv4=0x0A000001, port=0, service_name="Web")
    api = core.Endpoint(ipv4=0x0A000002, port=-7536, service_name="api")  # port 58000 as i16
    client = core.Span(
        trace_id=-1,  # the i64 of 0xffffffffffffffff
        trace_id_high=0x11,
        name="GET",
        id=0x0B,
        parent_id=0x0A,
        annotations=[
            core.Annotation(timestamp=1000, value="cs", host=web),
            core.Annotation(timestamp=1900, value="cr", host=web),
        ],
        binary_annotations=[
            core.BinaryAnnotation(key="sa", value=b"\x01", annotation_type=0, host=api),
            core.BinaryAnnotation(key="http.path", value=b"/a", annotation_type=6, host=web),
            core.BinaryAnnotation(
                key="http.status_code", value=b"\x00\xc8", annotation_type=2, host=web
            ),
            core.BinaryAnnotation(key="big", value=(-2).to_bytes(8, "big", signed=True),
                                  annotation_type=4, host=web),
            core.BinaryAnnotation(key="ratio", value=b"?\xe0\x00\x00\x00\x00\x00\x00",
                                  annotation_type=5, host=web),
            core.BinaryAnnotation(key="cached", value=b"\x00", annotation_type=0, host=web),
            core.BinaryAnnotation(key="blob", value=b"\xff\x00", annotation_type=1, host=web),
        ],
        timestamp=1000,
        duration=900,
    )  # fmt: skip
    server = core.Span(
        trace_id=5,
        name="get",
        id=0x0C,
        annotations=[
            core.Annotation(timestamp=2000, value="sr", host=api),
            core.Annotation(timestamp=2500, value="ss", host=api),
        ],
        binary_annotations=[
            core.BinaryAnnotation(key="ca", value=b"\x01", annotation_type=0, host=web)
        ],
    )
    assert decode_spans(thrift_list(zipkin_core, [client, server])) == [
        {
            "traceId": "0000000000000011ffffffffffffffff",
            "parentId": "000000000000000a",
            "id": "000000000000000b",
            "kind": "CLIENT",
            "name": "get",  # names are stored lower-cased, as Zipkin does
            "timestamp": 1000,
            "duration": 900,
            "localEndpoint": {"serviceName": "web", "ipv4": "10.0.0.1"},
            "remoteEndpoint": {"serviceName": "api", "ipv4": "10.0.0.2", "port": 58000},
            "tags": {
                "big": "-2",
                "blob": "/wA=",
                "cached": "false",
                "http.path": "/a",
                "http.status_code": "200",
                "ratio": "0.5",
            },
        },
        {
            "traceId": "0000000000000005",
            "id": "000000000000000c",
            "kind": "SERVER",
            "name": "get",
            "timestamp": 2000,
            "duration": 500,
            "localEndpoint": {"serviceName": "api", "ipv4": "10.0.0.2", "port": 58000},
            "remoteEndpoint": {"serviceName": "web", "ipv4": "10.0.0.1"},
            "shared": True,
        },
    ]


def test_our_list_encoder_is_read_by_the_list_decoder() -> None:
    memory = MemoryBackend()
    tracer = Tracer("shop", backends=[memory])
    with tracer.span("pay", kind="client") as span:
        span.remote_endpoint = Endpoint("bank", port=443)
    (decoded,) = decode_spans(encode_list(memory.spans))
    assert decoded["kind"] == "CLIENT"
    assert decoded["localEndpoint"]["serviceName"] == "shop"
    assert decoded["remoteEndpoint"] == {"serviceName": "bank", "port": 443}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than a list header"),
        (b"\x0b\x00\x00\x00\x00", "list of Span structs, not of type 11"),
        (b"\x0c\x00\x00\x00\x02\x00", "list of 2 spans is longer than the body"),
        (b"\x0c\x00\x00\x00\x01\x0a\x00\x01", "span 0: truncated"),
        (b"\x0c\x00\x00\x00\x01\x00", "span 0: span field 1 is missing"),
        (b"\x0c\x00\x00\x00\x00\x00", "data after the 0 spans"),
    ],
)
def test_bad_lists_are_named(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_spans(data)


@given(st.binary(max_size=300))
def test_arbitrary_lists_raise_nothing_but_decode_error(data: bytes) -> None:
    try:
        decode_spans(b"\x0c" + data)
    except DecodeError:
        pass


@given(st.lists(span_specs(), max_size=3), st.data())
def test_flipped_bytes_in_a_list_raise_nothing_but_decode_error(
    specs: list[dict[str, Any]], data: st.DataObject
) -> None:
    encoded = bytearray(encode_list([build(spec) for spec in specs]))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_spans(bytes(encoded))
    except DecodeError:
        pass


i64 = st.integers(-(2**63), 2**63 - 1)
v1_texts = st.text(max_size=10)


@st.composite
def thriftpy2_spans(draw: st.DrawFn, core: Any) -> Any:
    def endpoint() -> Any:
        return draw(
            st.none()
            | st.builds(
                core.Endpoint,
                ipv4=st.integers(-(2**31), 2**31 - 1),
                port=st.integers(-(2**15), 2**15 - 1),
                service_name=v1_texts,
            )
        )

    return core.Span(
        trace_id=draw(i64.filter(bool)),
        trace_id_high=draw(st.none() | i64),
        name=draw(v1_texts),
        id=draw(i64.filter(bool)),
        parent_id=draw(st.none() | i64),
        annotations=[
            core.Annotation(timestamp=draw(st.integers(0, 2**62)), value=value, host=endpoint())
            for value in draw(st.lists(st.sampled_from(["cs", "sr", "ss", "cr", "x"]), max_size=4))
        ],
        binary_annotations=[
            core.BinaryAnnotation(key=key, value=value.encode(), annotation_type=6, host=endpoint())
            for key, value in draw(st.lists(st.tuples(v1_texts, v1_texts), max_size=3))
        ],
        timestamp=draw(st.none() | st.integers(0, 2**62)),
        duration=draw(st.none() | st.integers(0, 2**62)),
        debug=draw(st.none() | st.booleans()),
    )


@given(st.data())
@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_parse_reads_what_thriftpy2_writes(zipkin_core: Any, data: st.DataObject) -> None:
    spans = data.draw(st.lists(thriftpy2_spans(zipkin_core), max_size=3))
    parsed = parse_spans(thrift_list(zipkin_core, spans))
    for theirs, ours in zip(spans, parsed, strict=True):
        low, high = theirs.trace_id % 2**64, (theirs.trace_id_high or 0) % 2**64
        assert ours.trace_id == (f"{high:016x}{low:016x}" if high else f"{low:016x}")
        assert ours.id == f"{theirs.id % 2**64:016x}"
        assert ours.parent_id == (f"{theirs.parent_id % 2**64:016x}" if theirs.parent_id else None)
        assert ours.name == theirs.name
        assert ours.timestamp == (theirs.timestamp or 0)
        assert ours.duration == (theirs.duration or 0)
        assert ours.debug == bool(theirs.debug)
        assert [(a.timestamp, a.value) for a in ours.annotations] == [
            (a.timestamp, a.value) for a in theirs.annotations
        ]
        assert [(b.key, b.value) for b in ours.binary_annotations] == [
            (b.key, b.value.decode()) for b in theirs.binary_annotations
        ]
        for ours_note, their_note in zip(ours.annotations, theirs.annotations, strict=True):
            host = their_note.host
            if host is None or (not host.service_name and not host.ipv4 and not host.port):
                assert ours_note.endpoint is None
            else:
                assert ours_note.endpoint is not None
                assert ours_note.endpoint.get("serviceName") == (host.service_name.lower() or None)
                assert ours_note.endpoint.get("port") == ((host.port % 2**16) or None)
    decode_spans(thrift_list(zipkin_core, spans))  # converts without error
