"""Zipkin's annotationQuery syntax."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.collector.annotation_query import format_annotation_query, parse_annotation_query


def test_words_and_key_values() -> None:
    assert parse_annotation_query("error and http.method=GET") == {
        "error": "",
        "http.method": "GET",
    }


def test_terms_are_trimmed_and_values_may_hold_equals() -> None:
    assert parse_annotation_query(" a = b=c  and  flag ") == {"a": "b=c", "flag": ""}


def test_last_key_value_wins_and_a_word_never_overrides_it() -> None:
    assert parse_annotation_query("k=1 and k=2 and k") == {"k": "2"}


def test_empty_query_is_no_constraint() -> None:
    assert parse_annotation_query(None) == {}
    assert parse_annotation_query("") == {}


def test_a_term_without_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="no key"):
        parse_annotation_query("=GET")


_key = st.text(alphabet="abcdefghijklmnopqrstuvwxyz._-0123456789", min_size=1, max_size=12)
_value = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC/._-0123456789", max_size=12)


@given(st.dictionaries(_key, _value, max_size=6))
def test_format_then_parse_round_trips(query: dict[str, str]) -> None:
    assert parse_annotation_query(format_annotation_query(query)) == query


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        result = parse_annotation_query(text)
    except ValueError:
        return
    assert all(key == key.strip() and key for key in result)
