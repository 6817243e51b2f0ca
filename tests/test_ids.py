"""Id generation and the strict hex parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tomograph.ids import (
    format_span_id,
    format_trace_id,
    new_span_id,
    new_trace_id,
    parse_hex_id,
)


def test_new_ids_are_nonzero_distinct_and_bounded() -> None:
    spans = {new_span_id() for _ in range(1000)}
    assert len(spans) == 1000 and all(0 < s < 2**64 for s in spans)
    assert all(0 < new_trace_id() < 2**128 for _ in range(100))
    assert all(0 < new_trace_id(64) < 2**64 for _ in range(100))


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_span_id_round_trip(value: int) -> None:
    text = format_span_id(value)
    assert len(text) == 16 and text == text.lower()
    assert parse_hex_id(text, (16,)) == value


@given(st.integers(min_value=1, max_value=2**128 - 1))
def test_trace_id_round_trip(value: int) -> None:
    text = format_trace_id(value)
    assert len(text) == (16 if value < 2**64 else 32)
    assert parse_hex_id(text) == value
    assert parse_hex_id(format_trace_id(value, 32), (32,)) == value


@given(st.text(max_size=40))
def test_parser_never_raises_and_only_accepts_lower_hex(text: str) -> None:
    value = parse_hex_id(text)
    if value is not None:
        assert len(text) in (16, 32)
        assert set(text) <= set("0123456789abcdef")
        assert value > 0


def test_parser_rejects_near_misses() -> None:
    for text in [
        "0" * 16,
        "00000000000000FF",
        "+000000000000ff",
        " 00000000000000f",
        "0x00000000000000",
        "000000000000000g",
        "0000_00000000001",
        "1" * 17,
    ]:
        assert parse_hex_id(text) is None, text
