"""Zipkin v1 Thrift encoding: checked against Zipkin's own IDL and by round trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support.scribe_server import ZIPKIN_CORE, load_zipkin_core
from tomograph import Tracer
from tomograph.model import Endpoint, SpanKind, TraceContext
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.zipkin_thrift import ThriftDecodeError, decode_span, encode_span
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
    except ThriftDecodeError:
        pass


@given(span_specs(), st.data())
def test_truncated_spans_are_rejected(spec: dict[str, Any], data: st.DataObject) -> None:
    span = build(spec)
    encoded = encode_span(span)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(ThriftDecodeError):
        decode_span(encoded[:cut])
    with pytest.raises(ThriftDecodeError):
        decode_span(encoded + b"\x00")


@given(span_specs(), st.data())
def test_flipped_bytes_never_raise_anything_else(spec: dict[str, Any], data: st.DataObject) -> None:
    span = build(spec)
    encoded = bytearray(encode_span(span))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_span(bytes(encoded))
    except ThriftDecodeError:
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
