"""Celery tasks traced across processes: this process sends, a real worker runs, one trace.

Each pool (prefork, solo, threads, eventlet, gevent) gets one real ``celery worker`` subprocess on
a private redis (broker and result backend), its application configuring tomograph and calling
``tomograph.integrations.celery.patch()`` at import (in prefork, before the pool forks its
children). This process is the producer: it patches Celery too, and both report to one real
Zipkin endpoint, so the tests see what a user's Zipkin shows: the producer span from here, the
consumer span from the worker (a pool child in prefork), parent and child in one trace.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import tomograph
from support.redis_server import redis_server
from support.servers import REPO_ROOT, process_group
from support.zipkin_server import RecordingZipkinServer
from tomograph import config
from tomograph.context import suppress_tracing
from tomograph.integrations import celery as celery_tracing

pytestmark = pytest.mark.integration

celery = pytest.importorskip("celery")

#: Deadlines for waits (never expected durations).
RESULT_DEADLINE = 60.0
ARRIVAL_DEADLINE = 20.0
POOLS = ["prefork", "solo", "threads", "eventlet", "gevent"]

WORKER_APP = """
import os
import time

from celery import Celery

import tomograph
from tomograph.integrations import celery as celery_tracing

tomograph.configure(service="worker", backends=[os.environ["ZIPKIN_URL"]], environ={})
celery_tracing.patch()

