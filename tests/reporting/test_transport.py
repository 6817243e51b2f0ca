"""BatchingTransport: never blocks, bounded, batches, retries, counts every span."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

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


def test_enqueue_cost_is_measured() -> None:
    transport = BatchingTransport(RecordingSender(), queue_size=10**6, batch_size=10**6)
    span = _spans(1)[0]
    transport.report(span)  # starts the worker
    report = transport.report
    started = time.perf_counter_ns()
    for _ in range(100_000):
        report(span)
    per_span = (time.perf_counter_ns() - started) / 100_000
    print(f"\nBatchingTransport.report: {per_span:.0f} ns per span")
    assert transport.stats()["queued"] == 100_001
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
