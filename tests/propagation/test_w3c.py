"""W3C traceparent and tracestate."""

from __future__ import annotations

import logging
from typing import Any

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


# -- tracestate, with the examples of the W3C Trace Context test suite ------------------------


def _state(*values: str) -> dict[str, str] | None:
    """The tracestate members extracted beside a valid traceparent, as a dict; None if none."""
    context = w3c.extract([("traceparent", VALID), *(("tracestate", v) for v in values)])
    assert context is not None and context.span_id == int(SPAN, 16)  # traceparent always kept
    if context.extra is None:
        return None
    return dict(context.extra["tracestate"])


def test_tracestate_is_kept_in_order_in_extra() -> None:
    context = w3c.extract(
        {"traceparent": VALID, "tracestate": "rojo=00f067aa0ba902b7 , ,congo=t61rcWkgMzE"}
    )
    assert context is not None
    assert context.extra == {"tracestate": (("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE"))}


def test_tracestate_header_name_is_case_insensitive() -> None:
    for name in ("TraceState", "TRACESTATE"):
        context = w3c.extract([("traceparent", VALID), (name, "foo=1")])
        assert context is not None and context.extra == {"tracestate": (("foo", "1"),)}


def test_empty_tracestate_headers_are_skipped() -> None:
    assert _state("") is None
    assert _state("foo=1", "") == {"foo": "1"}
    assert _state("", "foo=1") == {"foo": "1"}


def test_multiple_tracestate_headers_are_combined_in_order() -> None:
    context = w3c.extract(
        [
            ("traceparent", VALID),
            ("tracestate", "foo=1,bar=2"),
            ("tracestate", "rojo=1,congo=2"),
            ("tracestate", "baz=3"),
        ]
    )
    assert context is not None and context.extra is not None
    assert [key for key, _ in context.extra["tracestate"]] == ["foo", "bar", "rojo", "congo", "baz"]


@pytest.mark.parametrize(
    "values",
    [("foo=1,foo=1",), ("foo=1,foo=2",), ("foo=1", "foo=1"), ("foo=1", "foo=2")],
)
def test_duplicated_keys_are_passed_on_and_keep_traceparent(values: tuple[str, ...]) -> None:
    context = w3c.extract([("traceparent", VALID), *(("tracestate", v) for v in values)])
    assert context is not None and context.extra is not None
    expected = tuple(tuple(m.split("=")) for m in ",".join(values).split(","))
    assert context.extra["tracestate"] == expected
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    assert headers["tracestate"].split(",")[1:] == ",".join(values).split(",")


def test_every_allowed_character_is_accepted() -> None:
    key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
    vendor_key = key + "@a-z0-9_-*/"
    value = "".join(map(chr, [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]))
    assert _state(f"{key}={value}") == {key: value}  # the leading space belongs to the value
    assert _state(f"{vendor_key}={value}") == {vendor_key: value}


@pytest.mark.parametrize(
    "value",
    [
        "foo=1 \t , \t bar=2, \t baz=3",
        "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
    ],
)
def test_whitespace_around_members_is_ignored(value: str) -> None:
    assert _state(value) == {"foo": "1", "bar": "2", "baz": "3"}


