"""Celery workers: every pool child's task spans arrive, whatever ends the child.

Each run starts a private redis (broker and result backend), a real Zipkin endpoint and a real
``celery worker`` whose application configures tomograph at import, in the worker's main process
before the prefork pool forks its children (or, in one mode, in each child through Celery's
``worker_process_init``). The test sends TASKS tasks, each making one span, and reads which
process ran each task from its result. Pool children end with ``os._exit()`` when
``--max-tasks-per-child`` or ``--max-memory-per-child`` recycles them and at every kind of
shutdown: their spans must arrive all the same, each once, those of a recycled child before the
worker stops. Runs with a long batch interval leave spans in the children's queues until they
end, so what arrives there was sent on the way out. The ``solo`` and ``threads`` pools, which
do not fork, are the controls. Every run prints its numbers (spans before the stop, after it,
and the stop time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.redis_server import redis_server
from support.servers import REPO_ROOT, group_alive, process_group
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

celery = pytest.importorskip("celery")

TASKS = 24
#: The batch interval of runs that check that spans leave while the children run.
INTERVAL = 0.1
#: The batch interval of runs that check the children's exits: long enough that a span queued
#: in a child leaves only when something wakes the transport, its exit above all.
EXIT_ONLY_INTERVAL = 60.0
#: Deadlines for waits (never expected durations), and the bound on a stop.
TASK_DEADLINE = 60.0
ARRIVAL_DEADLINE = 20.0
STOP_LIMIT = 10.0

CELERY_APP = """
import os
import time

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

import tomograph


def configure(**_):
    tomograph.configure(service="celery", backends=[os.environ["ZIPKIN_URL"]], environ={})


if not os.environ.get("CONFIGURE_IN_CHILD"):
    configure()  # in the worker's main process, before the pool forks its children
    with tomograph.span("import"):  # the main process's own: sent once, by it
        pass


@worker_process_init.connect
def child_started(**_):
    if os.environ.get("CONFIGURE_IN_CHILD"):
        configure()
    # A pool child's first span starts its transport's worker, which sends what waits at once:
    # this one, so that the task spans wait for the interval (or the child's exit).
    with tomograph.span("child start"):
        pass


@worker_process_shutdown.connect
def child_ending(**_):
    with tomograph.span("child end"):  # the last thing a pool child traces
        pass


