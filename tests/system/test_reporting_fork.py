"""Fork safety and green threads: forked children and monkey-patched apps still deliver spans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from support.servers import REPO_ROOT, never_answering_server
from support.zipkin_server import RecordingZipkinServer
from tomograph.reporting.transport import EXIT_FLUSH_SECONDS

pytestmark = pytest.mark.integration

#: The forking side of the fork tests: see there why it runs in a process of its own.
FORKING_APP = Path(__file__).with_name("forking_app.py")


def _fork_in_a_process_of_its_own(
    scenario: str, server: RecordingZipkinServer, *args: object
) -> dict[str, Any]:
    """Run ``scenario`` of forking_app.py against ``server``; its JSON result.

    The scenario's own assertions (on the child's exit code, the parent's flush and counters)
    end it with their traceback, shown here.
    """
    done = subprocess.run(
        [sys.executable, str(FORKING_APP), scenario, server.url, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,  # a safety net only: a hung child is killed after 30 s
        check=False,
        env={**os.environ, "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{REPO_ROOT / 'tests'}"},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _check_child_and_parent(how: str, count: int, mode: str, batch_size: int = 50) -> None:
    with RecordingZipkinServer() as server:
        result = _fork_in_a_process_of_its_own(
            "child-and-parent", server, how, count, mode, batch_size
        )
        spans = list(server.spans)  # the forking process has exited: nothing more can come
    names = Counter(span["name"] for span in spans)
    assert names == {"parent-before": 1, "parent-after": 1, "child": result["child_spans"]}
    assert server.invalid == []


def test_os_fork_child_gets_its_own_queue_and_worker() -> None:
    _check_child_and_parent("os", 3, "flush")


def test_spans_pending_at_os_fork_are_sent_by_the_parent_only() -> None:
    with RecordingZipkinServer() as server:
        _fork_in_a_process_of_its_own("pending-at-os-fork", server)
        spans = list(server.spans)
    names = Counter(span["name"] for span in spans)
    assert names == {"warm-up": 1, "pending-at-fork": 1, "child": 2}


def test_fork_from_c_without_python_hooks_is_detected_by_flush() -> None:
    # libc's fork() called directly (holding the GIL) skips os.register_at_fork, like uWSGI.
    _check_child_and_parent("C", 3, "flush")


def test_fork_from_c_is_detected_on_the_slow_path_without_flush() -> None:
    _check_child_and_parent("C", 120, "batch")


def test_fork_from_c_is_noticed_within_a_second_by_spans_fewer_than_a_batch() -> None:
    # A worker that serves a request now and then never fills a batch: the pid check made at
    # least once a second (a report whose span ended after the last check) still finds it.
    _check_child_and_parent("C", 1, "trickle", batch_size=1000)


def test_threads_of_a_child_forked_from_c_take_the_transport_over_once() -> None:
    # Without Python's fork hooks the child's threads notice the fork on their own; several
    # noticing it at once each made the transport theirs: several workers, spans sent twice.
    threads, each, rounds = 32, 10, 20
    with RecordingZipkinServer() as server:
        result = _fork_in_a_process_of_its_own(
            "threads-take-over-once", server, threads, each, rounds
        )
        spans = list(server.spans)
    names = Counter(span["name"] for span in spans)
    assert result["failures"] == [], (
        "(round, 1: taken over twice, 2: two workers, 3: not all sent once, -9: hung)"
    )
    assert names == {"parent": rounds, **{f"child {r}": threads * each for r in range(rounds)}}


def test_a_child_forked_from_c_while_the_parent_holds_the_transports_locks_never_hangs() -> None:
    # The child's copies of the locks a parent thread held at the fork stay locked forever:
    # reporting, stats, flush and the exit hooks in the child must not wait for them.
    with RecordingZipkinServer() as server:
        _fork_in_a_process_of_its_own("locks-held-at-fork", server)
        spans = list(server.spans)
    assert Counter(span["name"] for span in spans) == {"parent": 1, "child": 200}


@pytest.mark.parametrize("how", ["os", "C"], ids=["os", "from C"])
def test_a_batch_in_flight_at_the_fork_is_counted_and_sent_by_the_parent_only(how: str) -> None:
    with RecordingZipkinServer() as server:
        # The parent's batch is answered once the child's has come: it is in flight at the fork.
        server.faults.append(("until-next", 10.0))
        _fork_in_a_process_of_its_own("batch-in-flight", server, how)
        spans = list(server.spans)
    assert Counter(span["name"] for span in spans) == {"in flight": 1, "child": 3}


def test_a_child_forked_from_c_counts_the_spans_it_dropped_before_noticing_the_fork() -> None:
    # Forked while the parent's worker sends (its queue then takes spans unchecked up to the
    # bound), the child filled the queue before its first pid check; taking the transport over
    # then reset the counters: the spans dropped until then were in no counter and no log line.
    with RecordingZipkinServer() as server:
        # The parent's first batch is answered once the child's has come, after the fork.
        server.faults.append(("until-next", 10.0))
        _fork_in_a_process_of_its_own("drops-before-noticing", server)


MULTIPROCESSING_APP = """
import importlib
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import tomograph