@pytest.mark.parametrize("value", [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"])
def test_whitespace_around_a_single_member_is_ignored(value: str) -> None:
    assert _state(value) == {"foo": "1"}


@pytest.mark.parametrize(
    "value",
    [
        "foo =1",  # illegal key characters
        "FOO=1",
        "foo.bar=1",
        "@foo=1,bar=2",  # a key must not start with "@"
        "foo=bar=baz",  # illegal value characters
        "foo=,bar=3",  # an empty value
        "foo=1,bar=\u00e9",
        "foo=1,bar=a\x7f",
    ],
)
def test_a_tracestate_that_does_not_parse_is_discarded_whole(value: str) -> None:
    assert _state(value) is None
    assert w3c.parse_tracestate(value) is None


@pytest.mark.parametrize("key", ["foo@", "foo@@bar", "foo@bar@baz", "0tenant@sys", "1a"])
def test_keys_may_hold_at_signs_anywhere_after_the_first_character(key: str) -> None:
    assert _state(f"{key}=1,bar=2") == {key: "1", "bar": "2"}


def test_32_members_are_read_and_33_do_not_parse() -> None:
    values = [
        ",".join(f"bar{i:02d}={i:02d}" for i in range(1, 11)),
        ",".join(f"bar{i:02d}={i:02d}" for i in range(11, 21)),
        ",".join(f"bar{i:02d}={i:02d}" for i in range(21, 31)),
        "bar31=31,bar32=32",
    ]
    state = _state(*values)
    assert state is not None and len(state) == 32 and state["bar01"] == "01"
    assert _state(*values[:3], "bar31=31,bar32=32,bar33=33") is None


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("z" * 256, True),
        ("z" * 257, False),
        ("t" * 241 + "@" + "v" * 14, True),
        ("t" * 242 + "@v", True),
        ("t@" + "v" * 15, True),
        ("t" * 199 + "@" + "v" * 56, True),
        ("t" * 200 + "@" + "v" * 56, False),
    ],
)
def test_keys_hold_up_to_256_characters(key: str, valid: bool) -> None:
    state = _state("foo=1", f"{key}=1")
    assert state == ({"foo": "1", key: "1"} if valid else None)


@pytest.mark.parametrize(("length", "valid"), [(256, True), (257, False)])
def test_values_hold_up_to_256_characters(length: int, valid: bool) -> None:
    assert (_state(f"foo={'x' * length}") is not None) is valid


def test_a_tracestate_over_the_read_limit_is_discarded_whole() -> None:
    assert _state("a=1," * 10000) is None
    # Also when only one of several headers is too long: never read without it.
    assert _state("foo=1", " " * w3c.MAX_TRACESTATE_LENGTH + "bar=2") is None
    assert _state("foo=1", " " * 1000 + "bar=2") == {"foo": "1", "bar": "2"}


def test_tracestate_without_a_valid_traceparent_is_not_read() -> None:
    assert w3c.extract({"tracestate": "foo=1"}) is None
    assert w3c.extract({"traceparent": f"ff-{TRACE}-{SPAN}-01", "tracestate": "foo=1"}) is None


def test_our_member_is_updated_and_moved_first() -> None:
    context = TraceContext(
        int(TRACE, 16), 0x42, sampled=True, extra={"tracestate": (("rojo", "1"), ("congo", "2"))}
    )
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    assert headers["tracestate"] == "tomograph=0000000000000042;1,rojo=1,congo=2"


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


def test_our_member_appears_once_whatever_upstream_sent() -> None:
    state = f"tomograph={SPAN};d,rojo=1,tomograph=1111111111111111;1,congo=2"
    context = w3c.extract({"traceparent": VALID, "tracestate": state})
    assert context is not None and context.debug  # the left-most (most recent) one is read
    assert context.extra == {"tracestate": (("rojo", "1"), ("congo", "2"))}
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    assert [m.split("=")[0] for m in headers["tracestate"].split(",")] == [
        "tomograph",
        "rojo",
        "congo",
    ]


# -- what we send: limits and trimming ----------------------------------------------------------

OWN = ("tomograph", f"{SPAN};1;0000000000000007")


def _keys(text: str) -> list[str]:
    return [member.split("=")[0] for member in text.split(",")]


def test_over_512_characters_only_the_needed_large_members_go_from_the_right() -> None:
    # Four vendors of 135 characters each beside our member: 589 characters in all.
    vendors = [(f"vendor{i}", "x" * 127) for i in range(4)]
    text = w3c.format_tracestate(vendors, OWN)
    assert len(f"{OWN[0]}={OWN[1]}") + sum(len(k) + len(v) + 2 for k, v in vendors) == 589
    assert _keys(text) == ["tomograph", "vendor0", "vendor1", "vendor2"]
    assert len(text) == 453


def test_large_members_go_before_small_ones_then_the_right_most() -> None:
    others = (("small", "1"), ("big", "x" * 200), ("other", "y" * 100), ("more", "z" * 250))
    assert _keys(w3c.format_tracestate(others, ("tomograph", "s"))) == [
        "tomograph",
        "small",
        "big",
        "other",
    ]
    small = tuple((f"k{i:02d}", "v" * 100) for i in range(6))  # 105 characters each
    large = (("huge", "h" * 200),)
    text = w3c.format_tracestate(small[:2] + large + small[2:], OWN)
    assert _keys(text) == ["tomograph", "k00", "k01", "k02", "k03"]


