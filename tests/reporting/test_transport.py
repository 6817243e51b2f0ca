"""BatchingTransport: never blocks, bounded, batches, retries, counts every span."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Sequence

import pytest

from support.thread_calls import recorded_calls
from tomograph import Tracer
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.transport import BatchingTransport, SendError
from tomograph.span import Span


class RecordingSender:
    """A sender that keeps payload sizes in memory and fails as told (``failures``)."""

    name = "recording"

    def __init__(
        self, failures: Sequence[SendError | Exception] = (), block: threading.Event | None = None
    ):
        self.failures = list(failures)
        self.batches: list[int] = []
        self.attempts: list[float] = []
        self.block = block
        self.resets = 0
        self.closed = False

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        return [(len(spans), b"x" * len(spans))]

    def send(self, payload: bytes) -> None:
        self.attempts.append(time.monotonic())
        if self.block is not None:
            self.block.wait(10)
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(len(payload))

    def reset(self) -> None:
        self.resets += 1

    def close(self) -> None:
        self.closed = True


def _spans(count: int) -> list[Span]:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    for index in range(count):
        with tracer.span(f"op{index}"):
            pass
    return memory.spans


def _adds_up(transport: BatchingTransport) -> None:
    stats = transport.stats()
    assert stats["queued"] == stats["sent"] + stats["dropped"] + stats["failed"] + stats["pending"]


def test_spans_are_sent_in_batches_of_batch_size() -> None:
    sender = RecordingSender()
    transport = BatchingTransport(sender, batch_size=10, interval=0.05)
    for span in _spans(25):
        transport.report(span)
    assert transport.flush(5)
    assert sorted(sender.batches, reverse=True) == [10, 10, 5]
    assert transport.stats()["sent"] == 25
    assert transport.stats()["batches"] == 3
    _adds_up(transport)
    transport.close(1)


def test_full_queue_drops_new_spans_without_blocking_and_counts_them() -> None:
    gate = threading.Event()
    sender = RecordingSender(block=gate)
    transport = BatchingTransport(sender, queue_size=50, batch_size=10, interval=0.01)
    spans = _spans(10)
    for _ in range(100):
        for span in spans:
            transport.report(span)
    assert len(transport._queue) <= 50  # memory stays bounded
    stats = transport.stats()
    assert stats["dropped"] >= 1000 - 50 - 10
    gate.set()
    assert transport.flush(5)
    stats = transport.stats()
    assert stats["queued"] == 1000
    assert stats["sent"] + stats["dropped"] == 1000
    _adds_up(transport)
    transport.close(1)


def test_retryable_errors_are_retried_with_backoff_then_delivered() -> None:
    sender = RecordingSender([SendError("503", retryable=True)] * 2)
    transport = BatchingTransport(sender, interval=0.01, backoff=0.05)
    transport.report(_spans(1)[0])
    assert transport.flush(5)
    assert transport.stats()["sent"] == 1
    assert transport.stats()["retries"] == 2
    first, second, third = sender.attempts
    assert second - first >= 0.025 and third - second >= 0.05  # jittered, doubling
    transport.close(1)


def test_retry_after_sets_the_delay() -> None:
    sender = RecordingSender([SendError("429", retryable=True, retry_after=0.4)])
    transport = BatchingTransport(sender, interval=0.01, backoff=0.001)
    transport.report(_spans(1)[0])
    assert transport.flush(5)
    assert sender.attempts[1] - sender.attempts[0] >= 0.4
    transport.close(1)


def test_final_errors_are_not_retried_and_count_as_failed(caplog: pytest.LogCaptureFixture) -> None:
    sender = RecordingSender([SendError("HTTP 400", retryable=False)] * 2)
    transport = BatchingTransport(sender, batch_size=1, interval=0.01)
    for span in _spans(2):
        transport.report(span)
    assert transport.flush(5)
    assert len(sender.attempts) == 2
    assert transport.stats()["failed"] == 2
    assert sum("refused spans" in r.getMessage() for r in caplog.records) == 1  # logged once
    transport.close(1)


def test_spans_fail_after_max_retries() -> None:
    sender = RecordingSender([SendError("down", retryable=True)] * 10)
    transport = BatchingTransport(sender, interval=0.01, backoff=0.001, max_retries=2)
    transport.report(_spans(1)[0])
    assert transport.flush(5)
    assert len(sender.attempts) == 3
    assert transport.stats()["failed"] == 1
    _adds_up(transport)
    transport.close(1)


def test_a_span_the_encoder_fails_on_fails_alone(caplog: pytest.LogCaptureFixture) -> None:
    class Picky(RecordingSender):
        def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
            if any(span.name == "unencodable" for span in spans):
                raise ValueError("cannot encode this one")
            return super().encode(spans)

    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    for index in range(100):
        with tracer.span("unencodable" if index == 61 else "op"):
            pass
    sender = Picky()
    transport = BatchingTransport(sender, batch_size=100, interval=60)
    for span in memory.spans:
        transport.report(span)
    assert transport.flush(5)
    stats = transport.stats()
    assert (stats["sent"], stats["failed"]) == (99, 1)
    assert sum(sender.batches) == 99
    failures = [r for r in caplog.records if "encoding a span" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    transport.close(1)


def test_an_encoder_bug_fails_its_span_but_not_the_worker() -> None:
    class Broken(RecordingSender):
        def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
            if any(span.name == "op0" for span in spans):
                raise RuntimeError("bug")
            return super().encode(spans)

    sender = Broken()
    transport = BatchingTransport(sender, interval=0.01)
    poison, good = _spans(2)
    transport.report(poison)
    assert transport.flush(5)
    transport.report(good)
    assert transport.flush(5)
    assert transport.stats()["failed"] == 1
    assert transport.stats()["sent"] == 1
    transport.close(1)


def test_flush_times_out_while_the_sender_hangs() -> None:
    gate = threading.Event()
    transport = BatchingTransport(RecordingSender(block=gate), interval=0.01)
    transport.report(_spans(1)[0])
    # the sender hangs for 10 s: a flush that ignored its timeout would end True
    assert transport.flush(0.2) is False
    gate.set()
    assert transport.flush(5)
    transport.close(1)


def test_after_close_reports_are_dropped_and_the_sender_closed() -> None:
    sender = RecordingSender()
    transport = BatchingTransport(sender, interval=0.01)
    transport.report(_spans(1)[0])
    transport.close(2)
    transport.report(_spans(1)[0])
    stats = transport.stats()
    assert (stats["sent"], stats["dropped"], stats["queued"]) == (1, 1, 2)
    assert sender.closed
    _adds_up(transport)


def test_close_counts_what_it_could_not_send_as_dropped() -> None:
    gate = threading.Event()
    transport = BatchingTransport(RecordingSender(block=gate), batch_size=1, interval=0.01)
    for span in _spans(3):
        transport.report(span)
    transport.close(0.1)
    gate.set()
    worker = transport._worker
    assert worker is not None
    worker.join(10)  # the send it was blocked in has finished and been counted
    assert not worker.is_alive()
    stats = transport.stats()
    assert stats["queued"] == 3
    assert stats["dropped"] >= 1
    _adds_up(transport)


def test_many_threads_reporting_lose_nothing() -> None:
    sender = RecordingSender()
    transport = BatchingTransport(sender, queue_size=100_000, interval=0.01)
    spans = _spans(50)

    def work() -> None:
        for _ in range(40):
            for span in spans:
                transport.report(span)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert transport.flush(10)
    assert transport.stats()["sent"] == sum(sender.batches) == 4 * 40 * 50
    transport.close(1)


def test_report_only_checks_the_length_and_appends_while_the_worker_runs() -> None:
    # The hot path's budget, stated instead of timed: no lock, no system call, no formatting.
    transport = BatchingTransport(RecordingSender(), queue_size=10**6, batch_size=10**6)
    span = _spans(1)[0]
    transport.report(span)  # starts the worker
    report = transport.report
    with recorded_calls() as calls:
        for _ in range(1000):
            report(span)
    assert set(calls) == {
        "tomograph.reporting.transport.report",
        "builtins.len",
        "collections.deque.append",
    }
    assert transport.stats()["queued"] == 1001
    transport.close(5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queue_size": 0},
        {"batch_size": 0},
        {"interval": 0},
        {"max_retries": -1},
        {"backoff": -1},
        {"interval": float("inf")},
        {"interval": float("nan")},
        {"max_backoff": float("inf")},
        {"retry_deadline": float("nan")},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchingTransport(RecordingSender(), **kwargs)  # type: ignore[arg-type]


def test_every_stats_snapshot_adds_up_while_batches_are_sent() -> None:
    # A batch moves from pending to sent or failed in one step: no snapshot counts it twice.
    sender = RecordingSender([SendError("HTTP 400", retryable=False)] * 50)
    transport = BatchingTransport(sender, queue_size=100_000, batch_size=5, interval=0.01)
    spans = _spans(20)
    done = threading.Event()
    broken: list[dict[str, int]] = []

    def watch() -> None:
        while not done.is_set():
            stats = transport.stats()
            if stats["queued"] != (
                stats["sent"] + stats["dropped"] + stats["failed"] + stats["pending"]
            ):
                broken.append(dict(stats))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(250):
            for span in spans:
                transport.report(span)
        assert transport.flush(10)
    finally:
        done.set()
        watcher.join()
    assert broken == []
    assert transport.stats()["sent"] + transport.stats()["failed"] == 5000
    transport.close(1)


def test_a_sender_that_miscounts_its_payloads_cannot_lose_spans_from_the_counters(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Miscounting(RecordingSender):
        def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
            return [(len(spans) - 1, b"x")]  # forgets one span per batch

    transport = BatchingTransport(Miscounting(), batch_size=10, interval=0.01)
    for span in _spans(30):
        transport.report(span)
    assert transport.flush(5)
    stats = transport.stats()
    assert (stats["queued"], stats["sent"], stats["failed"]) == (30, 27, 3)
    assert sum("the rest count as failed" in r.getMessage() for r in caplog.records) == 1
    transport.close(1)


def test_a_full_queue_is_logged_once_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    transport = BatchingTransport(
        RecordingSender(block=gate), queue_size=20, batch_size=10, interval=0.01
    )
    spans = _spans(10)
    for _ in range(50):
        for span in spans:
            transport.report(span)
    assert transport.stats()["dropped"] >= 500 - 20 - 10
    gate.set()  # the worker logs it (never the application thread) after its send
    assert transport.flush(5)
    full = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelname == "WARNING"
    assert full[0].threadName == transport._worker.name  # type: ignore[union-attr]
    _adds_up(transport)
    transport.close(1)


def test_spans_reported_after_close_are_dropped_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = BatchingTransport(RecordingSender(), interval=0.01)
    transport.close(1)
    for span in _spans(5):
        transport.report(span)
    assert transport.stats()["dropped"] == 5
    assert sum("is closed" in r.getMessage() for r in caplog.records) == 1


def test_a_sender_failing_to_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class BadClose(RecordingSender):
        def close(self) -> None:
            raise OSError("socket already gone")

    transport = BatchingTransport(BadClose(), interval=0.01)
    transport.report(_spans(1)[0])
    transport.close(2)
    messages = [r.getMessage() for r in caplog.records]
    assert "tomograph: closing recording failed" in messages
    assert transport.stats()["sent"] == 1


def test_close_while_a_send_hangs_leaves_the_sender_to_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    closed_during_send: list[bool] = []

    class Watching(RecordingSender):
        def close(self) -> None:
            closed_during_send.append(not gate.is_set())
            super().close()

    sender = Watching(block=gate)
    transport = BatchingTransport(sender, batch_size=2, interval=0.01)
    for span in _spans(5):
        transport.report(span)
    transport.close(0.2)  # the worker is stuck in send() with 2 spans
    assert not sender.closed
    assert any("still being sent" in r.getMessage() for r in caplog.records)
    gate.set()
    worker = transport._worker
    assert worker is not None
    worker.join(10)
    assert closed_during_send == [False]  # closed once, by the worker, after its send
    stats = transport.stats()
    assert (stats["queued"], stats["pending"], stats["sent"], stats["dropped"]) == (5, 0, 2, 3)
    _adds_up(transport)


def test_forked_children_draw_different_backoff_jitter() -> None:
    transport = BatchingTransport(RecordingSender(), backoff=1.0, max_backoff=100.0)
    draws = []
    for _ in range(3):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its first backoff delays after a collector restart
            signal.alarm(10)  # a hang fails the test instead of blocking it
            os.close(read_end)
            delays = [transport._backoff_delay(5, None) for _ in range(4)]
            os.write(write_end, json.dumps(delays).encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            draws.append(tuple(json.loads(pipe.read())))
        os.waitpid(pid, 0)
    parent = tuple(transport._backoff_delay(5, None) for _ in range(4))
    assert len({*draws, parent}) == 4, "forked workers would retry in lockstep"
    transport.close(0)


def test_spans_ending_in_the_future_do_not_make_each_report_check_the_pid() -> None:
    # The fast path compares a span's end time with the next pid check's time: an explicit
    # timestamp far ahead sends the report to the slow path, where the clock decides.
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    for _ in range(100):
        span = tracer.start_span("from the future")
        span.finish(timestamp_us=int(time.time() * 1e6) + 10**12)  # eleven days ahead
    transport = BatchingTransport(RecordingSender(), queue_size=10**6, batch_size=10**6)
    transport.report(_spans(1)[0])  # starts the worker
    spans = memory.spans
    with recorded_calls() as calls:
        for span in spans:
            transport.report(span)
    assert calls.count("posix.getpid") <= 1
    assert transport.stats()["queued"] == 101
    transport.close(5)


class _ClosingWhenTimed:
    """Stands in for a span: reading its end time the second time closes the transport, as a
    thread switch to a thread calling close() could at that moment of a report."""

    def __init__(self, transport: BatchingTransport, end_ns: int) -> None:
        self.transport = transport
        self.reads = 0
        self._end_ns = end_ns

    @property
    def end_ns(self) -> int:
        self.reads += 1
        if self.reads == 1:
            return 2**70  # the fast path's comparison fails: the report takes the slow path
        self.transport.close(5)
        return self._end_ns


def test_a_report_racing_close_leaves_later_spans_to_be_dropped_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The racing report woke the (stopped) worker, which let later spans append freely to a
    # queue nobody drains, without the "closed" log line.
    transport = BatchingTransport(RecordingSender(), interval=0.01)
    spans = _spans(4)
    transport.report(spans[0])
    assert transport.flush(5)
    racing = _ClosingWhenTimed(transport, spans[1].end_ns)
    transport.report(racing)  # type: ignore[arg-type]
    assert racing.reads == 2
    for span in spans[1:]:
        transport.report(span)
    assert sum("is closed" in r.getMessage() for r in caplog.records) == 1
    assert len(transport._queue) <= 1  # at most the span that raced close() waits there
    stats = transport.stats()
    assert (stats["sent"], stats["dropped"], stats["pending"]) == (1, 4, 0)
    _adds_up(transport)
