"""Network faults between the Zipkin backend and its collector never reach the application.

In each case the span-finish cost is measured and printed (not asserted), the queue stays
bounded, and every span ends up sent, dropped or failed: the counters add up.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from support.servers import free_port
from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer
from tomograph.reporting.zipkin import ZipkinBackend

pytestmark = pytest.mark.integration


def _finish_spans(backend: ZipkinBackend, count: int) -> float:
    """Finish ``count`` spans; the mean cost per span in µs (printed by the caller)."""
    tracer = Tracer("svc", backends=[backend])
    started = time.perf_counter()
    for _ in range(count):
        with tracer.span("op"):
            pass
    return (time.perf_counter() - started) / count * 1e6


def _check_accounting(backend: ZipkinBackend, count: int) -> dict[str, Any]:
    stats = backend.stats()
    assert stats["queued"] == count
    assert stats["pending"] == 0
    assert stats["sent"] + stats["dropped"] + stats["failed"] == count
    assert len(backend.transport._queue) <= backend.transport.queue_size
    return stats


def test_collector_down_fails_spans_after_retries_and_drops_overflow() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = ZipkinBackend(url, queue_size=200, interval=0.05, backoff=0.01, max_retries=2)
    cost = _finish_spans(backend, 1000)
    print(f"\ncollector down: {cost:.2f} µs per span")
    assert backend.flush(10)
    stats = _check_accounting(backend, 1000)
    assert stats["sent"] == 0
    assert stats["failed"] >= 100
    assert stats["dropped"] >= 1
    backend.close(1)


@pytest.mark.parametrize(
    ("faults", "retries"),
    [
        ([("status", 500), ("status", 503)], 2),
        ([("reset",)], 1),
        ([("sleep", 10.0)], 1),
    ],
    ids=["5xx", "reset-mid-body", "answers-after-10s"],
)
def test_transient_faults_are_retried_until_delivered(faults: list[Any], retries: int) -> None:
    with RecordingZipkinServer() as server:
        server.faults.extend(faults)
        backend = ZipkinBackend(
            server.url, timeout=0.5, interval=0.05, backoff=0.01, batch_size=1000
        )
        cost = _finish_spans(backend, 200)
        print(f"\n{faults}: {cost:.2f} µs per span")
        assert backend.flush(10)
        stats = _check_accounting(backend, 200)
        assert stats["sent"] == 200
        assert stats["retries"] == retries
        assert len(server.wait_for(200)) == 200
        backend.close(1)
    assert server.invalid == []


def test_429_waits_for_retry_after() -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("status", 429, "1"))
        backend = ZipkinBackend(server.url, interval=0.05, backoff=0.001)
        _finish_spans(backend, 10)
        started = time.monotonic()
        assert backend.flush(10)
        assert time.monotonic() - started >= 0.9
        assert _check_accounting(backend, 10)["sent"] == 10
        backend.close(1)


def test_slow_collector_with_no_retries_fails_the_batch_quickly() -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("sleep", 10.0))
        backend = ZipkinBackend(server.url, timeout=0.3, interval=0.05, max_retries=0)
        _finish_spans(backend, 10)
        # flush(5) succeeds only if the batch failed before the collector's 10 s answer
        assert backend.flush(5)
        assert _check_accounting(backend, 10)["failed"] == 10
        backend.close(1)


def test_a_400_is_not_retried() -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("status", 400))
        backend = ZipkinBackend(server.url, interval=0.05)
        _finish_spans(backend, 5)
        assert backend.flush(5)
        stats = _check_accounting(backend, 5)
        assert (stats["failed"], stats["retries"]) == (5, 0)
        backend.close(1)
