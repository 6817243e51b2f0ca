"""Samplers decide which new traces are recorded."""

from __future__ import annotations

import os
import random
import signal
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.thread_calls import all_at_once
from tomograph import TraceContext, Tracer
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import (
    ParentBasedSampler,
    always,
    constant_root_decision,
    never,
    parent_based,
    probabilistic,
    rate_limited,
    undo_root_sample,
)


def test_always_and_never() -> None:
    assert always()(123, None) is True
    assert never()(123, None) is False


@pytest.mark.parametrize("rate", [0.0, 0.01, 0.25, 0.5, 0.9, 1.0])
def test_probabilistic_rate_is_close_to_target(rate: float) -> None:
    sampler = probabilistic(rate)
    rng = random.Random(7)
    n = 20_000
    hits = sum(sampler(rng.getrandbits(128), None) for _ in range(n))
    assert abs(hits / n - rate) < 0.02


@given(st.integers(min_value=1, max_value=2**128 - 1))
def test_probabilistic_is_deterministic_per_trace(trace_id: int) -> None:
    assert probabilistic(0.3)(trace_id, None) == probabilistic(0.3)(trace_id, None)


@given(st.integers(min_value=1, max_value=2**128 - 1))
def test_probabilistic_lower_rate_samples_a_subset(trace_id: int) -> None:
    if probabilistic(0.1)(trace_id, None):
        assert probabilistic(0.2)(trace_id, None)


@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", None, True])
def test_probabilistic_rejects_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        probabilistic(bad)  # type: ignore[arg-type]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sampled_over(per_second: float, seconds: float, step: float) -> list[float]:
    """The times at which ``rate_limited(per_second)`` admits, asked every ``step`` seconds."""
    clock = FakeClock()
    sampler = rate_limited(per_second, clock=clock)
    start = clock.now
    admitted = []
    for tick in range(round(seconds / step) + 1):
        clock.now = start + tick * step
        if sampler(tick, None):
            admitted.append(round(clock.now - start, 6))
    return admitted


def test_rate_limited_allows_bursts_up_to_rate_then_refills() -> None:
    clock = FakeClock()
    sampler = rate_limited(5, clock=clock)
    assert [sampler(n, None) for n in range(7)].count(True) == 5
    clock.now += 0.4
    assert [sampler(n, None) for n in range(7)].count(True) == 2


def test_rate_limited_below_one_per_second_samples_at_that_rate() -> None:
    # rate_limited(0.5) once sampled nothing at all: the bucket never reached a whole token.
    assert sampled_over(0.5, seconds=3, step=0.1) == [0.0, 2.0]
    assert sampled_over(0.5, seconds=10, step=0.25) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]


def test_rate_limited_one_per_minute() -> None:
    admitted = sampled_over(1 / 60, seconds=3600, step=1.0)
    assert admitted == [60.0 * minute for minute in range(61)]


def test_rate_limited_zero_samples_nothing() -> None:
    clock = FakeClock()
    sampler = rate_limited(0, clock=clock)
    assert not any(sampler(n, None) for n in range(10))
    clock.now += 1e9
    assert not sampler(1, None)


def test_rate_limited_huge_rate_samples_everything() -> None:
    sampler = rate_limited(1e300, clock=FakeClock())
    assert all(sampler(n, None) for n in range(1000))


def test_rate_limited_clock_going_back_admits_nothing_extra() -> None:
    clock = FakeClock()
    sampler = rate_limited(1, clock=clock)
    assert sampler(1, None)
    clock.now -= 100
    assert not sampler(2, None)
    clock.now += 100.5
    assert not sampler(3, None)
    clock.now += 0.5
    assert sampler(4, None)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True, "1", None])
