"""Celery tasks traced through Celery's signals, in one process.

A real Celery worker (the solo pool, in a thread: Celery's own test worker) consumes real
messages from kombu's in-memory transport, so the trace crosses a real message encoding and
the worker's real request handling; eager mode runs tasks without any message. The tests that
cross processes (a worker subprocess on a real redis broker, every pool) are in
tests/system/test_celery_tracing.py.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from tests.support.thread_calls import all_at_once

import tomograph
from tomograph.context import suppress_tracing
from tomograph.integrations import celery as celery_tracing
from tomograph.model import SpanKind
from tomograph.propagation import Propagator
from tomograph.reporting.memory import MemoryBackend

celery = pytest.importorskip("celery")
from celery import chain, group, signals  # noqa: E402
from celery.contrib.testing.worker import start_worker  # noqa: E402
from celery.exceptions import Reject  # noqa: E402

RESULT_DEADLINE = 20.0
#: Every header tomograph's default propagation writes.
TRACE_HEADERS = frozenset(
    {"traceparent", "tracestate", "baggage", "b3", "x-trace-info", "x-b3-traceid", "x-b3-spanid"}
    | {"x-b3-parentspanid", "x-b3-sampled", "x-b3-flags"}
)

app = celery.Celery("tasks", broker="memory://", backend="cache+memory://")
app.conf.task_default_queue = "work"
app.conf.worker_hijack_root_logger = False
app.conf.broker_transport_options = {"polling_interval": 0.01}  # the memory queue's poll


@app.task(bind=True)
def headers_seen(self: Any) -> dict[str, Any]:
    """The trace headers the task's request holds, and the span current in the task."""
    request = vars(self.request)
    span = tomograph.current_span()
    return {
        "traceparent": request.get("traceparent"),
        "span_id": None if span is None else span.span_id,
    }


@app.task
def add(x: int, y: int) -> int:
    with tomograph.span("inside add"):
        return x + y


@app.task(bind=True, max_retries=3)
def flaky(self: Any, failures: int) -> int:
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError("upstream busy"), countdown=0)
    return int(self.request.retries)


@app.task
def broken() -> None:
    raise KeyError("no such order")


@app.task
def rejecting() -> None:
    raise Reject("not for me", requeue=False)


@pytest.fixture
def traced(memory: MemoryBackend) -> Iterator[MemoryBackend]:
    """The default tracer records to memory, and Celery is patched."""
    assert celery_tracing.patch()
    yield memory
    celery_tracing.unpatch()