app = Celery("celery_app", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.worker_hijack_root_logger = False


@app.task
def traced(number):
    with tomograph.span("task", tags={"number": str(number), "pid": str(os.getpid())}):
        pass
    return os.getpid()


@app.task
def busy(started):
    with tomograph.span("busy", tags={"pid": str(os.getpid())}):
        open(started, "w").close()
        time.sleep(60)  # the task's work: a cold shutdown interrupts it
"""


@dataclass
class Mode:
    """One way of running a Celery worker, and what its runs must show."""

    pool: str
    options: list[str] = field(default_factory=list)
    interval: float = INTERVAL
    configure_in_child: bool = False
    #: How many tasks a child runs before the pool replaces it (0: never).
    tasks_per_child: int = 0
    #: How the worker is stopped: SIGTERM is Celery's warm shutdown, SIGQUIT its cold one.
    stop: signal.Signals = signal.SIGTERM
    #: Send the stop signal to every process of the worker (as systemd does), not only the
    #: main one: the pool children get it too.
    stop_all: bool = False
    #: Stop while every pool child runs a long task (a cold shutdown interrupts them).
    busy_at_stop: bool = False

    def recycled(self, tasks_run: int) -> bool:
        """Whether a child that ran ``tasks_run`` tasks has ended by the time they are done."""
        if "--max-memory-per-child=1" in self.options:
            return True  # every child is over 1 KiB after its first task
        return self.tasks_per_child > 0 and tasks_run == self.tasks_per_child


MODES = {
    # spans leave within the interval while the children run, recycled or not
    "prefork-recycling": Mode("prefork", ["--max-tasks-per-child=3"], tasks_per_child=3),
    # spans leave the children only as they end: recycled, then at the warm shutdown
    "prefork-exits": Mode(
        "prefork", ["--max-tasks-per-child=3"], EXIT_ONLY_INTERVAL, tasks_per_child=3
    ),
    "prefork-max-memory": Mode("prefork", ["--max-memory-per-child=1"], EXIT_ONLY_INTERVAL),
    "prefork-configured-in-child": Mode(
        "prefork",
        ["--max-tasks-per-child=3"],
        EXIT_ONLY_INTERVAL,
        configure_in_child=True,
        tasks_per_child=3,
    ),
    "prefork-shutdown": Mode("prefork", [], EXIT_ONLY_INTERVAL),
    "prefork-shutdown-every-process": Mode("prefork", [], EXIT_ONLY_INTERVAL, stop_all=True),
    # cold shutdown: the pool sends SIGTERM to its children, which still send on their way out
    "prefork-cold-shutdown": Mode(
        "prefork", [], EXIT_ONLY_INTERVAL, stop=signal.SIGQUIT, busy_at_stop=True
    ),
    # controls: no fork, the worker's main process runs the tasks and exits normally
    "solo": Mode("solo", [], EXIT_ONLY_INTERVAL),
    "threads": Mode("threads"),
}


@contextmanager
def _celery_client(broker: str) -> Iterator[Any]:
    client = celery.Celery("client", broker=broker, backend=broker)
    try:
        yield client
    finally:
        client.close()


def _task_spans(spans: list[dict[str, Any]], name: str = "task") -> list[dict[str, Any]]:
    return [span for span in spans if span["name"] == name]


def _start_busy_tasks(client: Any, directory: Path, count: int) -> None:
    """Start ``count`` long tasks and wait until each one runs."""
    started = [directory / f"busy-{n}" for n in range(count)]
    for path in started:
        client.send_task("celery_app.busy", args=[str(path)])
    deadline = time.monotonic() + TASK_DEADLINE
    while not all(path.exists() for path in started):
        if time.monotonic() > deadline:
            pytest.fail("the long tasks did not start")
        time.sleep(0.02)


def _stop(process: subprocess.Popen[bytes], mode: Mode) -> float:
    """Stop the worker as ``mode`` says; seconds until every process of it is gone."""
    started = time.monotonic()
    if mode.stop_all:
        os.killpg(process.pid, mode.stop)
    else:
        process.send_signal(mode.stop)
    try:
        process.wait(STOP_LIMIT * 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not stop within {STOP_LIMIT * 3} s")
    while group_alive(process.pid):
        if time.monotonic() - started > STOP_LIMIT * 3:
            pytest.fail("a pool child outlived the worker")
        time.sleep(0.02)
    return time.monotonic() - started


def _wait(zipkin: RecordingZipkinServer, condition: Callable[[list[Any]], bool]) -> float:
    started = time.monotonic()
    zipkin.wait_until(lambda spans: condition(_task_spans(spans)), ARRIVAL_DEADLINE)
    return time.monotonic() - started


def _run(name: str, mode: Mode, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "celery_app.py").write_text(CELERY_APP)
    with redis_server() as broker, RecordingZipkinServer() as zipkin:
        env = {
            **os.environ,
            "BROKER_URL": broker,
            "ZIPKIN_URL": f"zipkin+{zipkin.url}?interval={mode.interval}",
            "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{tmp_path}",
        }
        if mode.configure_in_child:
            env["CONFIGURE_IN_CHILD"] = "1"
        argv = [
            *(sys.executable, "-m", "celery", "-A", "celery_app", "worker"),
            *(f"--pool={mode.pool}", "--concurrency=2", "--loglevel=INFO", "--without-mingle"),
            *("--without-gossip", "--without-heartbeat", *mode.options),
        ]
        log = tmp_path / "worker.log"
        with process_group(argv, log, tmp_path, env) as process, _celery_client(broker) as client:
            results = [client.send_task("celery_app.traced", args=[n]) for n in range(TASKS)]
            ran_in = [result.get(timeout=TASK_DEADLINE) for result in results]
            tasks_by_pid = Counter(str(pid) for pid in ran_in)
            recycled = {pid for pid, run in tasks_by_pid.items() if mode.recycled(run)}
            from_recycled = sum(tasks_by_pid[pid] for pid in recycled)
            # Recycled children have ended (or are ending): all their spans must come.
            waited = _wait(
                zipkin,
                lambda spans: (
                    sum(span["tags"]["pid"] in recycled for span in spans) >= from_recycled
                ),
            )
            if mode.interval == INTERVAL:  # the children still running send within the interval
                waited = _wait(zipkin, lambda spans: len(spans) >= TASKS)
            before_stop = _task_spans(list(zipkin.spans))
            if mode.busy_at_stop:
                _start_busy_tasks(client, tmp_path, 2)
            stop_seconds = _stop(process, mode)
        spans = _task_spans(list(zipkin.spans))  # every process has ended: nothing more comes
        busy = _task_spans(list(zipkin.spans), "busy")
        names = Counter(span["name"] for span in zipkin.spans)
        invalid = list(zipkin.invalid)
    result = {
        "tasks_by_pid": tasks_by_pid,
        "recycled": recycled,
        "before_stop": before_stop,
        "spans": spans,
        "busy": busy,
        "names": names,
        "stop_seconds": stop_seconds,
        "invalid": invalid,
        "log": log.read_text(errors="replace")[-3000:],
    }
    row = {
        "children": len(tasks_by_pid),
        "recycled": len(recycled),
        "before stop": f"{len(before_stop)}/{TASKS}",
        "after stop": f"{len(spans)}/{TASKS}",
        "interrupted tasks": len(busy),
        "children started/ended": f"{names['child start']}/{names['child end']}",
        "arrival s": round(waited, 2),
        "stop s": round(stop_seconds, 2),
    }
    how = f"{mode.pool} {' '.join(mode.options)}, {mode.stop.name}{' to all' * mode.stop_all}"
    print(f"celery matrix {name} ({how}): {json.dumps(row)}")
    return result


def _assert_each_task_once(run: dict[str, Any]) -> None:
    spans = run["spans"]
    assert run["invalid"] == [], run["log"]
    # Delivery is at least once (Zipkin keeps one copy per id), yet a span sent twice here
    # would mean that two processes sent the same queue.
    assert len({span["id"] for span in spans}) == len(spans), run["log"]
    numbers = Counter(span["tags"]["number"] for span in spans)
    assert numbers == {str(n): 1 for n in range(TASKS)}, run["log"]
    # Each span came from the process that ran its task.
    assert Counter(span["tags"]["pid"] for span in spans) == run["tasks_by_pid"], run["log"]


@pytest.mark.parametrize("name", list(MODES))
def test_celery_task_spans_arrive_from_every_pool_child(tmp_path: Path, name: str) -> None:
    mode = MODES[name]
    run = _run(name, mode, tmp_path)
    _assert_each_task_once(run)
    before_stop = Counter(span["tags"]["pid"] for span in run["before_stop"])
    for pid in run["recycled"]:  # a child recycled while the worker runs lost nothing
        assert before_stop[pid] == run["tasks_by_pid"][pid], run["log"]
    if mode.tasks_per_child:
        assert len(run["recycled"]) >= TASKS // mode.tasks_per_child - 2, run["tasks_by_pid"]
    if mode.interval == INTERVAL:
        assert len(run["before_stop"]) == TASKS, run["log"]
    if mode.busy_at_stop:  # tasks ended by the shutdown are sent too, as errors
        assert len(run["busy"]) == 2, run["log"]
        assert all("error" in span["tags"] for span in run["busy"]), run["busy"]
    if not mode.configure_in_child:
        assert run["names"]["import"] == 1, run["names"]
    if mode.pool == "prefork":
        # Every pool child that started ended, and sent what it traced in Celery's last signal.
        names = run["names"]
        assert names["child start"] == names["child end"] >= len(run["tasks_by_pid"]), names
    assert run["stop_seconds"] < STOP_LIMIT, run["log"]