def test_rate_limited_rejects_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError, match="traces per second"):
        rate_limited(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("per_second", [1, 10, 0.5])
def test_rate_limited_admits_no_more_than_the_rate_under_32_threads(per_second: float) -> None:
    clock = FakeClock()
    sampler = rate_limited(per_second, clock=clock)
    burst = max(1, int(per_second))
    for _ in range(3):
        per_thread: list[list[bool]] = [[] for _ in range(32)]

        def ask_many(index: int, per_thread: list[list[bool]] = per_thread) -> None:
            per_thread[index].extend(sampler(n, None) for n in range(200))

        all_at_once(32, ask_many)
        assert sum(sum(out) for out in per_thread) == burst
        clock.now += 2  # more than enough to refill: the bucket still holds only its burst


def test_undo_root_sample_gives_back_a_rate_limited_trace() -> None:
    sampler = parent_based(rate_limited(1, clock=FakeClock()))
    assert sampler(1, None)
    assert not sampler(2, None)
    undo_root_sample(sampler)
    assert sampler(3, None)
    undo_root_sample(sampler)
    undo_root_sample(sampler)  # the bucket never holds more than its burst
    assert sampler(4, None)
    assert not sampler(5, None)


def test_parent_based_needs_a_callable_root() -> None:
    with pytest.raises(ValueError, match="callable"):
        ParentBasedSampler(None)  # type: ignore[arg-type]


def test_parent_based_obeys_upstream_then_root() -> None:
    sampler = parent_based(never())
    assert sampler(1, TraceContext(1, 2, sampled=True)) is True
    assert sampler(1, TraceContext(1, 2, sampled=False)) is False
    assert sampler(1, TraceContext(1, 2, sampled=None)) is False
    assert sampler(1, None) is False
    assert parent_based()(1, None) is True


def test_constant_root_decisions() -> None:
    assert constant_root_decision(always()) is True
    assert constant_root_decision(parent_based()) is True
    assert constant_root_decision(parent_based(never())) is False
    assert constant_root_decision(probabilistic(0.5)) is None


def test_children_follow_local_parent_whatever_the_sampler() -> None:
    backend = MemoryBackend()
    calls: list[int] = []

    def counting(trace_id: int, parent: TraceContext | None) -> bool:
        calls.append(trace_id)
        return True

    tracer = Tracer("svc", backends=[backend], sampler=counting)
    with tracer.span("root"), tracer.span("a"), tracer.span("b"):
        pass
    assert len(calls) == 1  # only the root asked
    assert len(backend) == 3


def test_probabilistic_tracer_records_about_the_rate() -> None:
    backend = MemoryBackend()
    tracer = Tracer("svc", backends=[backend], sampler=parent_based(probabilistic(0.1)))
    for _ in range(5000):
        with tracer.span("x"):
            pass
    assert 350 <= len(backend) <= 650


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_rate_limited_sampler_works_in_a_child_forked_while_its_lock_was_held() -> None:
    sampler = rate_limited(10, clock=FakeClock())
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with sampler._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: its copy of the lock would never be released
        signal.alarm(10)  # a hang fails the test instead of blocking it
        os._exit(0 if sampler(1, None) else 1)
    release.set()
    holder.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_a_sampler_set_on_a_tracer_decides_its_next_traces() -> None:
    tracer = Tracer("svc")  # records every new trace
    tracer.sampler = never()
    assert not tracer.span("root").sampled
    assert not tracer.span("server", parent=TraceContext(1, 2)).sampled
    tracer.sampler = parent_based(never())
    assert tracer.span("server", parent=TraceContext(1, 2, sampled=True)).sampled
    assert not tracer.span("root").sampled


def test_a_subclass_of_parent_based_is_asked_about_remote_parents() -> None:
    class Contrary(ParentBasedSampler):
        def __call__(self, trace_id: int, parent: TraceContext | None) -> bool:
            return not (parent is not None and parent.sampled)

    tracer = Tracer("svc", sampler=Contrary(always()))
    assert not tracer.span("server", parent=TraceContext(1, 2, sampled=True)).sampled
    assert tracer.span("server", parent=TraceContext(1, 2, sampled=False)).sampled


def test_a_remote_parent_without_a_decision_asks_the_root_sampler() -> None:
    asked: list[int] = []

    def root(trace_id: int, parent: TraceContext | None) -> bool:
        asked.append(trace_id)
        return False

    tracer = Tracer("svc", sampler=parent_based(root))
    assert not tracer.span("server", parent=TraceContext(7, 2)).sampled
    assert tracer.span("server", parent=TraceContext(8, 2, sampled=True)).sampled
    assert tracer.span("server", parent=TraceContext(9, 2, debug=True)).sampled
    assert asked == [7]
