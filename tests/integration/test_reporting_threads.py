"""Threads racing the transport, against a real Zipkin endpoint: nothing lost, nothing twice.

The first report from 32 threads at once, flush and close from several threads, close from
inside the worker, close racing reports: each span ends in exactly one counter, one worker
uses the sender, and the sender is closed once, never in the middle of a send.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest

from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer
from tomograph.reporting._http import HttpSender
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.transport import BatchingTransport
from tomograph.reporting.zipkin import ZipkinBackend
from tomograph.span import Span

pytestmark = pytest.mark.integration

THREADS = 32


def _spans(count: int, name: str = "op") -> list[Span]:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    for _ in range(count):
        with tracer.span(name):
            pass
    return memory.spans


def _adds_up(transport: BatchingTransport) -> dict[str, int]:
    stats = dict(transport.stats())
    assert stats["queued"] == (
        stats["sent"] + stats["dropped"] + stats["failed"] + stats["pending"]
    ), stats
    return stats


def _report_all(transport: BatchingTransport, spans: list[Span], _: int) -> None:
    for span in spans:
        transport.report(span)


def _close_or_report(transport: BatchingTransport, spans: list[Span], index: int) -> None:
    if index == 0:
        transport.close(5)
    else:
        _report_all(transport, spans, index)


def _all_at_once(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(index)`` on ``count`` threads released together by a barrier."""
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "a thread never returned"


class WatchedSender:
    """A real :class:`HttpSender` that records overlapping sends and closes."""

    def __init__(self, inner: HttpSender) -> None:
        self.inner = inner
        self.name = inner.name
        self.lock = threading.Lock()
        self.sending = 0
        self.most_at_once = 0
        self.closes = 0
        self.closed_during_send = False
        self.send_started = threading.Event()
        self.closed = threading.Event()

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        return self.inner.encode(spans)

    def send(self, payload: bytes) -> None:
        with self.lock:
            self.sending += 1
            self.most_at_once = max(self.most_at_once, self.sending)
        self.send_started.set()
        try:
            self.inner.send(payload)
        finally:
            with self.lock:
                self.sending -= 1

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        with self.lock:
            self.closes += 1
            self.closed_during_send = self.closed_during_send or self.sending > 0
        self.inner.close()
        self.closed.set()


@contextmanager
def watched(
    server: RecordingZipkinServer, **options: float
) -> Iterator[tuple[BatchingTransport, WatchedSender]]:
    http = ZipkinBackend(server.url, timeout=10).transport.sender
    assert isinstance(http, HttpSender)
    sender = WatchedSender(http)
    transport = BatchingTransport(sender, **options)  # type: ignore[arg-type]
    try:
        yield transport, sender
    finally:
        transport.close(5)


def test_first_reports_from_32_threads_start_one_worker_and_count_every_span() -> None:
    spans = _spans(20)
    for round_ in range(8):
        with RecordingZipkinServer() as server:
            backend = ZipkinBackend(server.url, batch_size=20, interval=0.05)
            transport = backend.transport
            _all_at_once(THREADS, functools.partial(_report_all, transport, spans))
            name = f"tomograph {transport.sender.name}"
            workers = [thread for thread in threading.enumerate() if thread.name == name]
            assert len(workers) == 1, f"round {round_}: {len(workers)} workers"
            assert backend.flush(20)
            stats = _adds_up(transport)
            total = THREADS * len(spans)
            assert (stats["queued"], stats["sent"]) == (total, total), f"round {round_}"
            assert len(server.wait_for(total)) == total
            # One worker, one kept-alive connection.
            assert len({request["port"] for request in server.requests}) == 1
            backend.close(5)
        assert server.invalid == []


def test_flush_from_many_threads_with_no_worker_sends_from_one_thread_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As at interpreter exit, when no new thread can start: flush() sends on its caller.
    start = threading.Thread.start

    def refuse_workers(thread: threading.Thread) -> None:
        if thread.name.startswith("tomograph "):
            raise RuntimeError("can't create new thread at interpreter shutdown")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse_workers)
    with RecordingZipkinServer() as server, watched(server, batch_size=10) as (transport, sender):
        for span in _spans(400):
            transport.report(span)
        results: list[bool] = []
        _all_at_once(8, lambda _: results.append(transport.flush(20)))
        assert transport._worker is None
        assert results == [True] * 8
        assert sender.most_at_once == 1
        stats = _adds_up(transport)
        assert (stats["sent"], stats["pending"]) == (400, 0)
        assert len(server.wait_for(400)) == 400


def test_close_never_closes_the_sender_during_a_send_and_counts_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("sleep", 1.0))  # the collector answers the first batch late
        with watched(server, interval=0.01) as (transport, sender):
            for span in _spans(5):
                transport.report(span)
            assert sender.send_started.wait(10)
            transport.close(0.1)
            assert sender.closed.wait(10)  # closed by the worker once the answer came
            worker = transport._worker
            assert worker is not None
            worker.join(10)
            assert not sender.closed_during_send
            assert sender.closes == 1
            stats = _adds_up(transport)
            assert (stats["sent"], stats["pending"]) == (5, 0)
    assert any("still being sent" in r.getMessage() for r in caplog.records)


def test_close_from_several_threads_at_once_closes_the_sender_once() -> None:
    with RecordingZipkinServer() as server, watched(server, interval=0.05) as (transport, sender):
        for span in _spans(300):
            transport.report(span)
        _all_at_once(8, lambda _: transport.close(10))
        assert sender.closes == 1
        assert not sender.closed_during_send
        stats = _adds_up(transport)
        assert (stats["sent"], stats["pending"]) == (300, 0)
        assert len(server.wait_for(300)) == 300


def test_close_from_inside_the_worker_neither_hangs_nor_sends_twice_at_once() -> None:
    with RecordingZipkinServer() as server, watched(server, batch_size=10) as (transport, sender):
        send = sender.send

        def send_then_close(payload: bytes) -> None:
            send(payload)
            transport.close(5)  # e.g. a handler on the worker's thread shutting tracing down

        sender.send = send_then_close  # type: ignore[method-assign]
        for span in _spans(30):
            transport.report(span)
        assert sender.closed.wait(10)
        worker = transport._worker
        assert worker is not None
        worker.join(10)
        assert not worker.is_alive()
        assert sender.most_at_once == 1
        assert (sender.closes, sender.closed_during_send) == (1, False)
        stats = _adds_up(transport)
        # The batch being sent was delivered; what was still queued is counted as dropped.
        assert stats["sent"] == len(server.wait_for(10)) == 10
        assert (stats["dropped"], stats["pending"]) == (20, 0)


def test_reports_racing_close_each_land_in_one_counter() -> None:
    spans = _spans(100)
    for round_ in range(5):
        with RecordingZipkinServer() as server, watched(server, batch_size=50) as (transport, _):
            _all_at_once(17, functools.partial(_close_or_report, transport, spans))
            stats = _adds_up(transport)
            assert stats["queued"] == 1600, f"round {round_}"
            assert stats["pending"] == 0, f"round {round_}: {stats}"
            assert stats["sent"] + stats["dropped"] == 1600, f"round {round_}: {stats}"
            assert len(server.wait_for(stats["sent"])) == stats["sent"]
