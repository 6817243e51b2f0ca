"""Jaeger's uber-trace-id header."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import (
    assert_valid_or_none,
    contexts,
    header_text,
    mutations,
)

from tomograph.model import TraceContext
from tomograph.propagation import jaeger


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "463ac35c9f6413ad:a2fb4a1d1a96d312:0:1",
            TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True),
        ),
        ("abc:def:0:0", TraceContext(0xABC, 0xDEF, None, False)),  # short ids mean leading zeros
        ("ABC:DEF:12:3", TraceContext(0xABC, 0xDEF, 0x12, True, True)),  # either case
        ("abc:def:0:05", TraceContext(0xABC, 0xDEF, None, True)),  # unknown bits ignored
        ("abc%3Adef%3A0%3A1", TraceContext(0xABC, 0xDEF, None, True)),  # percent-encoded
        ("abc%3adef%3a1%3a2", TraceContext(0xABC, 0xDEF, 1, True, True)),
        (
            "463ac35c9f6413ad48485a3953bb6124:1:0:1",
            TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 1, None, True),
        ),
    ],
)
def test_valid_values(value: str, expected: TraceContext) -> None:
    assert jaeger.parse_uber_trace_id(value) == expected
    assert jaeger.extract({"Uber-Trace-Id": value}) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc:def:0",
        "abc:def:0:1:2",
        "0:def:0:1",
        "abc:0:0:1",
        "abc:def::1",
        "abc:def:0:",
        "abc:def:0:100",
        "x:def:0:1",
        "1" * 33 + ":def:0:1",
        "abc:" + "1" * 17 + ":0:1",
        "-1:def:0:1",
        "abc%3Zdef:0:1",
    ],
)
def test_malformed_values_are_rejected(value: str) -> None:
    assert jaeger.parse_uber_trace_id(value) is None


def test_inject_writes_padded_ids_and_flags() -> None:
    headers: dict[str, str] = {}
    jaeger.inject(TraceContext(0xABC, 0xDEF, 0x12, debug=True), headers)
    assert headers == {"uber-trace-id": "0000000000000abc:0000000000000def:0000000000000012:3"}


@given(contexts(deferred=False))
def test_round_trip(context: TraceContext) -> None:
    headers: dict[str, str] = {}
    jaeger.inject(context, headers)
    assert jaeger.extract(headers) == context


@given(header_text)
def test_parser_never_raises(value: str) -> None:
    assert_valid_or_none(jaeger.parse_uber_trace_id(value))


@given(st.data())
def test_near_valid_values_parse_or_are_rejected(data: st.DataObject) -> None:
    valid = jaeger.format_uber_trace_id(data.draw(contexts()))
    assert_valid_or_none(jaeger.parse_uber_trace_id(data.draw(mutations(valid))))
