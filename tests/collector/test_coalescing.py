"""One computation per key for everyone asking at once, and never an answer older than the ask."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from tomograph.collector.coalescing import CoalescingCache


class Data:
    """A version counter standing for the store's writes."""

    def __init__(self) -> None:
        self.version = 0


async def gather(count: int, ask: Callable[[], Awaitable[int]]) -> list[int]:
    results: list[int] = []

    async def one() -> None:
        results.append(await ask())

    async with anyio.create_task_group() as tasks:
        for _ in range(count):
            tasks.start_soon(one)
    return results


def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    data = Data()
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: data.version, maxsize=4)
    calls: list[int] = []

    async def compute() -> int:
        calls.append(1)
        await anyio.sleep(0)  # a checkpoint: the other callers run, and find it running
        return 42

    async def main() -> list[int]:
        return await gather(8, lambda: cache.get("day", compute))

    assert anyio.run(main) == [42] * 8
    assert calls == [1]


def test_a_caller_arriving_after_a_write_never_gets_an_older_answer() -> None:
    data = Data()
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: data.version, maxsize=4)
    calls: list[int] = []

    async def main() -> tuple[list[int], list[int]]:
        running, release = anyio.Event(), anyio.Event()

        async def compute() -> int:  # the answer reflects the data as it was at the start
            seen = data.version
            calls.append(seen)
            if len(calls) == 1:
                running.set()
                await release.wait()
            return seen

        early: list[int] = []
        async with anyio.create_task_group() as tasks:

            async def ask_early() -> None:
                early.append(await cache.get("day", compute))

            tasks.start_soon(ask_early)
            await running.wait()
            data.version = 1  # a write lands while the first computation runs
            release.set()
            late = await gather(7, lambda: cache.get("day", compute))
        return early, late

    early, late = anyio.run(main)
    assert early == [0]
    assert late == [1] * 7  # all seven share one newer computation
    assert calls == [0, 1]


def test_an_unchanged_answer_is_reused_until_the_next_write() -> None:
    data = Data()
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: data.version, maxsize=4)
    calls: list[int] = []

    async def compute() -> int:
        calls.append(data.version)
        return data.version

    async def ask() -> int:
        return await cache.get("day", compute)

    assert [anyio.run(ask), anyio.run(ask)] == [0, 0]
    data.version = 5
    assert anyio.run(ask) == 5
    assert calls == [0, 5]


def test_waiters_share_the_error_of_the_computation_they_waited_for() -> None:
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: 0, maxsize=4)
    calls: list[int] = []

    async def fail() -> int:
        calls.append(1)
        await anyio.sleep(0)  # a checkpoint: the other callers run, and find it running
        raise RuntimeError("stopped: the query ran too long")

    async def main() -> list[object]:
        outcomes: list[object] = []

        async def one() -> None:
            try:
                outcomes.append(await cache.get("day", fail))
            except RuntimeError as error:
                outcomes.append(error)

        async with anyio.create_task_group() as tasks:
            for _ in range(4):
                tasks.start_soon(one)
        return outcomes

    outcomes = anyio.run(main)
    assert len(outcomes) == 4 and all(isinstance(o, RuntimeError) for o in outcomes)
    assert calls == [1]  # not four failures in a row

    async def ok() -> int:
        return 7

    async def again() -> int:
        return await cache.get("day", ok)

    assert anyio.run(again) == 7  # the next caller computes afresh


def test_only_the_most_recent_keys_are_kept() -> None:
    cache: CoalescingCache[int, int] = CoalescingCache(lambda: 0, maxsize=2)

    async def main() -> int:
        for key in range(10):

            async def value(key: int = key) -> int:
                return key

            await cache.get(key, value)

        async def never() -> int:
            raise AssertionError("key 9 is kept")

        return await cache.get(9, never)

    assert anyio.run(main) == 9
    assert len(cache._entries) == 2


def test_a_cancelled_computation_leaves_the_next_caller_to_compute() -> None:
    cache: CoalescingCache[str, int] = CoalescingCache(lambda: 0, maxsize=4)

    async def forever() -> int:
        await anyio.sleep_forever()
        return 0

    async def main() -> int:
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled at its first checkpoint, inside the computation
            await cache.get("day", forever)

        async def ok() -> int:
            return 3

        return await cache.get("day", ok)

    assert anyio.run(main) == 3
