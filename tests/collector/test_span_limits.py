"""The bounds on what one span may hold: names, values and whole spans cut with a marker, times
beyond 2^63 refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tomograph.collector.ingest import IngestError
from tomograph.collector.span_limits import (
    DROPPED_TAG,
    MAX_NAME_LENGTH,
    SpanLimits,
    limit_spans,
    truncation_marker,
)

LIMITS = SpanLimits(max_value_length=1000, max_span_length=10_000)


def span(**fields: Any) -> dict[str, Any]:
    return {"traceId": "a" * 16, "id": "b" * 16, **fields}


def size(limited: dict[str, Any]) -> int:
    """What the limits count, written out independently: texts plus a little per entry."""
    total = 400 + len(limited.get("name", ""))
    for field in ("localEndpoint", "remoteEndpoint"):
        total += len(limited.get(field, {}).get("serviceName", ""))
    total += sum(len(k) + len(v) + 6 for k, v in limited.get("tags", {}).items())
    total += sum(len(note["value"]) + 40 for note in limited.get("annotations", []))
    return total


def test_a_long_value_keeps_its_start_and_ends_with_how_long_it_was() -> None:
    spans = [span(tags={"big": "a" * 5000, "ok": "b" * 1000})]
    assert limit_spans(spans, LIMITS) == 1
    value = spans[0]["tags"]["big"]
    marker = truncation_marker(5000)
    assert marker == "…[truncated from 5000 characters]"
    assert value == "a" * (1000 - len(marker)) + marker
    assert spans[0]["tags"]["ok"] == "b" * 1000  # at the limit: untouched


def test_long_names_and_keys_are_cut_to_the_name_length() -> None:
    long = "n" * (MAX_NAME_LENGTH + 1)
    spans = [
        span(
            name=long,
            localEndpoint={"serviceName": long},
            remoteEndpoint={"serviceName": long, "port": 80},
            tags={long: "v"},
        )
    ]
    assert limit_spans(spans, LIMITS) == 4
    [limited] = spans
    cut = "n" * (MAX_NAME_LENGTH - len(truncation_marker(len(long)))) + truncation_marker(len(long))
    assert limited["name"] == cut
    assert limited["localEndpoint"]["serviceName"] == cut
    assert limited["remoteEndpoint"] == {"serviceName": cut, "port": 80}
    assert limited["tags"] == {cut: "v"}


def test_a_span_over_the_span_limit_has_its_largest_values_cut_first() -> None:
    tags = {f"k{i}": "x" * 1000 for i in range(12)} | {"tiny": "t"}
    spans = [span(tags=tags)]
    limit_spans(spans, LIMITS)
    [limited] = spans
    assert size(limited) <= LIMITS.max_span_length
    assert limited["tags"]["tiny"] == "t"
    assert DROPPED_TAG not in limited["tags"]


def test_a_span_of_countless_small_tags_drops_what_does_not_fit_and_says_so() -> None:
    tags = {f"key{i:05d}": "v" for i in range(5000)}
    notes = [{"timestamp": i + 1, "value": "n"} for i in range(50)]
    spans = [span(tags=tags, annotations=notes)]
    limit_spans(spans, LIMITS)
    [limited] = spans
    assert size(limited) <= LIMITS.max_span_length
    assert "annotations" not in limited
    dropped = 5000 + 1 - len(limited["tags"])
    assert limited["tags"][DROPPED_TAG].startswith(f"{dropped} tags and 50 annotations dropped")


@pytest.mark.parametrize("field", ["timestamp", "duration"])
def test_times_from_2_63_are_refused_naming_span_and_field(field: str) -> None:
    spans = [span(), span(**{field: 1 << 63})]
    with pytest.raises(IngestError, match=f"span 1: {field} must be below 2\\^63"):
        limit_spans(spans, LIMITS)
    limit_spans([span(**{field: (1 << 63) - 1})], LIMITS)  # the largest the store holds


def test_an_annotation_time_from_2_63_is_refused() -> None:
    spans = [
        span(annotations=[{"timestamp": 1, "value": "a"}, {"timestamp": 1 << 64, "value": "b"}])
    ]
    with pytest.raises(IngestError, match=r"annotations\[1\].timestamp"):
        limit_spans(spans, LIMITS)


@pytest.mark.parametrize("limits", [{"max_value_length": 10}, {"max_span_length": 100}])
def test_limits_too_small_to_hold_a_span_are_refused(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least"):
        SpanLimits(**limits)


texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=3000)


@settings(max_examples=200, deadline=None)
@given(
    name=texts,
    tags=st.dictionaries(st.text(max_size=1100), texts, max_size=30),
    notes=st.lists(texts, max_size=10),
)
def test_any_span_fits_the_limits_and_keeps_what_already_fit(
    name: str, tags: dict[str, str], notes: list[str]
) -> None:
    original = span(
        name=name,
        tags=tags,
        annotations=[{"timestamp": i + 1, "value": v} for i, v in enumerate(notes)],
    )
    spans = [copy.deepcopy(original)]
    changed = limit_spans(spans, LIMITS)
    [limited] = spans
    assert size(limited) <= LIMITS.max_span_length
    assert len(limited.get("name", "")) <= MAX_NAME_LENGTH
    for key, value in limited.get("tags", {}).items():
        assert len(key) <= MAX_NAME_LENGTH
        assert len(value) <= LIMITS.max_value_length or key == DROPPED_TAG
    for note in limited.get("annotations", []):
        assert len(note["value"]) <= LIMITS.max_value_length
    if changed == 0:
        assert limited == original
    for key, value in limited.get("tags", {}).items():  # a value is whole, or cut with a marker
        if key in original["tags"] and value != original["tags"][key]:
            marker = truncation_marker(len(original["tags"][key]))
            assert value.endswith(marker)
            assert original["tags"][key].startswith(value[: -len(marker)])


def test_annotations_cut_to_the_same_text_are_stored_once_in_time_order() -> None:
    # Decoded spans arrive normalized (annotations a set in time order); cutting must keep that.
    long_a, long_b = "x" * 2000 + "a", "x" * 2000 + "b"
    spans = [
        span(
            annotations=[
                {"timestamp": 1, "value": long_a},
                {"timestamp": 1, "value": long_b},
                {"timestamp": 2, "value": "short"},
            ]
        )
    ]
    assert limit_spans(spans, LIMITS) == 2
    cut = "x" * (1000 - len(truncation_marker(2001))) + truncation_marker(2001)
    assert spans[0]["annotations"] == [
        {"timestamp": 1, "value": cut},
        {"timestamp": 2, "value": "short"},
    ]


_LENGTHS = st.sampled_from([0, 1, 999, 1000, 1001, MAX_NAME_LENGTH, MAX_NAME_LENGTH + 1, 3000])


@st.composite
def _spans_near_the_limits(draw: st.DrawFn) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": "n" * draw(_LENGTHS)}
    for field in ("localEndpoint", "remoteEndpoint"):
        if draw(st.booleans()):
            fields[field] = {"serviceName": "s" * draw(_LENGTHS)}
    tags = {
        f"{'k' * draw(_LENGTHS)}{i}": "v" * draw(_LENGTHS) for i in range(draw(st.integers(0, 4)))
    }
    if tags:
        fields["tags"] = tags
    notes = [
        {"timestamp": i, "value": "a" * draw(_LENGTHS)} for i in range(draw(st.integers(0, 3)))
    ]
    if notes:
        fields["annotations"] = notes
    return span(**fields)


@settings(max_examples=300, deadline=None)
@given(_spans_near_the_limits())
def test_a_span_within_every_limit_is_left_as_it_is_and_any_other_is_cut(
    original: dict[str, Any],
) -> None:
    limited = copy.deepcopy(original)
    changed = limit_spans([limited], LIMITS)
    names = [original.get("name", "")] + [
        original[field]["serviceName"]
        for field in ("localEndpoint", "remoteEndpoint")
        if field in original
    ]
    within = (
        all(len(name) <= MAX_NAME_LENGTH for name in names)
        and all(len(key) <= MAX_NAME_LENGTH for key in original.get("tags", {}))
        and all(len(value) <= 1000 for value in original.get("tags", {}).values())
        and all(len(note["value"]) <= 1000 for note in original.get("annotations", []))
        and size(original) <= 10_000
    )
    assert (changed == 0) is within
    assert (limited == original) is within
