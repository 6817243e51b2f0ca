"""Collector faults between the Zipkin backend and its collector never reach the application.

Down, slow (accepts, never answers), full (507/503 with Retry-After), lying (200 with garbage,
a Retry-After that is no number, an answer cut short), strict (413 for a large batch, 400 for
one bad span): in each case the application thread never waits nor touches the network, the
queue stays bounded, every span ends in exactly one counter, and every kind of loss is logged.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest

from support.servers import free_port, never_answering_server
from support.thread_calls import recorded_calls, wait_until_blocked, waiting_calls
from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer
from tomograph.reporting.zipkin import ZipkinBackend

pytestmark = pytest.mark.integration


def _finish_spans(backend: ZipkinBackend, count: int, name: str = "op", **tags: str) -> None:
    """Finish ``count`` spans; the application thread must neither wait nor do I/O meanwhile."""
    tracer = Tracer("svc", backends=[backend])
    with tracer.span(name, tags=tags):  # the first report starts the worker (and waits for it)
        pass
    with recorded_calls() as calls:
        for _ in range(count - 1):
            with tracer.span(name, tags=tags):
                pass
    assert waiting_calls(calls) == []


def _start_the_worker(backend: ZipkinBackend) -> None:
    """Send one span named "warm-up" and wait for its answer. The worker then sleeps out its
    interval, so the spans finished next wait in the queue for a flush or a full batch; without
    this the first span of a test wakes the worker and may leave alone, as it does in use."""
    with Tracer("svc", backends=[backend]).span("warm-up"):
        pass
    assert backend.flush(5)
    worker = backend.transport._worker
    assert worker is not None
    wait_until_blocked(worker)  # back in its wait: a flush's wake-up may have run it again


def _check_accounting(backend: ZipkinBackend, count: int) -> dict[str, Any]:
    stats = backend.stats()
    assert stats["queued"] == count
    assert stats["pending"] == 0
    assert stats["sent"] + stats["dropped"] + stats["failed"] == count
    assert len(backend.transport._queue) <= backend.transport.queue_size
    return stats


def _warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


def test_collector_down_fails_spans_after_retries_and_drops_overflow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = ZipkinBackend(url, queue_size=200, interval=0.05, backoff=0.01, max_retries=2)
    _finish_spans(backend, 1000)
    assert backend.flush(10)
    stats = _check_accounting(backend, 1000)
    assert stats["sent"] == 0
    assert stats["failed"] >= 100
    assert stats["dropped"] >= 1
    assert len(_warnings(caplog, "failed: ConnectionRefusedError")) == 1  # once per outage
    assert len(_warnings(caplog, "is full")) == 1
    backend.close(1)


def test_collector_that_never_answers_fails_batches_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with never_answering_server() as url:
        backend = ZipkinBackend(
            url, timeout=0.2, max_retries=1, backoff=0.01, queue_size=100, interval=0.05
        )
        _finish_spans(backend, 300)
        assert backend.flush(20)
        stats = _check_accounting(backend, 300)
        assert stats["sent"] == 0
        assert stats["failed"] >= 1 and stats["dropped"] >= 1
        assert _warnings(caplog, "timed out")
        backend.close(1)


@pytest.mark.parametrize(
    ("faults", "retries"),
    [
        ([("status", 500), ("status", 503)], 2),
        ([("status", 507, "0"), ("status", 503, "1")], 2),
        ([("status", 503, "²")], 1),  # a Retry-After that is no number: the backoff decides
        ([("status", 408)], 1),
        ([("reset",)], 1),
        ([("sleep", 10.0)], 1),
    ],
    ids=["5xx", "full-507-503-retry-after", "bad-retry-after", "408", "reset-mid-body", "late"],
)
def test_transient_faults_are_retried_until_delivered(faults: list[Any], retries: int) -> None:
    with RecordingZipkinServer() as server:
        server.faults.extend(faults)
        backend = ZipkinBackend(
            server.url, timeout=0.5, interval=0.05, backoff=0.01, batch_size=1000
        )
        _finish_spans(backend, 200)
        assert backend.flush(10)
        stats = _check_accounting(backend, 200)
        assert stats["sent"] == 200
        assert stats["retries"] == retries
        assert len(server.wait_for(200)) == 200
        backend.close(1)
    assert server.invalid == []


def test_an_answer_cut_short_after_a_2xx_status_counts_as_sent_once() -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("truncate",))
        backend = ZipkinBackend(server.url, interval=0.05)
        _finish_spans(backend, 20)
        assert backend.flush(10)
        assert (_check_accounting(backend, 20)["sent"], backend.stats()["retries"]) == (20, 0)
        _finish_spans(backend, 20)  # the broken connection was replaced
        assert backend.flush(10)
        assert _check_accounting(backend, 40)["sent"] == 40
        backend.close(1)
    assert len(server.spans) == 40  # nothing sent twice


def test_a_200_with_garbage_counts_as_sent() -> None:
    # A 2xx is the collector's word that it took the spans: nothing else can be checked.
    with RecordingZipkinServer() as server:
        server.faults.append(("status", 200, None, b"\x00\xff not json"))
        backend = ZipkinBackend(server.url, interval=0.05)
        _finish_spans(backend, 10)
        assert backend.flush(10)
        assert _check_accounting(backend, 10)["sent"] == 10
        backend.close(1)


def test_429_waits_for_retry_after() -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("status", 429, "1"))
        backend = ZipkinBackend(server.url, interval=0.05, backoff=0.001)
        _finish_spans(backend, 10)
        assert backend.flush(10)
        assert _check_accounting(backend, 10)["sent"] == 10
        assert backend.stats()["retries"] == 1
        backend.close(1)


def test_slow_collector_with_no_retries_fails_the_batch_quickly() -> None:
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, timeout=0.3, interval=60, max_retries=0)
        _start_the_worker(backend)
        server.faults.append(("sleep", 10.0))
        _finish_spans(backend, 10)
        # flush(5) succeeds only if the batch failed before the collector's 10 s answer
        assert backend.flush(5)
        assert _check_accounting(backend, 11)["failed"] == 10
        backend.close(1)


def test_a_batch_refused_as_too_large_is_split_and_the_limit_learned() -> None:
    with RecordingZipkinServer() as server:
        server.limit_bytes = 120_000  # like a proxy's body size limit, below max_bytes
        backend = ZipkinBackend(server.url, batch_size=100, interval=0.05)
        _finish_spans(backend, 100, blob="x" * 2000)  # about 220 kB in one batch
        assert backend.flush(10)
        assert _check_accounting(backend, 100)["sent"] == 100
        assert server.too_large == 1
        _finish_spans(backend, 100, blob="x" * 2000)
        assert backend.flush(10)
        assert _check_accounting(backend, 200)["sent"] == 200
        assert server.too_large == 1  # the second batch was split before sending
        backend.close(1)
    assert len(server.spans) == 200


def test_one_span_too_large_for_the_collector_fails_alone() -> None:
    with RecordingZipkinServer() as server:
        server.limit_bytes = 5000
        backend = ZipkinBackend(server.url, batch_size=50, interval=0.05)
        tracer = Tracer("svc", backends=[backend])
        for index in range(50):
            with tracer.span("op", tags={"blob": "x" * (6000 if index == 7 else 10)}):
                pass
        assert backend.flush(10)
        stats = _check_accounting(backend, 50)
        assert (stats["sent"], stats["failed"]) == (49, 1)
        backend.close(1)


def test_one_bad_span_refused_with_400_fails_alone_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RecordingZipkinServer() as server:
        server.refuse_names = {"poison"}
        backend = ZipkinBackend(server.url, batch_size=100, interval=60)
        tracer = Tracer("svc", backends=[backend])
        for index in range(100):
            with tracer.span("poison" if index == 37 else "op"):
                pass
        assert backend.flush(10)
        stats = _check_accounting(backend, 100)
        assert (stats["sent"], stats["failed"], stats["retries"]) == (99, 1, 0)
        backend.close(1)
    assert [span["name"] for span in server.spans] == ["op"] * 99
    refused = _warnings(caplog, "refused spans")
    assert len(refused) == 1 and "HTTP 400" in refused[0] and "(1 spans)" in refused[0]


def test_a_collector_refusing_every_span_costs_three_requests_per_batch() -> None:
    with RecordingZipkinServer() as server:
        server.refuse_names = {"op"}
        backend = ZipkinBackend(server.url, batch_size=100, interval=60)
        _start_the_worker(backend)
        _finish_spans(backend, 100)
        assert backend.flush(10)
        assert _check_accounting(backend, 101)["failed"] == 100
        backend.close(1)
    assert server.refused == 100 + 50 + 50  # the batch, then its two halves: then it stops


def test_log_once_is_keyed_by_status_not_by_the_collectors_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RecordingZipkinServer() as server:
        words = random.Random(7)
        for status in (400, 403, 400, 403) * 10:  # a different answer every time
            detail = f"span 0: bad value {words.getrandbits(64):x}".encode()
            server.faults.append(("status", status, None, detail))
        backend = ZipkinBackend(server.url, batch_size=1, interval=0.05)
        _finish_spans(backend, 40)
        assert backend.flush(10)
        assert _check_accounting(backend, 40)["failed"] == 40
        assert backend.transport._logged == {"refused HTTP 400", "refused HTTP 403"}
        backend.close(1)
    refused = _warnings(caplog, "refused spans")
    assert len(refused) == 2
    assert {message.split(" from ")[0].split(": ")[-1] for message in refused} == {
        "HTTP 400",
        "HTTP 403",
    }
