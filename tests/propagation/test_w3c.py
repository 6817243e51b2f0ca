"""W3C traceparent and tracestate."""

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
from tomograph.propagation import w3c

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_valid_traceparent() -> None:
    assert w3c.parse_traceparent(VALID) == TraceContext(int(TRACE, 16), int(SPAN, 16), sampled=True)


@pytest.mark.parametrize(
    ("flags", "sampled"), [("00", False), ("01", True), ("ff", True), ("02", False)]
)
def test_only_bit_0_of_the_flags_means_sampled(flags: str, sampled: bool) -> None:
    context = w3c.parse_traceparent(f"00-{TRACE}-{SPAN}-{flags}")
    assert context is not None and context.sampled is sampled


@pytest.mark.parametrize(
    "value",
    [
        f"01-{TRACE}-{SPAN}-01",  # a future version, exactly four fields
        f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like",
        f"01-{TRACE}-{SPAN}-09-",
    ],
)
def test_future_versions_are_read_by_their_first_four_fields(value: str) -> None:
    context = w3c.parse_traceparent(value)
    assert context is not None and context.trace_id == int(TRACE, 16)


@pytest.mark.parametrize(
    "value",
    [
        "",
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{TRACE}-{SPAN}-01-",  # version 00 has exactly four fields
        f"00-{TRACE}-{SPAN}-01-extra",
        f"cc-{TRACE}-{SPAN}-01.extra",  # future content must follow a "-"
        f"cc-{TRACE}-{SPAN}-0",
        f"0-{TRACE}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{TRACE}-{SPAN.upper()}-01",
        f"00-{TRACE}-{SPAN}-0A",
        f"0A-{TRACE}-{SPAN}-01",
        f"00-{TRACE[:-1]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}0-01",
        f"00_{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-g1",
        f"00-{TRACE[:16]}-{SPAN}-01",  # a 64-bit trace id is not W3C
    ],
)
def test_invalid_traceparent_is_rejected(value: str) -> None:
    assert w3c.parse_traceparent(value) is None


def test_invalid_traceparent_means_tracestate_is_not_read() -> None:
    assert w3c.extract({"traceparent": f"ff-{TRACE}-{SPAN}-01", "tracestate": "a=1"}) is None


def test_repeated_traceparent_is_invalid() -> None:
    pairs = [("traceparent", VALID), ("traceparent", VALID)]
    assert w3c.extract(pairs) is None


def test_inject_writes_version_00_our_span_id_and_known_flags_only() -> None:
    headers: dict[str, str] = {}
    w3c.inject(TraceContext(int(TRACE, 16), 0x1234, parent_id=int(SPAN, 16), sampled=True), headers)
    assert headers["traceparent"] == f"00-{TRACE}-0000000000001234-01"


def test_64_bit_trace_ids_are_padded_to_32_hex() -> None:
    headers: dict[str, str] = {}
    w3c.inject(TraceContext(0xABC, 0x1, sampled=False), headers)
    assert headers["traceparent"] == f"00-{0xABC:032x}-0000000000000001-00"
    context = w3c.extract(headers)
    assert context is not None and context.trace_id == 0xABC


# -- tracestate ------------------------------------------------------------------------------


def test_tracestate_is_kept_in_order_in_extra() -> None:
    context = w3c.extract(
        {"traceparent": VALID, "tracestate": "rojo=00f067aa0ba902b7 , ,congo=t61rcWkgMzE"}
    )
    assert context is not None
    assert context.extra == {"tracestate": (("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE"))}


def test_multiple_tracestate_headers_are_combined() -> None:
    pairs = [("traceparent", VALID), ("tracestate", "a=1,b=2"), ("tracestate", "c=3")]
    context = w3c.extract(pairs)
    assert context is not None and context.extra is not None
    assert [key for key, _ in context.extra["tracestate"]] == ["a", "b", "c"]


def test_duplicate_keys_invalidate_tracestate_but_keep_traceparent() -> None:
    context = w3c.extract({"traceparent": VALID, "tracestate": "a=1,b=2,a=3"})
    assert context is not None and context.extra is None
    assert context.span_id == int(SPAN, 16)


@pytest.mark.parametrize(
    "member",
    [
        "A=1",  # upper-case key
        "1a=1",  # simple keys start with a letter
        "a=",  # empty value
        "a=1 ",  # value ending in a space is trimmed as whitespace, "a=b c " is not
        "a b=1",
        "a=1=2",
        "a=\u00e9",
        "a",
        "@vendor=1",
        "tenant@=1",
        "tenant@Vendor=1",
        "t@v@w=1",
        "a=" + "x" * 257,
        "k" * 257 + "=1",
    ],
)
def test_malformed_members_invalidate_tracestate(member: str) -> None:
    members = w3c.parse_tracestate(f"ok=1,{member}")
    if member == "a=1 ":
        assert members == (("ok", "1"), ("a", "1"))  # trailing OWS belongs to the list syntax
    else:
        assert members is None