app = Celery("celery_app", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.worker_hijack_root_logger = False


@app.task
def add(x, y):
    with tomograph.span("inside add"):
        return x + y


@app.task
def total(numbers):
    return sum(numbers)


@app.task(bind=True, max_retries=3)
def flaky(self, failures):
    if self.request.retries < failures:
        raise self.retry(exc=ConnectionError("upstream busy"), countdown=0)
    return self.request.retries


@app.task
def broken():
    raise KeyError("no such order")


@app.task(time_limit=1)
def stuck():
    time.sleep(30)


@app.task
def lost():
    os.kill(os.getpid(), 9)  # the pool child dies as the OOM killer would end it
"""


@dataclass
class Worker:
    """A running worker, the Celery client that sends to it, and where spans arrive."""

    pool: str
    client: Any
    zipkin: RecordingZipkinServer
    log: Path

    def trace(self, trace_id: str, done: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
        """The spans of trace ``trace_id`` once ``done`` holds for them (fails at the deadline)."""
        spans = self.zipkin.wait_until(
            lambda spans: done([span for span in spans if span["traceId"] == trace_id]),
            ARRIVAL_DEADLINE,
        )
        found = [span for span in spans if span["traceId"] == trace_id]
        if not done(found):
            log = self.log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{self.pool}: the trace is incomplete: {found}\n{log}")
        assert self.zipkin.invalid == []
        return found


@pytest.fixture(scope="module", params=POOLS)
def worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    pool = request.param
    if pool in ("eventlet", "gevent"):
        pytest.importorskip(pool)
    directory = tmp_path_factory.mktemp(f"celery-{pool}")
    (directory / "celery_app.py").write_text(WORKER_APP)
    with redis_server() as broker, RecordingZipkinServer() as zipkin:
        zipkin_url = f"zipkin+{zipkin.url}?interval=0.05"
        env = {
            **os.environ,
            "BROKER_URL": broker,
            "ZIPKIN_URL": zipkin_url,
            "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{directory}",
        }
        argv = [
            *(sys.executable, "-m", "celery", "-A", "celery_app", "worker", f"--pool={pool}"),
            *("--concurrency=2", "--loglevel=INFO", "--without-mingle", "--without-gossip"),
            "--without-heartbeat",
        ]
        log = directory / "worker.log"
        tomograph.configure(service="client", backends=[zipkin_url], environ={})
        celery_tracing.patch()
        client = celery.Celery("client", broker=broker, backend=broker)
        try:
            with process_group(argv, log, directory, env):
                yield Worker(pool, client, zipkin, log)
        finally:
            client.close()
            celery_tracing.unpatch()
            config.reset()


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [span for span in spans if span["name"] == name]


def send(worker: Worker, task: str, *args: Any, **options: Any) -> tuple[Any, str]:
    """Send ``task`` inside a span of this process; its result and the trace id."""
    with tomograph.span(f"test {task}") as span:
        result = worker.client.send_task(f"celery_app.{task}", args=args, **options)
    return result, f"{span.trace_id:032x}"


def test_the_worker_continues_the_producers_trace(worker: Worker) -> None:
    result, trace_id = send(worker, "add", 2, 3)
    assert result.get(timeout=RESULT_DEADLINE) == 5
    spans = worker.trace(trace_id, lambda spans: len(spans) == 4)  # with the test's own
    (publish,) = named(spans, "apply_async/celery_app.add")
    (run,) = named(spans, "run/celery_app.add")
    (inside,) = named(spans, "inside add")
    assert publish["kind"] == "PRODUCER"
    assert publish["localEndpoint"]["serviceName"] == "client"
    assert run["kind"] == "CONSUMER"
    assert run["localEndpoint"]["serviceName"] == "worker"
    assert run["parentId"] == publish["id"]
    assert inside["parentId"] == run["id"]
    assert run["tags"]["celery.state"] == "SUCCESS"
    assert run["tags"]["messaging.message.id"] == result.id
    assert run["tags"]["messaging.destination.name"] == "celery"
    for span in (publish, run):  # the broker, as the remote endpoint
        assert span["remoteEndpoint"]["serviceName"] == "redis"
        assert span["remoteEndpoint"]["ipv4"] == "127.0.0.1"


def test_retries_are_attempts_in_the_same_trace(worker: Worker) -> None:
    result, trace_id = send(worker, "flaky", 2)
    assert result.get(timeout=RESULT_DEADLINE) == 2
    spans = worker.trace(trace_id, lambda spans: len(spans) == 7)  # 3 sends, 3 runs, the test's
    runs = sorted(named(spans, "run/celery_app.flaky"), key=lambda s: s["tags"]["celery.retries"])
    assert [run["tags"]["celery.state"] for run in runs] == ["RETRY", "RETRY", "SUCCESS"]
    assert runs[0]["tags"]["celery.retry.reason"] == "ConnectionError: upstream busy"
    publishes = {span["id"]: span for span in named(spans, "apply_async/celery_app.flaky")}
    assert len(publishes) == 3
    # The second and third attempts were sent by the attempt before them, from the worker.
    assert publishes[runs[1]["parentId"]]["parentId"] == runs[0]["id"]
    assert publishes[runs[2]["parentId"]]["parentId"] == runs[1]["id"]


def test_a_failing_task_is_an_error_span(worker: Worker) -> None:
    result, trace_id = send(worker, "broken")
    with pytest.raises(KeyError):
        result.get(timeout=RESULT_DEADLINE)
    spans = worker.trace(trace_id, lambda spans: len(spans) == 3)
    (run,) = named(spans, "run/celery_app.broken")
    assert run["tags"]["exception.type"] == "KeyError"
    assert run["tags"]["celery.state"] == "FAILURE"
    assert "error" in run["tags"]
    assert any("KeyError" in note["value"] for note in run["annotations"])


def test_a_chain_and_a_group_keep_one_trace(worker: Worker) -> None:
    add = worker.client.signature
    with tomograph.span("test canvas") as span:
        chained = celery.chain(add("celery_app.add", (1, 2)), add("celery_app.add", (3,)))
        in_chain = chained.apply_async()
        grouped = celery.group(add("celery_app.add", (n, n)) for n in range(3)).apply_async()
    trace_id = f"{span.trace_id:032x}"
    assert in_chain.get(timeout=RESULT_DEADLINE) == 6
    assert sorted(grouped.get(timeout=RESULT_DEADLINE)) == [0, 2, 4]
    spans = worker.trace(trace_id, lambda spans: len(spans) == 16)  # 5 sends, 5 runs, 5 inside
    runs = named(spans, "run/celery_app.add")
    publishes = named(spans, "apply_async/celery_app.add")
    assert len(publishes) == 5
    assert {run["parentId"] for run in runs} == {publish["id"] for publish in publishes}
    # The chain's second link is sent by its first, from the worker.
    sent_by_worker = [p for p in publishes if p["localEndpoint"]["serviceName"] == "worker"]
    assert len(sent_by_worker) == 1
    assert sent_by_worker[0]["parentId"] in {run["id"] for run in runs}


def test_a_chord_keeps_one_trace_its_body_sent_from_the_worker(worker: Worker) -> None:
    signature = worker.client.signature
    with tomograph.span("test chord") as span:
        header = [signature("celery_app.add", (n, n)) for n in range(3)]
        result = celery.chord(header)(signature("celery_app.total"))
    assert result.get(timeout=RESULT_DEADLINE) == 6
    trace_id = f"{span.trace_id:032x}"
    spans = worker.trace(
        trace_id, lambda spans: len(spans) == 12
    )  # 4 sends, 4 runs, 3 inside, the test
    (body_run,) = named(spans, "run/celery_app.total")
    (body_publish,) = named(spans, "apply_async/celery_app.total")
    assert body_run["parentId"] == body_publish["id"]
    # The body is sent when the last header task is done, by the worker, inside that run.
    assert body_publish["localEndpoint"]["serviceName"] == "worker"
    header_runs = {run["id"] for run in named(spans, "run/celery_app.add")}
    assert body_publish["parentId"] in header_runs


def test_an_expired_task_is_a_revoked_span_in_the_producers_trace(worker: Worker) -> None:
    expired = datetime.now(timezone.utc) - timedelta(minutes=1)
    result, trace_id = send(worker, "add", 1, 1, expires=expired)
    with pytest.raises(celery.exceptions.TaskRevokedError):
        result.get(timeout=RESULT_DEADLINE)
    spans = worker.trace(trace_id, lambda spans: len(spans) == 3)  # with the test's own
    (run,) = named(spans, "run/celery_app.add")
    (publish,) = named(spans, "apply_async/celery_app.add")
    assert run["parentId"] == publish["id"]
    assert run["tags"]["celery.state"] == "REVOKED"
    assert run["tags"]["celery.expired"] == "true"
    assert not named(spans, "inside add")


# Only these pools enforce a hard time limit: Celery's solo, threads and eventlet pools let such
# a task run to its end.
@pytest.mark.parametrize("worker", ["prefork", "gevent"], indirect=True)
def test_a_task_past_its_hard_time_limit_is_an_error_span(worker: Worker) -> None:
    result, trace_id = send(worker, "stuck")
    with pytest.raises(Exception) as failure:  # the pool's time limit error
        result.get(timeout=RESULT_DEADLINE)
    assert "TimeLimitExceeded" in repr(failure.value) or "Timeout" in repr(failure.value)

    def limit_recorded(spans: list[dict[str, Any]]) -> bool:
        return any(
            "Time" in run["tags"].get("exception.type", "")
            for run in named(spans, "run/celery_app.stuck")
        )

    spans = worker.trace(trace_id, limit_recorded)
    (publish,) = named(spans, "apply_async/celery_app.stuck")
    runs = named(spans, "run/celery_app.stuck")
    # In prefork the pool child's span may arrive too (the child ended by SystemExit when the
    # pool terminated it), besides the main process's: both are errors in the same trace.
    assert 1 <= len(runs) <= (2 if worker.pool == "prefork" else 1), runs
    for run in runs:
        assert run["parentId"] == publish["id"]
        assert "error" in run["tags"]
        assert run["duration"] >= 900_000  # from its arrival to the limit, not a zero-length span


# Only the prefork pool runs tasks in children it can lose.
@pytest.mark.parametrize("worker", ["prefork"], indirect=True)
def test_a_task_whose_pool_child_is_lost_is_an_error_span(worker: Worker) -> None:
    result, trace_id = send(worker, "lost")
    with pytest.raises(celery.exceptions.WorkerLostError):
        result.get(timeout=RESULT_DEADLINE)
    spans = worker.trace(trace_id, lambda spans: len(spans) == 3)
    (run,) = named(spans, "run/celery_app.lost")
    (publish,) = named(spans, "apply_async/celery_app.lost")
    assert run["parentId"] == publish["id"]
    assert run["tags"]["exception.type"] == "WorkerLostError"
    assert run["tags"]["celery.state"] == "FAILURE"
    assert run["localEndpoint"]["serviceName"] == "worker"


def test_a_message_without_trace_headers_runs_in_a_new_trace(worker: Worker) -> None:
    with suppress_tracing():  # a producer without tomograph
        result = worker.client.send_task("celery_app.add", args=(4, 4))
    assert result.get(timeout=RESULT_DEADLINE) == 8
    spans = worker.zipkin.wait_until(
        lambda spans: any(
            span.get("tags", {}).get("messaging.message.id") == result.id for span in spans
        ),
        ARRIVAL_DEADLINE,
    )
    (run,) = [s for s in spans if s.get("tags", {}).get("messaging.message.id") == result.id]
    assert "parentId" not in run
    assert run["name"] == "run/celery_app.add"
