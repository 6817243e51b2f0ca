"""One computation per key for everyone asking at once, and never a result older than the ask."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from tomograph.collector.coalescing import CoalescingCache


class Data:
    """A version counter standing for the store's writes."""

    def __init__(self) -> None:
        self.version = 0


def in_threads(count: int, function: Callable[[], object]) -> list[object]:
    results: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        value = function()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    data = Data()
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: data.version, maxsize=4)
    computing, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        computing.set()
        assert release.wait(20)
        return 42

    first = threading.Thread(target=cache.get, args=("day", compute))
    first.start()
    assert computing.wait(20)
    release.set()  # whether the others arrive before or after, nothing changed: no recompute
    assert in_threads(7, lambda: cache.get("day", compute)) == [42] * 7
    first.join(20)
    assert len(calls) == 1


def test_a_caller_arriving_after_a_write_never_gets_an_older_result() -> None:
    data = Data()
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: data.version, maxsize=4)
    computing, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute() -> int:  # the result reflects the data as it was when computing began
        seen = data.version
        calls.append(seen)
        if len(calls) == 1:
            computing.set()
            assert release.wait(20)
        return seen

    first: list[object] = []
    early = threading.Thread(target=lambda: first.append(cache.get("day", compute)))
    early.start()
    assert computing.wait(20)
    data.version = 1  # a write lands while the first computation runs
    release.set()  # the others come during or after it: either way they need a newer one
    results = in_threads(7, lambda: cache.get("day", compute))
    early.join(20)
    assert first == [0]
    assert results == [1] * 7  # all seven share one newer computation
    assert calls == [0, 1]


def test_a_failed_computation_fails_only_its_caller() -> None:
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: 0, maxsize=4)

    def fail() -> int:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.get("day", fail)
    assert cache.get("day", lambda: 7) == 7


def test_waiting_for_another_callers_computation_is_bounded() -> None:
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: 0, maxsize=4)
    computing, release = threading.Event(), threading.Event()

    def slow() -> int:
        computing.set()
        assert release.wait(20)
        return 1

    first = threading.Thread(target=cache.get, args=("day", slow))
    first.start()
    assert computing.wait(20)
    try:
        with pytest.raises(TimeoutError):
            cache.get("day", lambda: 2, timeout=0.05)
    finally:
        release.set()
        first.join(20)


def test_only_the_most_recent_keys_are_kept() -> None:
    cache: CoalescingCache[int, int] = CoalescingCache(lambda: 0, maxsize=2)
    for key in range(10):
        cache.get(key, lambda key=key: key)  # type: ignore[misc]
    assert len(cache._entries) == 2
    assert cache.get(9, lambda: -1) == 9
