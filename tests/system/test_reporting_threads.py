"""Threads racing the transport, against a real Zipkin endpoint: nothing lost, nothing twice.

The first report from 32 threads at once, flush and close from several threads, close from
inside the worker, close racing reports, and all of them with refusals, encoder bugs, a full
queue and a fork: each span ends in exactly one counter, one worker uses the sender, and the
sender is closed once, never in the middle of a send.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from support.thread_calls import all_at_once
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
            all_at_once(THREADS, functools.partial(_report_all, transport, spans))
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
        all_at_once(8, lambda _: results.append(transport.flush(20)))
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
        all_at_once(8, lambda _: transport.close(10))
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
            all_at_once(17, functools.partial(_close_or_report, transport, spans))
            stats = _adds_up(transport)
            assert stats["queued"] == 1600, f"round {round_}"
            assert stats["pending"] == 0, f"round {round_}: {stats}"
            assert stats["sent"] + stats["dropped"] == 1600, f"round {round_}: {stats}"
            assert len(server.wait_for(stats["sent"])) == stats["sent"]


class BuggyEncoder(WatchedSender):
    """A real sender whose encoder fails on any batch holding a span named ``unencodable``."""

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        if any(span.name == "unencodable" for span in spans):
            raise ValueError("a bug in an encoder")
        return self.inner.encode(spans)


def _mixed_spans(count: int, service: str) -> list[Span]:
    """Spans of ``service``: every 7th refused by the collector, every 11th unencodable."""
    memory = MemoryBackend()
    tracer = Tracer(service, backends=[memory])
    for index in range(count):
        name = "refused" if index % 7 == 3 else "unencodable" if index % 11 == 5 else "op"
        with tracer.span(name):
            pass
    return memory.spans


def _accounted(stats: dict[str, int], recorded: int, queued: int) -> list[str]:
    """What is wrong with a closed transport's counters (nothing: an empty list)."""
    problems = []
    if stats["queued"] != queued:
        problems.append(f"queued {stats['queued']}, reported {queued}")
    if stats["queued"] != stats["sent"] + stats["dropped"] + stats["failed"]:
        problems.append(f"counters do not add up: {stats}")
    if stats["pending"] != 0:
        problems.append(f"still pending after close: {stats}")
    if stats["sent"] != recorded:
        problems.append(f"sent {stats['sent']}, the collector recorded {recorded}")
    return problems


def _child_after_fork(transport: BatchingTransport) -> dict[str, Any]:
    """In the forked child: report, close, and say what was sent and what is wrong."""
    spans = _mixed_spans(60, "child")
    for span in spans:
        transport.report(span)
    transport.close(20)
    stats = dict(transport.stats())
    # The collector runs in the parent, which checks what it recorded against "sent".
    return {"sent": stats["sent"], "problems": _accounted(stats, stats["sent"], len(spans))}


def test_every_span_lands_in_one_counter_through_refusals_encoder_bugs_a_fork_and_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The loss paths of the transport at once: a collector refusing spans (400, bisected), a
    # 503 and a 413 (retried, split), an encoder failing on some spans (split until they fail
    # alone), a full queue, a fork while 32 threads report, and close racing the reports.
    with RecordingZipkinServer() as server:
        server.refuse_names = {"refused"}
        server.faults.extend([("status", 503, "0"), ("status", 413)])
        http = ZipkinBackend(server.url, timeout=10).transport.sender
        assert isinstance(http, HttpSender)
        sender = BuggyEncoder(http)
        transport = BatchingTransport(
            sender,  # type: ignore[arg-type]
            batch_size=40,
            interval=0.01,
            queue_size=200,
        )
        spans = _mixed_spans(80, "parent")
        forked = threading.Event()
        child: dict[str, Any] = {}

        def work(index: int) -> None:
            for number, span in enumerate(spans):
                transport.report(span)
                if index == 0 and number == len(spans) // 2:
                    read, write = os.pipe()
                    pid = os.fork()
                    if pid == 0:  # the child: report, close, say what is wrong, exit
                        try:
                            message = json.dumps(_child_after_fork(transport))
                        except BaseException as error:
                            message = json.dumps({"problems": [f"child raised {error!r}"]})
                        os.write(write, message.encode())
                        os._exit(0)
                    os.close(write)
                    with os.fdopen(read) as pipe:
                        child.update(json.loads(pipe.read()))
                    os.waitpid(pid, 0)
                    forked.set()
            if index == 1:
                forked.wait(30)
                transport.close(20)  # while the others may still report

        all_at_once(THREADS, work)
        stats = dict(transport.stats())
        assert child["problems"] == []
        received = server.wait_for(stats["sent"] + child["sent"])
        services = Counter(span["localEndpoint"]["serviceName"] for span in received)
        assert _accounted(stats, services["parent"], THREADS * len(spans)) == []
        assert services["child"] == child["sent"] > 0
        assert {span["name"] for span in received} == {"op"}
        assert server.invalid == []
        assert stats["dropped"] > 0 and stats["failed"] > 0
    logged = " ".join(record.getMessage() for record in caplog.records)
    for loss in ("refused spans", "encoding a span", "full", "dropped"):
        assert loss in logged, loss