@pytest.mark.parametrize(
    "member",
    [
        "a=1",
        "a-b_c*d/e=x y",
        "tenant@system=v",
        "0tenant@sys=v",
        "a=" + "x" * 256,
        "z" * 256 + "=1",
    ],
)
def test_valid_members(member: str) -> None:
    members = w3c.parse_tracestate(member)
    assert members is not None and len(members) == 1


def test_more_than_32_members_keeps_the_first_32() -> None:
    members = w3c.parse_tracestate(",".join(f"k{i}=v" for i in range(40)))
    assert members is not None and len(members) == 32
    assert members[-1] == ("k31", "v")


def test_our_member_is_updated_and_moved_first() -> None:
    context = TraceContext(
        int(TRACE, 16), 0x42, sampled=True, extra={"tracestate": (("rojo", "1"), ("congo", "2"))}
    )
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    assert headers["tracestate"] == "tomograph=0000000000000042;1,rojo=1,congo=2"


def test_at_most_32_members_are_sent_dropping_the_oldest() -> None:
    others = tuple((f"k{i}", "v") for i in range(32))
    headers: dict[str, str] = {}
    w3c.inject(TraceContext(1, 2, sampled=True, extra={"tracestate": others}), headers)
    keys = [member.split("=")[0] for member in headers["tracestate"].split(",")]
    assert len(keys) == 32 and keys[0] == "tomograph" and keys[-1] == "k30"


def test_long_tracestate_drops_large_members_first() -> None:
    others = (("small", "1"), ("big", "x" * 200), ("other", "y" * 100), ("more", "z" * 250))
    text = w3c.format_tracestate(others, ("tomograph", "s"))
    assert len(text) <= 512
    assert [m.split("=")[0] for m in text.split(",")] == ["tomograph", "small", "other"]


def test_our_member_from_upstream_is_not_kept_among_the_others() -> None:
    context = w3c.extract(
        {"traceparent": VALID, "tracestate": f"rojo=1,tomograph={SPAN};d;0000000000000007"}
    )
    assert context is not None
    assert context.extra == {"tracestate": (("rojo", "1"),)}
    assert context.debug and context.parent_id == 7


def test_our_member_is_ignored_when_another_tracer_changed_traceparent() -> None:
    context = w3c.extract(
        {"traceparent": VALID, "tracestate": "tomograph=1111111111111111;d;0000000000000007"}
    )
    assert context is not None and not context.debug and context.parent_id is None


def test_debug_in_our_member_needs_the_sampled_flag() -> None:
    value = f"00-{TRACE}-{SPAN}-00"
    context = w3c.extract({"traceparent": value, "tracestate": f"tomograph={SPAN};d"})
    assert context is not None and not context.debug and context.sampled is False


def test_oversized_tracestate_is_dropped_and_traceparent_kept() -> None:
    context = w3c.extract({"traceparent": VALID, "tracestate": "a=1," * 10000})
    assert context is not None and context.extra is None


# -- properties ------------------------------------------------------------------------------

tracestate_keys = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,20}", fullmatch=True).filter(
    lambda key: key != "tomograph"
)
tracestate_values = st.from_regex(
    r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,20}[\x21-\x2b\x2d-\x3c\x3e-\x7e]", fullmatch=True
)
tracestates = st.dictionaries(tracestate_keys, tracestate_values, max_size=8).map(
    lambda d: tuple(d.items())
)


@given(contexts(), tracestates)
def test_round_trip_keeps_ids_decision_debug_parent_and_tracestate(
    context: TraceContext, members: tuple[tuple[str, str], ...]
) -> None:
    context = context.replace(
        sampled=bool(context.sampled), extra={"tracestate": members} if members else None
    )
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    assert w3c.extract(headers) == context


@given(header_text)
def test_traceparent_parser_never_raises(value: str) -> None:
    assert_valid_or_none(w3c.parse_traceparent(value))


@given(st.lists(header_text, max_size=3))
def test_tracestate_parser_never_raises(values: list[str]) -> None:
    members = w3c.parse_tracestate(values)
    assert members is None or len(members) <= 32


@given(st.data())
def test_near_valid_traceparents_parse_or_are_rejected(data: st.DataObject) -> None:
    valid = w3c.format_traceparent(data.draw(contexts()))
    assert_valid_or_none(w3c.extract({"traceparent": data.draw(mutations(valid))}))


@given(st.data())
def test_near_valid_tracestates_never_break_extraction(data: st.DataObject) -> None:
    headers: dict[str, str] = {}
    w3c.inject(
        TraceContext(1, 2, sampled=True, extra={"tracestate": data.draw(tracestates)}), headers
    )
    headers["tracestate"] = data.draw(mutations(headers["tracestate"]))
    context = w3c.extract(headers)
    assert context is not None and context.trace_id == 1
