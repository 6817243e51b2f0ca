"""The Format.BINARY encoding: exact layout, round trips, and rejection of broken input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.model import TraceContext
from tomograph.opentracing import binary

ids64 = st.integers(min_value=1, max_value=(1 << 64) - 1)
ids128 = st.integers(min_value=1, max_value=(1 << 128) - 1)
baggage_text = st.text(max_size=20)
contexts = st.builds(
    TraceContext,
    trace_id=ids128,
    span_id=ids64,
    parent_id=st.none() | ids64,
    sampled=st.none() | st.booleans(),
    debug=st.booleans(),
)


def test_layout_of_a_sampled_root_context() -> None:
    data = binary.encode(TraceContext(0xAB, 0xCD, sampled=True))
    assert (
        data == bytes([1, 0x03]) + (0xAB).to_bytes(8, "big") + (0xCD).to_bytes(8, "big") + b"\0\0"
    )


def test_wide_trace_id_parent_and_baggage_layout() -> None:
    data = binary.encode(TraceContext(1 << 100, 2, parent_id=3, sampled=False), {"k": "vé"})
    assert data[:2] == bytes([1, 0x01 | 0x08 | 0x10])
    assert int.from_bytes(data[2:18], "big") == 1 << 100
    assert int.from_bytes(data[18:26], "big") == 2
    assert int.from_bytes(data[26:34], "big") == 3
    assert data[34:] == b"\x00\x01" + b"\x00\x01k" + b"\x00\x03v\xc3\xa9"


@given(contexts, st.dictionaries(baggage_text, baggage_text, max_size=5))
def test_round_trip(context: TraceContext, baggage: dict[str, str]) -> None:
    decoded, decoded_baggage = binary.decode(binary.encode(context, baggage))
    assert decoded == context
    assert decoded_baggage == baggage


@given(st.binary(max_size=80))
def test_random_bytes_decode_or_raise_format_error(data: bytes) -> None:
    try:
        context, _ = binary.decode(data)
    except binary.BinaryFormatError:
        return
    assert context.trace_id and context.span_id


@given(contexts, st.data())
def test_truncated_or_padded_input_is_rejected(context: TraceContext, data: st.DataObject) -> None:
    encoded = binary.encode(context, {"a": "b"})
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(binary.BinaryFormatError):
        binary.decode(encoded[:cut])
    with pytest.raises(binary.BinaryFormatError):
        binary.decode(encoded + data.draw(st.binary(min_size=1, max_size=4)))


@given(contexts, st.data())
def test_flipped_byte_never_escapes_as_another_error(
    context: TraceContext, data: st.DataObject
) -> None:
    encoded = bytearray(binary.encode(context, {"user": "alice"}))
    index = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        binary.decode(encoded)
    except binary.BinaryFormatError:
        pass


def test_unknown_version_and_flags_are_rejected() -> None:
    good = binary.encode(TraceContext(1, 2))
    with pytest.raises(binary.BinaryFormatError, match="version"):
        binary.decode(b"\x02" + good[1:])
    with pytest.raises(binary.BinaryFormatError, match="flags"):
        binary.decode(good[:1] + b"\x80" + good[2:])


def test_zero_ids_are_rejected() -> None:
    with pytest.raises(binary.BinaryFormatError, match="zero"):
        binary.decode(bytes([1, 0]) + bytes(16) + b"\0\0")


def test_oversized_baggage_is_dropped_when_encoding() -> None:
    big = {f"k{i}": "v" * 100 for i in range(200)}
    _, baggage = binary.decode(binary.encode(TraceContext(1, 2), big))
    assert 0 < len(baggage) < 200
    assert sum(len(k) + len(v) for k, v in baggage.items()) <= binary.MAX_BAGGAGE_BYTES


def test_too_many_baggage_items_are_rejected_when_decoding() -> None:
    head = binary.encode(TraceContext(1, 2))[:-2]
    count = binary.MAX_BAGGAGE_ITEMS + 1
    body = b"\x00\x01k\x00\x01v" * count
    with pytest.raises(binary.BinaryFormatError, match="baggage items"):
        binary.decode(head + count.to_bytes(2, "big") + body)


def test_non_utf8_baggage_is_rejected() -> None:
    head = binary.encode(TraceContext(1, 2))[:-2]
    with pytest.raises(binary.BinaryFormatError, match="UTF-8"):
        binary.decode(head + b"\x00\x01\x00\x01\xff\x00\x01v")