@pytest.fixture(scope="module")
def running_worker() -> Iterator[None]:
    """A real solo-pool worker consuming the in-memory broker, in a thread.

    Celery's test worker sets the root logger up for itself (level ERROR, a stderr handler):
    both are put back afterwards, or later tests would see no warnings.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


@pytest.fixture
def worker(running_worker: None, traced: MemoryBackend) -> MemoryBackend:
    """The worker, its spans (and the test's) recorded to memory."""
    return traced


@pytest.fixture
def eager() -> Iterator[None]:
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def refused_connection() -> Any:
    """A broker connection nothing listens on, refused at once (no reconnection attempts)."""
    return app.connection_for_write("redis://127.0.0.1:1/0", transport_options={"max_retries": 0})


def spans_named(memory: MemoryBackend, name: str) -> list[tomograph.Span]:
    return [span for span in memory.spans if span.name == name]


def wait_for_spans(memory: MemoryBackend, name: str, count: int) -> list[tomograph.Span]:
    """The spans named ``name`` once ``count`` have arrived (the run ends after its result)."""
    deadline = threading.Event()
    timer = threading.Timer(RESULT_DEADLINE, deadline.set)
    timer.start()
    try:
        while len(spans_named(memory, name)) < count:
            if deadline.wait(0.01):
                pytest.fail(f"{count} {name} spans did not arrive: {memory.names()}")
    finally:
        timer.cancel()
    return spans_named(memory, name)


# -- producer and consumer ----------------------------------------------------------------------


def test_delay_makes_a_producer_span_and_the_worker_a_consumer_span_continuing_it(
    worker: MemoryBackend,
) -> None:
    with tomograph.span("request") as request:
        result = add.delay(2, 3)
    assert result.get(timeout=RESULT_DEADLINE) == 5
    (run,) = wait_for_spans(worker, f"run/{add.name}", 1)
    (publish,) = spans_named(worker, f"apply_async/{add.name}")
    inside = worker.find("inside add")
    assert publish.kind is SpanKind.PRODUCER
    assert run.kind is SpanKind.CONSUMER
    assert publish.trace_id == run.trace_id == inside.trace_id == request.trace_id
    assert publish.parent_id == request.span_id
    assert run.parent_id == publish.span_id
    assert inside.parent_id == run.span_id


def test_spans_are_tagged_with_task_name_id_queue_retries_and_state(
    worker: MemoryBackend,
) -> None:
    result = add.apply_async((1, 1), queue="work")
    result.get(timeout=RESULT_DEADLINE)
    (run,) = wait_for_spans(worker, f"run/{add.name}", 1)
    publish = worker.find(f"apply_async/{add.name}")
    for span in (publish, run):
        assert span.tags["celery.task_name"] == add.name
        assert span.tags["messaging.message.id"] == result.id
        assert span.tags["messaging.destination.name"] == "work"
    assert publish.tags["celery.action"] == "apply_async"
    assert run.tags["celery.action"] == "run"
    assert run.tags["celery.retries"] == 0
    assert run.tags["celery.state"] == "SUCCESS"
    assert not run.error


def test_task_arguments_and_results_are_never_recorded(worker: MemoryBackend) -> None:
    add.delay(123456789, 987654321).get(timeout=RESULT_DEADLINE)
    wait_for_spans(worker, f"run/{add.name}", 1)
    for span in worker.spans:
        recorded = repr(span.tags) + repr(span.annotations)
        assert "123456789" not in recorded
        assert str(123456789 + 987654321) not in recorded


def test_the_trace_travels_as_message_headers_the_task_request_holds(
    worker: MemoryBackend,
) -> None:
    seen = headers_seen.delay().get(timeout=RESULT_DEADLINE)
    publish = worker.find(f"apply_async/{headers_seen.name}")
    (run,) = wait_for_spans(worker, f"run/{headers_seen.name}", 1)
    assert seen["traceparent"] == f"00-{publish.trace_id:032x}-{publish.span_id:016x}-01"
    assert seen["span_id"] == run.span_id  # the run span is current inside the task


def test_the_configured_propagator_writes_the_headers(traced: MemoryBackend) -> None:
    tracing = celery_tracing.CeleryTracing(propagator=Propagator(["b3single"]))
    celery_tracing.unpatch()
    tracing.connect()
    try:
        captured: dict[str, Any] = {}

        def capture(headers: dict[str, Any], **_: Any) -> None:
            captured.update(headers)

        signals.before_task_publish.connect(capture, weak=False)
        try:
            with pytest.raises(Exception):  # noqa: B017  # no broker listens: only the headers count
                app.send_task(
                    "anything",
                    connection=refused_connection(),
                    retry=False,
                )
        finally:
            signals.before_task_publish.disconnect(capture)
    finally:
        tracing.disconnect()
    publish = traced.find("apply_async/anything")
    assert captured["b3"].startswith(f"{publish.trace_id:032x}-{publish.span_id:016x}")
    assert "traceparent" not in captured


# -- retries, failures, rejections --------------------------------------------------------------


def test_a_retry_for_a_database_error_keeps_its_values_out_of_the_reason() -> None:
    # ``raise self.retry(exc=error)`` for an error a SQL integration recorded (first line
    # only): the retry's reason says no more than the statement's span did.
    from tomograph.integrations.celery import _reason
    from tomograph.model import ExceptionNote

    error = RuntimeError("duplicate key\nDETAIL:  Key (email)=(secret@example.org) exists.")
    assert "secret" in _reason(error)  # not a database error: all of it
    ExceptionNote.first_line_only(error)
    assert _reason(error) == "RuntimeError: duplicate key"
    assert _reason(RuntimeError()) == "RuntimeError"


def test_each_retry_is_its_own_run_span_in_the_same_trace(worker: MemoryBackend) -> None:
    with tomograph.span("request") as request:
        result = flaky.delay(2)
    assert result.get(timeout=RESULT_DEADLINE) == 2
    runs = wait_for_spans(worker, f"run/{flaky.name}", 3)
    publishes = spans_named(worker, f"apply_async/{flaky.name}")
    assert len(publishes) == 3  # the first send and two retries
    assert {span.trace_id for span in runs + publishes} == {request.trace_id}
    runs.sort(key=lambda span: span.tags["celery.retries"])
    assert [span.tags["celery.retries"] for span in runs] == [0, 1, 2]
    assert [span.tags["celery.state"] for span in runs] == ["RETRY", "RETRY", "SUCCESS"]
    assert runs[0].tags["celery.retry.reason"] == "ConnectionError: upstream busy"
    assert "celery.retry" in [note.value for note in runs[0].annotations]
    assert not any(span.error for span in runs)
    # Each retry is sent from inside the attempt before it, and runs as that send's child.
    by_id = {span.span_id: span for span in publishes}
    for earlier, later in pairwise(runs):
        retry_publish = by_id[later.parent_id]
        assert retry_publish.parent_id == earlier.span_id
        assert retry_publish.tags["celery.retries"] == later.tags["celery.retries"]


def test_a_failing_task_makes_an_error_span_with_the_exception(worker: MemoryBackend) -> None:
    with pytest.raises(KeyError):
        broken.delay().get(timeout=RESULT_DEADLINE)
    (run,) = wait_for_spans(worker, f"run/{broken.name}", 1)
    assert run.error
    assert run.tags["exception.type"] == "KeyError"
    assert run.tags["celery.state"] == "FAILURE"
    (note,) = [note.value for note in run.annotations if "KeyError" in note.value]
    assert note.frames  # the traceback's frames travel with the note (OTLP's stack trace)
    publish = worker.find(f"apply_async/{broken.name}")
    assert not publish.error  # sending worked


def test_a_rejected_task_ends_its_span_with_the_rejected_state(worker: MemoryBackend) -> None:
    rejecting.delay()
    (run,) = wait_for_spans(worker, f"run/{rejecting.name}", 1)
    assert run.tags["celery.state"] == "REJECTED"


# -- chains, groups, eager mode -----------------------------------------------------------------


def test_a_chain_keeps_one_trace_each_link_sent_by_the_one_before(worker: MemoryBackend) -> None:
    with tomograph.span("request") as request:
        result = chain(add.s(1, 2), add.s(3), add.s(4)).delay()
    assert result.get(timeout=RESULT_DEADLINE) == 10
    runs = wait_for_spans(worker, f"run/{add.name}", 3)
    publishes = spans_named(worker, f"apply_async/{add.name}")
    assert {span.trace_id for span in runs + publishes} == {request.trace_id}
    run_ids = {span.span_id for span in runs}
    # The first link is sent by the request, each next one from inside the link before.
    assert sorted(publish.parent_id in run_ids for publish in publishes) == [False, True, True]


def test_a_group_keeps_one_trace(worker: MemoryBackend) -> None:
    with tomograph.span("request") as request:
        result = group(add.s(n, n) for n in range(4)).delay()
    assert sorted(result.get(timeout=RESULT_DEADLINE)) == [0, 2, 4, 6]
    runs = wait_for_spans(worker, f"run/{add.name}", 4)
    publishes = spans_named(worker, f"apply_async/{add.name}")
    assert {span.trace_id for span in runs + publishes} == {request.trace_id}
    assert {span.parent_id for span in publishes} == {request.span_id}
    assert {span.parent_id for span in runs} == {span.span_id for span in publishes}


def test_eager_tasks_run_as_children_of_the_caller(traced: MemoryBackend, eager: None) -> None:
    with tomograph.span("request") as request:
        assert add.delay(2, 2).get() == 4
    run = traced.find(f"run/{add.name}")
    assert run.parent_id == request.span_id
    assert run.tags["celery.eager"] is True
    assert traced.find("inside add").parent_id == run.span_id
    assert not spans_named(traced, f"apply_async/{add.name}")


def test_eager_retries_are_attempts_in_the_callers_trace(
    traced: MemoryBackend, eager: None
) -> None:
    with tomograph.span("request") as request:
        assert flaky.delay(1).get() == 1
    runs = spans_named(traced, f"run/{flaky.name}")
    assert [span.tags["celery.state"] for span in runs] == ["RETRY", "SUCCESS"]
    assert {span.trace_id for span in runs} == {request.trace_id}
    assert tomograph.current_span() is None  # every run span was made current, then not


def test_eager_failure_is_an_error_span(traced: MemoryBackend, eager: None) -> None:
    with pytest.raises(KeyError):
        broken.apply().get()
    assert traced.find(f"run/{broken.name}").error


# -- messages tomograph did not write -----------------------------------------------------------


def test_a_message_without_trace_headers_starts_a_new_trace(worker: MemoryBackend) -> None:
    with suppress_tracing():  # a producer without tomograph: nothing written, nothing traced
        result = headers_seen.delay()
    seen = result.get(timeout=RESULT_DEADLINE)
    (run,) = wait_for_spans(worker, f"run/{headers_seen.name}", 1)
    assert seen["traceparent"] is None
    assert run.parent_id is None
    assert not spans_named(worker, f"apply_async/{headers_seen.name}")


@pytest.mark.parametrize(
    "hostile",
    [
        {"traceparent": "00-zzzz-not-a-trace-01", "b3": "garbage"},
        {"traceparent": "00-" + "a" * 10_000_000 + "-01"},
        {"traceparent": 2**63, "x-b3-traceid": ["a", b"\xff"], "b3": None},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-\udcff\udcff\udcff\udcff-01"},
        {"_tomograph_run": "a header named like tomograph's own bookkeeping"},
    ],
    ids=["malformed", "10MB", "not-text", "lone-surrogates", "bookkeeping-name"],
)
def test_hostile_trace_headers_never_break_the_task(
    worker: MemoryBackend, hostile: dict[str, Any]
) -> None:
    def overwrite(headers: dict[str, Any], **_: Any) -> None:
        for name in [name for name in headers if name in TRACE_HEADERS]:
            del headers[name]  # what tomograph wrote, replaced by what the test sends
        headers.update(hostile)

    signals.before_task_publish.connect(overwrite, weak=False)
    try:
        result = add.delay(20, 22)
    finally:
        signals.before_task_publish.disconnect(overwrite)
    assert result.get(timeout=RESULT_DEADLINE) == 42
    (run,) = wait_for_spans(worker, f"run/{add.name}", 1)
    assert run.tags["celery.state"] == "SUCCESS"
    if "traceparent" in hostile:
        assert run.parent_id is None  # a new trace, not a broken one


# -- bookkeeping --------------------------------------------------------------------------------


def test_a_publish_that_fails_is_reported_as_an_error_by_a_later_publish(
    traced: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = refused_connection()
    with pytest.raises(Exception):  # noqa: B017  # the broker's refusal, whatever kombu calls it
        add.apply_async((1, 2), connection=dead, retry=False)
    assert not spans_named(traced, f"apply_async/{add.name}")
    monkeypatch.setattr(celery_tracing, "UNCONFIRMED_AFTER_NS", 0)
    with pytest.raises(Exception):  # noqa: B017
        add.apply_async((1, 2), connection=dead, retry=False)
    (failed,) = spans_named(traced, f"apply_async/{add.name}")
    assert failed.error
    assert failed.tags["celery.unfinished"] is True
    assert "publish failed" in str(failed.tags["error"])


def test_publishes_never_confirmed_are_bounded_and_still_reported(traced: MemoryBackend) -> None:
    extra = 10
    for number in range(celery_tracing.MAX_PENDING_PUBLISHES + extra):
        signals.before_task_publish.send(
            sender="lost", body=(), headers={"id": str(number), "task": "lost"}
        )
    assert len(spans_named(traced, "apply_async/lost")) == extra  # the oldest, finished
    assert celery_tracing.unpatch()  # finishes those still waiting
    assert len(spans_named(traced, "apply_async/lost")) == (
        celery_tracing.MAX_PENDING_PUBLISHES + extra
    )
    assert all(span.tags["celery.unfinished"] for span in spans_named(traced, "apply_async/lost"))
    assert celery_tracing.patch()


def test_a_task_id_that_is_not_text_still_pairs_the_publish_signals(
    traced: MemoryBackend,
) -> None:
    headers: dict[str, Any] = {"id": ["not", "hashable"], "task": "odd"}
    signals.before_task_publish.send(sender="odd", body=(), headers=headers)
    signals.after_task_publish.send(sender="odd", body=(), headers=headers)
    (publish,) = spans_named(traced, "apply_async/odd")
    assert not publish.error
    assert publish.tags["messaging.message.id"] == "['not', 'hashable']"


def test_received_tasks_remembered_by_the_main_process_are_bounded(traced: MemoryBackend) -> None:
    class Request:
        def __init__(self, number: int) -> None:
            self.id = str(number)
            self.request_dict = {"id": self.id, "traceparent": "x" * 100}

    for number in range(celery_tracing.MAX_RECEIVED * 2):
        signals.task_received.send(sender=None, request=Request(number))
    tracing = celery_tracing._default
    assert tracing is not None
    assert len(tracing._received) == celery_tracing.MAX_RECEIVED


def test_publishes_from_32_threads_at_once_each_get_their_own_finished_span(
    worker: MemoryBackend,
) -> None:
    results: list[Any] = [None] * 32

    def send(index: int) -> None:
        results[index] = add.delay(index, 1)

    all_at_once(32, send)
    assert [result.get(timeout=RESULT_DEADLINE) for result in results] == list(range(1, 33))
    runs = wait_for_spans(worker, f"run/{add.name}", 32)
    publishes = spans_named(worker, f"apply_async/{add.name}")
    assert len(publishes) == 32
    assert {span.parent_id for span in runs} == {span.span_id for span in publishes}


# -- patch() ------------------------------------------------------------------------------------


def _receiver_count() -> int:
    every = (
        signals.before_task_publish,
        signals.after_task_publish,
        signals.task_received,
        signals.task_prerun,
        signals.task_postrun,
        signals.task_failure,
        signals.task_retry,
        signals.task_revoked,
    )
    return sum(len(signal.receivers) for signal in every)


def test_patch_is_idempotent_and_unpatch_removes_every_receiver() -> None:
    before = _receiver_count()
    assert not celery_tracing.patched()
    assert celery_tracing.patch()
    assert not celery_tracing.patch()
    assert celery_tracing.patched()
    assert _receiver_count() == before + 8
    assert celery_tracing.unpatch()
    assert not celery_tracing.unpatch()
    assert not celery_tracing.patched()
    assert _receiver_count() == before


def test_patch_before_configure_uses_the_tracer_configured_later(eager: None) -> None:
    assert celery_tracing.patch()
    try:
        memory = MemoryBackend()
        tomograph.configure(service="late", backends=[memory], environ={})
        add.delay(1, 2).get()
        assert memory.find(f"run/{add.name}").service_name == "late"
    finally:
        celery_tracing.unpatch()
        from tomograph import config

        config.reset()