def test_what_fits_is_sent_whole() -> None:
    members = tuple((f"k{i}", "v" * 10) for i in range(31))
    text = w3c.format_tracestate(members, ("tomograph", "s"))
    assert len(text) <= 512 and _keys(text) == ["tomograph", *(key for key, _ in members)]


def test_at_most_32_members_are_sent_dropping_the_right_most() -> None:
    others = tuple((f"k{i}", "v") for i in range(32))
    headers: dict[str, str] = {}
    w3c.inject(TraceContext(1, 2, sampled=True, extra={"tracestate": others}), headers)
    keys = _keys(headers["tracestate"])
    assert len(keys) == 32 and keys[0] == "tomograph" and keys[-1] == "k30"


@pytest.mark.parametrize(
    "members",
    [
        "rojo=1,congo=2",  # a string, as a user might set it
        [("rojo", "1"), ["congo", "2"]],
        (("rojo", "1"), ("Bad Key", "x"), ("congo", "2"), ("x", "a,b=c"), ("y", "")),
        (("rojo", "1"), ("x", "v\r\nX-Injected: 1"), ("congo", "2")),  # would split the header
        (("rojo", "1"), ("congo", "2"), "junk", ("too", "many", "fields"), (1, 2)),
    ],
)
def test_hand_made_tracestate_is_sent_valid_and_never_raises(members: Any) -> None:
    headers: dict[str, str] = {}
    w3c.inject(TraceContext(1, 2, sampled=True, extra={"tracestate": members}), headers)
    assert headers["tracestate"] == "tomograph=0000000000000002;1,rojo=1,congo=2"


@pytest.mark.parametrize("members", ["not a tracestate", 42, None, ((),)])
def test_unusable_tracestate_in_extra_sends_our_member_alone(members: Any) -> None:
    headers: dict[str, str] = {}
    w3c.inject(TraceContext(1, 2, sampled=True, extra={"tracestate": members}), headers)
    assert headers["tracestate"] == "tomograph=0000000000000002;1"


# -- properties ------------------------------------------------------------------------------

tracestate_keys = st.from_regex(r"[a-z0-9][a-z0-9_\-*/@]{0,20}", fullmatch=True).filter(
    lambda key: key != "tomograph"
)
long_keys = st.from_regex(r"[a-z0-9][a-z0-9_\-*/@]{0,255}", fullmatch=True)
tracestate_values = st.from_regex(
    r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,20}[\x21-\x2b\x2d-\x3c\x3e-\x7e]", fullmatch=True
)
long_values = st.from_regex(
    r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]", fullmatch=True
)
tracestates = st.dictionaries(tracestate_keys, tracestate_values, max_size=8).map(
    lambda d: tuple(d.items())
)
#: Valid members of any size, duplicates allowed, sometimes more than fit.
member_lists = st.lists(
    st.tuples(tracestate_keys | long_keys.filter(lambda k: k != "tomograph"), tracestate_values)
    | st.tuples(tracestate_keys, long_values),
    max_size=40,
)
own_members = st.tuples(st.just("tomograph"), st.from_regex(r"[0-9a-f]{16};[01d]", fullmatch=True))


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


@given(member_lists.filter(lambda m: len(m) <= 32))
def test_parse_gives_back_what_format_wrote_when_it_fits(members: list[tuple[str, str]]) -> None:
    text = w3c.format_tracestate(members)
    if len(",".join(f"{k}={v}" for k, v in members)) <= 512:
        assert w3c.parse_tracestate(text) == tuple(members)


