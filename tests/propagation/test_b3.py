"""B3 multi- and single-header propagation."""

from __future__ import annotations

import logging

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
from tomograph.propagation import b3

TRACE_64 = "463ac35c9f6413ad"
TRACE_128 = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"


# -- multi-header ----------------------------------------------------------------------------


@pytest.mark.parametrize("trace_hex", [TRACE_64, TRACE_128])
def test_multi_headers_give_ids_parent_and_decision(trace_hex: str) -> None:
    context = b3.extract(
        {
            "X-B3-TraceId": trace_hex,
            "X-B3-SpanId": SPAN,
            "X-B3-ParentSpanId": PARENT,
            "X-B3-Sampled": "1",
        }
    )
    assert context == TraceContext(int(trace_hex, 16), int(SPAN, 16), int(PARENT, 16), True)


@pytest.mark.parametrize(
    ("sampled", "expected"),
    [("1", True), ("0", False), ("true", True), ("false", False), ("True", True), (None, None)],
)
def test_multi_sampled_values_including_lenient_booleans(
    sampled: str | None, expected: bool | None
) -> None:
    headers = {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN}
    if sampled is not None:
        headers["x-b3-sampled"] = sampled
    context = b3.extract(headers)
    assert context is not None and context.sampled is expected


def test_multi_flags_1_means_debug_and_sampled() -> None:
    context = b3.extract({"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-flags": "1"})
    assert context is not None and context.debug and context.sampled


def test_debug_wins_over_sampled_0() -> None:
    context = b3.extract(
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-flags": "1", "x-b3-sampled": "0"}
    )
    assert context is not None and context.debug and context.sampled


@pytest.mark.parametrize(
    "headers",
    [
        {"x-b3-traceid": TRACE_64},  # no span id
        {"x-b3-spanid": SPAN},  # no trace id
        {"x-b3-traceid": TRACE_64.upper(), "x-b3-spanid": SPAN},  # upper case
        {"x-b3-traceid": TRACE_64[:-1], "x-b3-spanid": SPAN},  # 15 characters
        {"x-b3-traceid": TRACE_64 + "0", "x-b3-spanid": SPAN},  # 17 characters
        {"x-b3-traceid": "0" * 16, "x-b3-spanid": SPAN},  # all zero
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": "0" * 16},
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN[:8]},  # short span id
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-parentspanid": "-"},
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-parentspanid": ""},
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-sampled": ""},
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-sampled": "yes"},
        {"x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN, "x-b3-flags": "2"},
        {"x-b3-traceid": " " + TRACE_64, "x-b3-spanid": SPAN},
        {"x-b3-traceid": "0x63ac35c9f6413ad", "x-b3-spanid": SPAN},
    ],
)
def test_malformed_multi_headers_are_rejected(headers: dict[str, str]) -> None:
    assert b3.extract(headers) is None


def test_malformed_header_is_logged_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="tomograph.propagation"):
        assert b3.extract({"x-b3-traceid": "nonsense", "x-b3-spanid": SPAN}) is None
    assert any("malformed" in record.getMessage() for record in caplog.records)


def test_sampled_0_alone_denies_with_fresh_local_ids() -> None:
    context = b3.extract({"X-B3-Sampled": "0"})
    assert context is not None
    assert context.sampled is False
    assert context.trace_id and context.span_id and context.parent_id is None


def test_sampled_1_alone_is_left_to_the_local_sampler() -> None:
    assert b3.extract({"X-B3-Sampled": "1"}) is None


def test_repeated_header_first_value_wins() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "HTTP_X_B3_TRACEID": f"{TRACE_64}, {'1' * 16}",
        "HTTP_X_B3_SPANID": SPAN,
    }
    context = b3.extract(environ)
    assert context is not None and context.trace_id == int(TRACE_64, 16)
    pairs = [("x-b3-traceid", TRACE_64), ("x-b3-traceid", "1" * 16), ("x-b3-spanid", SPAN)]
    context = b3.extract(pairs)
    assert context is not None and context.trace_id == int(TRACE_64, 16)


def test_inject_writes_lower_case_multi_headers() -> None:
    headers: dict[str, str] = {}
    b3.inject(TraceContext(int(TRACE_128, 16), int(SPAN, 16), int(PARENT, 16), True), headers)
    assert headers == {
        "x-b3-traceid": TRACE_128,
        "x-b3-spanid": SPAN,
        "x-b3-parentspanid": PARENT,
        "x-b3-sampled": "1",
    }


def test_inject_debug_sends_flags_not_sampled() -> None:
    headers: dict[str, str] = {}
    b3.inject(TraceContext(1, 2, debug=True), headers)
    assert headers["x-b3-flags"] == "1" and "x-b3-sampled" not in headers


def test_inject_deferred_sends_no_sampling_state() -> None:
    headers: dict[str, str] = {}
    b3.inject(TraceContext(1, 2, sampled=None), headers)
    assert set(headers) == {"x-b3-traceid", "x-b3-spanid"}


def test_64_bit_trace_id_is_written_as_16_hex() -> None:
    headers: dict[str, str] = {}
    b3.inject(TraceContext(int(TRACE_64, 16), 2), headers)
    assert headers["x-b3-traceid"] == TRACE_64


