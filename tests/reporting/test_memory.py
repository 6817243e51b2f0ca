"""The in-memory backend."""

from __future__ import annotations

import pytest

from tomograph import Tracer
from tomograph.reporting.memory import MemoryBackend


def test_keeps_spans_in_finish_order_and_groups_traces() -> None:
    backend = MemoryBackend()
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("a"), tracer.span("b"):
        pass
    with tracer.span("c"):
        pass
    assert backend.names() == ["b", "a", "c"]
    assert sorted(len(spans) for spans in backend.traces().values()) == [1, 2]
    assert backend.find("a").name == "a"
    with pytest.raises(KeyError):
        backend.find("zzz")


def test_is_bounded() -> None:
    backend = MemoryBackend(max_spans=5)
    tracer = Tracer("svc", backends=[backend])
    for n in range(12):
        tracer.start_span(f"s{n}").finish()
    assert backend.names() == ["s7", "s8", "s9", "s10", "s11"]


def test_clear_and_len() -> None:
    backend = MemoryBackend()
    Tracer("svc", backends=[backend]).start_span("x").finish()
    assert len(backend) == 1
    backend.clear()
    assert len(backend) == 0 and backend.flush() is True


def test_rejects_nonpositive_size() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryBackend(0)


def test_snapshot_while_other_threads_report() -> None:
    import threading

    backend = MemoryBackend(max_spans=50)
    tracer = Tracer("svc", backends=[backend])
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            tracer.start_span("x").finish()

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        for _ in range(2000):
            assert len(backend.spans) <= 50
    finally:
        stop.set()
        thread.join()
