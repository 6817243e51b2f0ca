"""Samplers decide which new traces are recorded."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph import TraceContext, Tracer
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import (
    always,
    constant_root_decision,
    never,
    parent_based,
    probabilistic,
    rate_limited,
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


def test_rate_limited_allows_bursts_up_to_rate_then_refills() -> None:
    sampler = rate_limited(5)
    first = [sampler(n, None) for n in range(10)]
    assert first.count(True) == 5
    time.sleep(0.45)
    refilled = [sampler(n, None) for n in range(10)]
    assert 1 <= refilled.count(True) <= 3


def test_rate_limited_zero_samples_nothing() -> None:
    sampler = rate_limited(0)
    assert not any(sampler(n, None) for n in range(10))


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