def _removed(offered: list[tuple[str, str]], kept: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The members of ``offered`` missing from its subsequence ``kept``, in order."""
    removed, position = [], 0
    for member in offered:
        if position < len(kept) and kept[position] == member:
            position += 1
        else:
            removed.append(member)
    assert position == len(kept), "kept is not a subsequence of what was offered"
    return removed


def _size(member: tuple[str, str]) -> int:
    return len(member[0]) + 1 + len(member[1])


@given(member_lists, own_members | st.none())
def test_format_is_valid_within_limits_and_drops_only_what_it_must(
    members: list[tuple[str, str]], own: tuple[str, str] | None
) -> None:
    text = w3c.format_tracestate(members, own)
    parsed = w3c.parse_tracestate(text)
    assert parsed is not None  # always a valid list
    assert len(text) <= 512 and len(parsed) <= 32
    kept = list(parsed)
    offered = (([own] if own else []) + members)[:32]  # over 32, the right-most go first
    if own:
        assert kept[0] == own
    removed = _removed(offered, kept)
    if len(",".join(f"{k}={v}" for k, v in offered)) <= 512:
        assert not removed  # what fits is sent whole
        return
    large = [m for m in offered if _size(m) > 128 and m != own]
    small = [m for m in offered if _size(m) <= 128 and m != own]
    removed_small = [m for m in removed if _size(m) <= 128]
    removed_large = [m for m in removed if _size(m) > 128]
    # Large members go first, from the right; small ones only once no large one is left.
    assert large[: len(large) - len(removed_large)] == [m for m in kept if m in large]
    if removed_small:
        assert not removed_large or len(removed_large) == len(large)
        assert small[: len(small) - len(removed_small)] == [m for m in kept if m in small]
    # Only what is needed: the member removed last would not have fitted back.
    last = removed_small[0] if removed_small else removed_large[0]
    assert len(text) + 1 + _size(last) > 512


@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=30)) | st.text(), max_size=10))
def test_format_never_raises_and_sends_only_valid_members(members: list[Any]) -> None:
    text = w3c.format_tracestate(members, ("tomograph", "x"))
    assert w3c.parse_tracestate(text) is not None


@given(header_text)
def test_traceparent_parser_never_raises(value: str) -> None:
    assert_valid_or_none(w3c.parse_traceparent(value))


@given(st.lists(header_text, max_size=3))
def test_tracestate_parser_never_raises(values: list[str]) -> None:
    members = w3c.parse_tracestate(values)
    assert members is None or len(members) <= 32


@given(st.data())
def test_near_valid_traceparents_parse_or_are_rejected(data: st.DataObject) -> None:
    headers: dict[str, str] = {}
    w3c.inject(data.draw(contexts()), headers)
    valid = headers["traceparent"]
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


# -- parsed tracestate lists come from a cache: the same answers, the same log lines ----------
#: What may stand in front of the other members: our member as we write it, one that only looks
#: like it (spaces, an odd length, upper case), or nothing.
leading_members = st.one_of(
    st.none(),
    st.from_regex(r"tomograph=[0-9a-f]{16};[01d](;[0-9a-f]{16})?", fullmatch=True),
    st.from_regex(r"tomograph=[0-9a-fA-F;d ]{0,40}[ \t]*", fullmatch=True),
)


@given(leading_members, member_lists, st.booleans())
def test_tracestate_read_again_gives_what_the_parser_gives(
    leading: str | None, members: list[tuple[str, str]], break_one: bool
) -> None:
    texts = [f"{key}={value}" for key, value in members]
    if break_one and texts:
        texts[len(texts) // 2] = "=broken"
    value = ",".join(([leading] if leading is not None else []) + texts)
    expected = w3c.parse_tracestate(value)
    for _ in range(2):  # the second time from the cache
        assert w3c._parsed_tracestate(value) == expected


def test_a_malformed_tracestate_is_logged_every_time_it_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers = {"traceparent": VALID, "tracestate": f"tomograph={SPAN};1,@bad=1"}
    with caplog.at_level(logging.DEBUG, logger="tomograph.propagation"):
        for _ in range(2):
            context = w3c.extract(headers)
            assert context is not None and context.extra is None
    assert caplog.text.count("malformed member") == 2


def test_our_member_then_32_others_do_not_parse_even_from_the_cache() -> None:
    others = ",".join(f"k{n}=v" for n in range(32))
    w3c.parse_tracestate(others)  # 32 members alone parse, and are cached
    assert w3c._parsed_tracestate(others) is not None
    assert w3c._parsed_tracestate(f"tomograph=00f067aa0ba902b7;1,{others}") is None


def _spec_traceparent(value: str) -> tuple[int, int, bool] | None:
    """What W3C's grammar says a version-00 traceparent holds, written out independently."""
    lower_hex = set("0123456789abcdef")
    parts = value.split("-")
    if len(parts) != 4 or [len(p) for p in parts] != [2, 32, 16, 2] or parts[0] != "00":
        return None
    if not all(set(p) <= lower_hex for p in parts):
        return None
    trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, bool(int(parts[3], 16) & 1)


@given(st.data())
def test_version_00_traceparents_read_as_the_grammar_says(data: st.DataObject) -> None:
    headers: dict[str, str] = {}
    w3c.inject(data.draw(contexts()), headers)
    value = data.draw(mutations(headers["traceparent"]) | st.just(headers["traceparent"]))
    if value.startswith("00-"):
        assert w3c._traceparent_fields(value) == _spec_traceparent(value)


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-+{TRACE[1:]}-{SPAN}-01",
        f"00- {TRACE[1:]}-{SPAN}-01",
        f"00-{TRACE[:4]}_{TRACE[5:]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-1_",
        f"00-{TRACE}-{SPAN[:15]}\u0663-01",  # an Arabic-Indic digit, which int() reads
        f"00-{'0' * 32}-{SPAN}-01",
    ],
)
def test_what_int_accepts_but_the_grammar_does_not_is_rejected(value: str) -> None:
    assert w3c.parse_traceparent(value) is None