# -- single header ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{TRACE_64}-{SPAN}", TraceContext(int(TRACE_64, 16), int(SPAN, 16))),
        (f"{TRACE_128}-{SPAN}-1", TraceContext(int(TRACE_128, 16), int(SPAN, 16), sampled=True)),
        (f"{TRACE_64}-{SPAN}-0", TraceContext(int(TRACE_64, 16), int(SPAN, 16), sampled=False)),
        (f"{TRACE_64}-{SPAN}-d", TraceContext(int(TRACE_64, 16), int(SPAN, 16), debug=True)),
        (
            f"{TRACE_64}-{SPAN}-1-{PARENT}",
            TraceContext(int(TRACE_64, 16), int(SPAN, 16), int(PARENT, 16), True),
        ),
    ],
)
def test_single_header_forms(value: str, expected: TraceContext) -> None:
    assert b3.parse_b3_single(value) == expected
    assert b3.extract({"b3": value}) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",  # accept alone: the local sampler decides
        "d",
        "true",
        f"{TRACE_64}",
        f"{TRACE_64}-",
        f"{TRACE_64}-{SPAN}-",
        f"{TRACE_64}-{SPAN}-2",
        f"{TRACE_64}-{SPAN}-true",
        f"{TRACE_64}-{SPAN}-1-",
        f"{TRACE_64}-{SPAN}-1-{PARENT}-x",
        f"{TRACE_64}-{SPAN}--{PARENT}",
        f"{TRACE_64.upper()}-{SPAN}",
        f"{'0' * 32}-{SPAN}",
        f"{TRACE_64}-{'0' * 16}",
        f"{TRACE_64}-{SPAN}-1-{'0' * 16}",
    ],
)
def test_malformed_single_header_is_rejected(value: str) -> None:
    assert b3.parse_b3_single(value) is None


def test_single_b3_0_is_a_deny_only_context() -> None:
    context = b3.extract({"b3": "0"})
    assert context is not None and context.sampled is False and not context.debug


def test_single_header_wins_over_multi() -> None:
    headers = {
        "b3": f"{TRACE_128}-{SPAN}-0",
        "x-b3-traceid": TRACE_64,
        "x-b3-spanid": PARENT,
        "x-b3-sampled": "1",
    }
    context = b3.extract(headers)
    assert context == TraceContext(int(TRACE_128, 16), int(SPAN, 16), sampled=False)


def test_malformed_single_header_falls_back_to_multi() -> None:
    headers = {"b3": "garbage", "x-b3-traceid": TRACE_64, "x-b3-spanid": SPAN}
    context = b3.extract(headers)
    assert context is not None and context.span_id == int(SPAN, 16)


def test_oversized_single_header_is_ignored() -> None:
    assert b3.extract({"b3": f"{TRACE_64}-{SPAN}-1" + " " * 500}) is None


def test_single_header_cannot_carry_a_parent_without_a_decision() -> None:
    assert b3.format_b3_single(TraceContext(1, 2, 3, sampled=None)) == (
        "0000000000000001-0000000000000002"
    )


# -- properties ------------------------------------------------------------------------------


@given(contexts())
def test_multi_round_trip(context: TraceContext) -> None:
    headers: dict[str, str] = {}
    b3.inject(context, headers)
    assert b3.extract(headers) == context


@given(contexts())
def test_single_round_trip(context: TraceContext) -> None:
    headers: dict[str, str] = {}
    b3.inject_single(context, headers)
    expected = context if context.sampled is not None else context.replace(parent_id=None)
    assert b3.extract(headers) == expected


@given(header_text)
def test_single_parser_never_raises(value: str) -> None:
    assert_valid_or_none(b3.parse_b3_single(value))


@given(st.lists(st.one_of(st.none(), header_text), min_size=5, max_size=5))
def test_multi_parser_never_raises(values: list[str | None]) -> None:
    assert_valid_or_none(b3.parse_b3_multi(*values))


@given(st.data())
def test_near_valid_single_headers_parse_or_are_rejected(data: st.DataObject) -> None:
    valid = b3.format_b3_single(data.draw(contexts()))
    assert_valid_or_none(b3.parse_b3_single(data.draw(mutations(valid))))


@given(st.data())
def test_near_valid_multi_headers_parse_or_are_rejected(data: st.DataObject) -> None:
    headers: dict[str, str] = {}
    b3.inject(data.draw(contexts()), headers)
    name = data.draw(st.sampled_from(sorted(headers)))
    headers[name] = data.draw(mutations(headers[name]))
    assert_valid_or_none(b3.extract(headers))


def test_injecting_again_into_the_same_dict_leaves_no_stale_headers() -> None:
    headers: dict[str, str] = {}
    b3.inject(TraceContext(1, 2, 3, debug=True), headers)
    b3.inject(TraceContext(1, 4, sampled=None), headers)
    assert headers == {"x-b3-traceid": "0000000000000001", "x-b3-spanid": "0000000000000004"}


@given(st.data())
def test_multi_headers_from_a_dict_read_as_the_careful_parser_reads_them(
    data: st.DataObject,
) -> None:
    headers: dict[str, str] = {}
    b3.inject(data.draw(contexts(deferred=False, parents=False)), headers)
    name = data.draw(st.sampled_from(sorted(headers)))
    headers[name] = data.draw(mutations(headers[name]) | st.just(headers[name]))
    expected = b3.parse_b3_multi(
        headers.get("x-b3-traceid"),
        headers.get("x-b3-spanid"),
        headers.get("x-b3-parentspanid"),
        headers.get("x-b3-sampled"),
        headers.get("x-b3-flags"),
    )
    assert b3.extract(headers) == expected
