"""The span clock: monotonic times, mapped to epoch time by an anchor that follows the wall
clock, with every span keeping the offset its local root started with."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tomograph import Tracer, clock
from tomograph.clock import CHECK_INTERVAL_NS, MAX_DRIFT_NS, EpochAnchor
from tomograph.encoding import zipkin_json, zipkin_proto
from tomograph.model import TraceContext
from tomograph.reporting.memory import MemoryBackend

SECOND = 1_000_000_000
STEP = 3600 * SECOND  # an NTP step of one hour


class FakeClocks:
    """A wall clock and a monotonic clock that move only when told to."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000 * SECOND
        self.mono = 50 * SECOND
        self.reads_between = 0  # ns that pass just before the wall clock is read

    def wall_ns(self) -> int:
        # The thread was interrupted just before reading the wall clock.
        self.advance(self.reads_between)
        return self.wall

    def monotonic_ns(self) -> int:
        return self.mono

    def advance(self, ns: int) -> None:
        self.wall += ns
        self.mono += ns


@pytest.fixture
def clocks() -> FakeClocks:
    return FakeClocks()


@pytest.fixture
def anchor(clocks: FakeClocks) -> EpochAnchor:
    return EpochAnchor(wall_ns=clocks.wall_ns, monotonic_ns=clocks.monotonic_ns)


def test_offset_is_wall_minus_monotonic(clocks: FakeClocks, anchor: EpochAnchor) -> None:
    assert anchor.offset_ns == clocks.wall - clocks.mono


def test_a_wall_clock_step_moves_the_offset_at_the_next_check(
    clocks: FakeClocks, anchor: EpochAnchor
) -> None:
    before = anchor.offset_ns
    clocks.wall += STEP
    assert anchor.offset_at(clocks.mono) == before  # not due yet: no clock read
    clocks.advance(CHECK_INTERVAL_NS)
    assert anchor.offset_at(clocks.mono) == before + STEP


def test_drift_within_a_millisecond_keeps_the_offset(
    clocks: FakeClocks, anchor: EpochAnchor
) -> None:
    before = anchor.offset_ns
    clocks.advance(CHECK_INTERVAL_NS)
    clocks.wall += MAX_DRIFT_NS
    assert anchor.offset_at(clocks.mono) == before
    clocks.advance(CHECK_INTERVAL_NS)
    clocks.wall += 1
    assert anchor.offset_at(clocks.mono) == before + MAX_DRIFT_NS + 1


def test_a_comparison_interrupted_between_reads_is_not_trusted(
    clocks: FakeClocks, anchor: EpochAnchor
) -> None:
    before = anchor.offset_ns
    clocks.advance(CHECK_INTERVAL_NS)
    clocks.reads_between = 50_000_000  # 50 ms pass while the wall clock is read
    assert anchor.offset_at(clocks.mono) == before
    clocks.reads_between = 0
    clocks.wall += STEP
    clocks.advance(CHECK_INTERVAL_NS)
    assert anchor.offset_at(clocks.mono) == before + STEP


@pytest.fixture
def stepped_wall(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The process anchor reading a wall clock that is real time plus ``step[0]`` ns."""
    step = [0]
    monkeypatch.setattr(clock.ANCHOR, "wall_ns", lambda: time.time_ns() + step[0])
    monkeypatch.setattr(clock.ANCHOR, "offset_ns", clock.ANCHOR.offset_ns)
    monkeypatch.setattr(clock.ANCHOR, "next_check_ns", clock.ANCHOR.next_check_ns)
    yield step


def _after_next_check() -> None:
    clock.ANCHOR.next_check_ns = clock.monotonic_ns()  # as if a second had passed


def test_new_trace_after_a_wall_clock_step_reports_wall_time(stepped_wall: list[int]) -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    with tracer.span("before"):
        pass
    stepped_wall[0] = STEP
    _after_next_check()
    with tracer.span("after"):
        pass
    before, after = memory.spans
    wall_now_us = (time.time_ns() + STEP) // 1000
    assert abs(after.timestamp - wall_now_us) < 60 * 1_000_000
    assert after.timestamp - before.timestamp >= STEP // 1000 - 60 * 1_000_000


def test_a_span_open_across_the_step_keeps_its_times_consistent(
    stepped_wall: list[int],
) -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    with tracer.span("root") as root:
        root.annotate("early")
        started = root.timestamp
        stepped_wall[0] = STEP
        _after_next_check()
        with tracer.span("child") as child:
            child.annotate("late")
        remote = tracer.start_span("remote child", parent=TraceContext(1, 2, sampled=True))
        remote.finish()
    assert root.timestamp == started
    # The child started after the step but belongs to the trace that started before it.
    assert 0 <= child.timestamp - root.timestamp < 60 * 1_000_000
    assert root.annotations[0].timestamp <= child.annotations[0].timestamp
    assert child.timestamp + (child.duration or 0) <= root.timestamp + (root.duration or 0)
    # A span continuing a remote trace is a local root: it takes the new offset.
    assert remote.timestamp - root.timestamp >= STEP // 1000 - 60 * 1_000_000


def test_encoders_use_each_spans_own_offset(stepped_wall: list[int]) -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    with tracer.span("old", kind="client") as old:
        old.annotate("note")
    stepped_wall[0] = STEP
    _after_next_check()
    with tracer.span("new"):
        pass
    expected = (old.timestamp, old.annotations[0].timestamp)
    from_json = json.loads(zipkin_json.encode_spans(memory.spans))[0]
    from_proto = zipkin_proto.decode_spans(zipkin_proto.encode_spans(memory.spans))[0]
    for decoded in (from_json, from_proto):
        assert (decoded["timestamp"], decoded["annotations"][0]["timestamp"]) == expected


def test_backdated_times_round_trip_with_the_spans_offset(stepped_wall: list[int]) -> None:
    tracer = Tracer("svc", backends=[MemoryBackend()])
    with tracer.span("root") as root:
        stepped_wall[0] = STEP
        _after_next_check()
        tracer.span("trigger", parent=None).finish()  # a new trace moves the anchor
        child = tracer.start_span("child", timestamp_us=root.timestamp + 5)
        child.annotate_at("at", root.timestamp + 7)
        child.finish(root.timestamp + 9)
    assert child.timestamp == root.timestamp + 5
    assert child.annotations[0].timestamp == root.timestamp + 7
    assert child.duration == 4