# At module level: children of the spawn and forkserver methods import this module again.
tomograph.configure(service="pool", backends=[os.environ["ZIPKIN_URL"]], environ={})


def work(name, count):
    for _ in range(count):
        with tomograph.span(name, tags={"pid": os.getpid()}):
            pass


if __name__ == "__main__":
    library = importlib.import_module(sys.argv[1])  # multiprocessing, or billiard (Celery's)
    context = library.get_context(sys.argv[2])
    with tomograph.span("parent"):  # queued, not yet sent, when fork children start
        pass
    processes = [context.Process(target=work, args=("process", 10)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    # Workers are replaced after two tasks: each one ends. Its first span starts its transport's
    # worker, which sends it at once: the task spans wait for the batch interval, or the exit.
    pool = context.Pool(2, initializer=work, initargs=("pool start", 1), maxtasksperchild=2)
    pool.starmap(work, [("pool", 5)] * 4, chunksize=1)
    pool.close()
    pool.join()
    if library.__name__ == "multiprocessing":
        with ProcessPoolExecutor(2, mp_context=context) as executor:
            list(executor.map(work, ["executor"] * 4, [5] * 4))
    print(os.getpid(), [process.exitcode for process in processes])
"""


@pytest.mark.parametrize(
    ("library", "method"),
    [
        *(("multiprocessing", method) for method in ("fork", "forkserver", "spawn")),
        *(("billiard", method) for method in ("fork", "forkserver", "spawn")),
    ],
)
def test_multiprocessing_children_send_their_spans_before_they_exit(
    tmp_path: Path, library: str, method: str
) -> None:
    # Children end right after their last span, long before the batch interval: what they
    # queued leaves at their exit (fork and forkserver children exit with os._exit(), and so do
    # billiard's pool workers whatever the method).
    pytest.importorskip(library)
    script = tmp_path / "pool_app.py"
    script.write_text(MULTIPROCESSING_APP)
    with RecordingZipkinServer() as server:
        env = {
            **os.environ,
            "ZIPKIN_URL": f"zipkin+{server.url}?interval=5",
            "PYTHONPATH": str(REPO_ROOT / "src"),
        }
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, str(script), library, method],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        parent_pid, exit_codes = done.stdout.split(maxsplit=1)
        assert exit_codes.strip() == "[0, 0, 0]"
        spans = list(server.spans)  # every process has exited: nothing more can come
    names = Counter(span["name"] for span in spans)
    print(f"{library} {method}: {dict(names)} in {elapsed:.2f} s")
    assert names.pop("pool start") >= 2  # one per pool worker, replacements included
    expected = {"parent": 1, "process": 30, "pool": 20}
    if library == "multiprocessing":
        expected["executor"] = 20
    assert names == expected, done.stderr
    assert len({span["id"] for span in spans}) == len(spans)
    assert parent_pid not in {span["tags"]["pid"] for span in spans if span["name"] != "parent"}
    assert server.invalid == []


HUNG_COLLECTOR_CHILD_APP = """
import json, multiprocessing, os, time

import tomograph

tomograph.configure(
    service="pool", backends=[os.environ["HUNG_URL"], os.environ["ZIPKIN_URL"]], environ={}
)


def work(report_to):
    hung, healthy = tomograph.get_tracer().backends
    with tomograph.span("first"):  # wakes both workers: the hung one stays in its send
        pass
    deadline = time.monotonic() + 10
    while healthy.stats()["sent"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(20):  # queued while the workers wait for their interval
        with tomograph.span("child"):
            pass
    report_to.send(time.monotonic())  # the child's exit begins


if __name__ == "__main__":
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=work, args=(send,))
    child.start()
    exit_began = receive.recv()
    child.join()
    print(json.dumps({"exit_seconds": time.monotonic() - exit_began, "code": child.exitcode}))
"""


def test_a_multiprocessing_child_exits_within_one_budget_and_sends_to_a_healthy_backend(
    tmp_path: Path,
) -> None:
    # Its exit finalizer closes the transports with the same single budget as atexit would,
    # and a collector that never answers takes none of the other backend's share.
    script = tmp_path / "hung_app.py"
    script.write_text(HUNG_COLLECTOR_CHILD_APP)
    with never_answering_server() as hung, RecordingZipkinServer() as server:
        server.faults.extend([("sleep", 0.0), ("sleep", 0.3)])  # healthy, answering in 0.3 s
        env = {
            **os.environ,
            "HUNG_URL": f"zipkin+{hung}?interval=60&timeout=600",
            "ZIPKIN_URL": f"zipkin+{server.url}?interval=60",
            "PYTHONPATH": str(REPO_ROOT / "src"),
        }
        done = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,  # a safety net only
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        spans = list(server.spans)  # the child has exited: nothing more can come
    print(f"multiprocessing child exit with a hung collector: {result['exit_seconds']:.2f} s")
    assert result["code"] == 0
    assert Counter(span["name"] for span in spans) == {"first": 1, "child": 20}, done.stderr
    # The waits end on deadlines; the margin covers a loaded machine.
    assert result["exit_seconds"] < EXIT_FLUSH_SECONDS + 1.5, result


GREEN_APP = """
import json, sys, time
library = sys.argv[2]
if library == "eventlet":
    import eventlet
    eventlet.monkey_patch()
    spawn, sleep = eventlet.spawn, eventlet.sleep
else:
    from gevent import monkey
    monkey.patch_all()
    import gevent
    spawn, sleep = gevent.spawn, gevent.sleep

import tomograph

tomograph.configure(service="green", backends=[sys.argv[1]], environ={})
ticks = []

def ticker():
    for _ in range(150):
        ticks.append(time.monotonic())
        sleep(0.02)

def work():
    for _ in range(20):
        with tomograph.span("green-op"):
            pass
        sleep(0.01)

tick = spawn(ticker)
workers = [spawn(work) for _ in range(10)]
for worker in workers:
    worker.wait() if library == "eventlet" else worker.join()
flushed = tomograph.flush(10)
tick.wait() if library == "eventlet" else tick.join()
gap = max(b - a for a, b in zip(ticks, ticks[1:]))
stats = {k: v for k, v in tomograph.stats().items() if k != "backends"}
print(json.dumps({"flushed": flushed, "max_gap": gap, "stats": stats}))
"""


@pytest.mark.parametrize("library", ["eventlet", "gevent"])
def test_monkey_patched_worker_neither_starves_nor_blocks_the_hub(
    tmp_path: Path, library: str
) -> None:
    pytest.importorskip(library)
    script = tmp_path / "green_app.py"
    script.write_text(textwrap.dedent(GREEN_APP))
    with RecordingZipkinServer() as server:
        server.faults.append(("sleep", 1.5))  # the worker waits on a slow collector meanwhile
        url = f"zipkin+{server.url}?interval=0.05&timeout=5"
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
        done = subprocess.run(
            [sys.executable, str(script), url, library],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        spans = server.wait_for(200)
    assert result["flushed"] is True
    assert result["stats"]["sent"] == 200
    # Delivery is at least once: a batch whose answer came later than the client's timeout (a
    # loaded machine) is sent again, and Zipkin keeps one copy per span id.
    assert len({span["id"] for span in spans}) == 200
    # A worker blocking the hub would stall the ticker for the collector's whole 1.5 s delay.
    assert result["max_gap"] < 1.0, result