def _careful(traceparent: str, tracestate: str) -> TraceContext | None:
    fields = w3c._traceparent_fields(traceparent)
    return None if fields is None else w3c._context(fields, tracestate)


_FOREIGN_LISTS = st.sampled_from(
    [
        "",
        ",rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        ", rojo=1 ,,congo=2",
        ",rojo=1,tomograph=0000000000000001;1",
        ",tomograph=00f067aa0ba902b7;d,rojo=1",
        ",bad key=1",
        "," + ",".join(f"k{n}=v" for n in range(30)),
        "," + ",".join(f"k{n}=v" for n in range(31)),
        "," + ",".join(f"k{n}=v" for n in range(32)),
        ",",
        ",rojo=\n1",
    ]
)


@st.composite
def _header_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """traceparent and tracestate as one tomograph writes them for another, then (often)
    changed: other vendors' lists valid and not, near-miss edits, our member for another span."""
    context = draw(contexts())
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    traceparent = headers["traceparent"]
    tracestate = headers["tracestate"] + draw(_FOREIGN_LISTS)
    change = draw(st.sampled_from(["none", "none", "parent", "state", "other span", "zero"]))
    if change == "parent":
        traceparent = draw(mutations(traceparent))
    elif change == "state":
        tracestate = draw(mutations(tracestate) | header_text)
    elif change == "other span":
        own = f"{draw(st.integers(1, 2**64 - 1)):016x}"
        tracestate = tracestate.replace(traceparent[36:52], own, 1)
    elif change == "zero":
        traceparent = traceparent[:3] + "0" * 32 + traceparent[35:]
    return traceparent, tracestate


@given(_header_pairs(), st.booleans())
def test_the_quick_path_for_our_own_member_gives_what_the_careful_path_gives(
    pair: tuple[str, str], careful_first: bool
) -> None:
    traceparent, tracestate = pair
    if careful_first:  # other vendors' members then come from the caches
        _careful(traceparent, tracestate)
    else:
        w3c._PARSED.clear()
        w3c._AFTER_OURS.clear()
    quick = w3c._ours(traceparent, tracestate)
    if quick is not None:
        assert quick == _careful(traceparent, tracestate)
    assert w3c.extract_dict(
        {"traceparent": traceparent, "tracestate": tracestate}, False
    ) == _careful(traceparent, tracestate)


def test_our_own_member_takes_the_quick_path() -> None:
    context = TraceContext(
        int(TRACE, 16), int(SPAN, 16), 0x0020000000000001, sampled=True, debug=True
    ).replace(extra={"tracestate": (("rojo", "1"), ("congo", "2"))})
    headers: dict[str, str] = {}
    w3c.inject(context, headers)
    w3c.extract(headers)  # reads the other vendors' members once
    quick = w3c._ours(headers["traceparent"], headers["tracestate"])
    assert quick == context
