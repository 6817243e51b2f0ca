"""The bounded cache: values built once per key, never more keys than its bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.thread_calls import all_at_once
from tomograph._cache import BoundedCache, memoize


@given(st.lists(st.integers() | st.text(max_size=5), max_size=200), st.integers(1, 16))
def test_a_bounded_cache_never_holds_more_than_its_bound(keys: list[object], bound: int) -> None:
    cache: BoundedCache[object, int] = BoundedCache(bound)
    for number, key in enumerate(keys):
        cache[key] = number
        assert len(cache) <= bound
        assert cache[key] == number
    cache.update({("a",): 1, ("b",): 2})
    cache.setdefault(("c",), 3)
    assert len(cache) <= bound


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        BoundedCache(0)


def test_memoize_builds_once_per_arguments_and_stays_bounded() -> None:
    built: list[tuple[object, ...]] = []

    def build(*args: object) -> list[object]:
        built.append(args)
        return list(args)

    lookup = memoize(build, 4)
    first = lookup("a", 1)
    assert lookup("a", 1) is first
    assert built == [("a", 1)]
    for number in range(100):
        lookup("b", number)
    assert lookup("a", 1) == ["a", 1]  # built again after the cache emptied: same value
    lookup.cache_clear()
    lookup("a", 1)
    assert built.count(("a", 1)) == 3


def test_memoize_caches_a_result_of_none() -> None:
    calls: list[int] = []

    def nothing(value: int) -> None:
        calls.append(value)

    lookup = memoize(nothing, 8)
    lookup(1)
    lookup(1)
    assert calls == [1]


def test_memoize_builds_unhashable_arguments_every_time() -> None:
    lookup = memoize(lambda value: [value], 8)
    assert lookup([1]) == [[1]]
    assert lookup([1]) is not lookup([1])


def test_memoize_from_32_threads_at_once_gives_equal_values() -> None:
    lookup = memoize(lambda value: ("built", value), 4)
    results: list[object] = []

    def call(n: int) -> None:
        for round_ in range(200):
            results.append(lookup((n + round_) % 9))

    all_at_once(32, call)
    assert len(results) == 32 * 200
    assert all(result == ("built", result[1]) for result in results)  # type: ignore[index]
