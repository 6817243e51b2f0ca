"""Query-parameter validation of the Zipkin API."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.collector.params import (
    MAX_END_TS,
    OPERATION_KINDS,
    BadRequest,
    parse_operation_kind,
    parse_query_request,
    parse_trace_id,
    parse_trace_ids,
    positive_int,
    present_text,
)


def test_trace_ids_are_padded_and_lower_cased_as_zipkin_does() -> None:
    assert parse_trace_id("ABC") == "0000000000000abc"
    assert parse_trace_id("1" * 17) == "0" * 15 + "1" * 17
    assert parse_trace_id("0" * 16 + "a" * 16) == "a" * 16


@pytest.mark.parametrize("text", ["", "xyz", "a" * 33, "0" * 16, "12 34"])
def test_bad_trace_ids(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_trace_id(text)


@given(st.integers(min_value=1, max_value=(1 << 128) - 1))
def test_any_hex_id_round_trips_to_its_value(value: int) -> None:
    assert int(parse_trace_id(f"{value:x}"), 16) == value


@given(st.text(max_size=40))
def test_any_text_is_an_id_or_bad_request(text: str) -> None:
    try:
        trace_id = parse_trace_id(text)
    except BadRequest:
        return
    assert len(trace_id) in (16, 32)


def test_trace_many_deduplicates_and_needs_two() -> None:
    assert parse_trace_ids("a,b,a") == ["000000000000000a", "000000000000000b"]
    with pytest.raises(BadRequest, match="two"):
        parse_trace_ids("a,a")


def test_query_defaults() -> None:
    query = parse_query_request({}, 60_000, now_ms=1_000_000)
    assert (query.end_ts, query.lookback, query.limit) == (1_000_000, 60_000, 10)
    assert query.service_name is None and query.annotation_query == {}


def test_query_names_are_lower_cased_and_all_means_any() -> None:
    query = parse_query_request(
        {"serviceName": "Web", "spanName": "ALL", "remoteServiceName": " DB "}, 1, now_ms=5
    )
    assert (query.service_name, query.span_name, query.remote_service_name) == ("web", None, "db")


def test_lookback_is_capped_at_end_ts() -> None:
    assert parse_query_request({"endTs": "100", "lookback": "500"}, 1).lookback == 100


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "x"}, "limit must be an integer"),
        ({"limit": "100001"}, "at most"),
        ({"endTs": "0"}, "greater than zero"),
        ({"endTs": str(1 << 63)}, "endTs must be at most"),
        ({"maxDuration": "5"}, "only valid with minDuration"),
        ({"minDuration": "5", "maxDuration": "4"}, "greater than or equal"),
        ({"serviceName": "x" * 2000}, "longer than"),
    ],
)
def test_invalid_queries_name_the_parameter(params: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_query_request(params, 1000, now_ms=10_000)


@pytest.mark.parametrize(
    "text",
    [" 5", "5 ", "+5", "-5", "1_0", "\u0665", "\uff15", "\u00b2", "5\n", "0x10", "1e3", "5.0", "0"],
)
def test_integers_are_plain_ascii_digits_only(text: str) -> None:
    with pytest.raises(BadRequest, match="limit must be"):
        positive_int({"limit": text}, "limit")


def test_integers_are_range_checked_without_converting_huge_text() -> None:
    assert positive_int({"endTs": str(MAX_END_TS)}, "endTs", maximum=MAX_END_TS) == MAX_END_TS
    assert positive_int({"endTs": "000" + "7"}, "endTs", maximum=MAX_END_TS) == 7
    for text in (str(MAX_END_TS + 1), "9" * 5000):
        with pytest.raises(BadRequest, match=f"endTs must be at most {MAX_END_TS}"):
            positive_int({"endTs": text}, "endTs", maximum=MAX_END_TS)


def _is_plain_number(text: str) -> bool:
    return text != "" and all(c in "0123456789" for c in text)


@given(
    st.one_of(
        st.text(max_size=25),
        st.text(alphabet=" +-_.0123456789\u0665\u00b2\uff10", max_size=25),
        st.integers(min_value=-5, max_value=1 << 70).map(str),
    )
)
def test_any_text_is_a_number_in_range_or_bad_request(text: str) -> None:
    maximum = 10**12
    try:
        value = positive_int({"n": text}, "n", default=None, maximum=maximum)
    except BadRequest:
        assert not (_is_plain_number(text) and 0 < int(text) <= maximum)
        return
    if text == "":
        assert value is None
    else:
        assert _is_plain_number(text)
        assert value == int(text)
        assert value is not None and 0 < value <= maximum


@pytest.mark.parametrize("kind", OPERATION_KINDS)
def test_operation_kinds_are_read_in_any_case(kind: str) -> None:
    expected = None if kind == "LOCAL" else kind
    assert parse_operation_kind({"kind": kind.lower()}) == expected
    assert parse_operation_kind({"kind": kind.title()}) == expected


@given(st.text(max_size=20))
def test_any_other_kind_is_a_bad_request_naming_the_kinds(text: str) -> None:
    try:
        kind = parse_operation_kind({"kind": text})
    except BadRequest as error:
        assert "kind must be one of CLIENT, SERVER, PRODUCER, CONSUMER, LOCAL" in str(error)
    else:
        assert text.isascii() and text.upper() in OPERATION_KINDS
        assert kind == (None if text.upper() == "LOCAL" else text.upper())


def test_a_span_name_parameter_may_be_empty_but_not_missing_or_too_long() -> None:
    assert present_text({"spanName": ""}, "spanName") == ""
    assert present_text({"spanName": " GET /A "}, "spanName") == " get /a "
    with pytest.raises(BadRequest, match="spanName is required"):
        present_text({}, "spanName")
    with pytest.raises(BadRequest, match="longer than"):
        present_text({"spanName": "x" * 1025}, "spanName")
