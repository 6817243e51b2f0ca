"""Fork safety and green threads: forked children and monkey-patched apps still deliver spans."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from types import CodeType
from typing import Any

import pytest

from support.servers import REPO_ROOT, never_answering_server
from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer
from tomograph.reporting import transport as transport_module
from tomograph.reporting.transport import EXIT_FLUSH_SECONDS, BatchingTransport
from tomograph.reporting.zipkin import ZipkinBackend

pytestmark = pytest.mark.integration


def _child_checks(
    backend: ZipkinBackend, tracer: Tracer, count: int, how: str, report_to: int = -1
) -> int:
    """Runs in the child: its spans must be sent by its own worker. Returns an exit code.

    ``how``: "flush" (then flush), "batch" (no flush: ``count`` reaches the batch size) or
    "trickle" (no flush: one span every 50 ms, fewer than a batch, until they are sent).
    The number of spans made is written to the file descriptor ``report_to``, if given.
    """
    try:
        reported = 0
        deadline = time.monotonic() + 5
        while reported < count or (how == "trickle" and not _sent_all(backend, reported)):
            if time.monotonic() > deadline:
                return 6
            with tracer.span("child"):
                pass
            reported += 1
            if how == "trickle":
                time.sleep(0.05)
        if how == "flush" and not backend.flush(5):
            return 3
        while not _sent_all(backend, reported) and time.monotonic() < deadline:
            time.sleep(0.02)
        if report_to >= 0:
            os.write(report_to, str(reported).encode())
        return 0 if _sent_all(backend, reported) else 4
    except BaseException:
        return 5


def _sent_all(backend: ZipkinBackend, count: int) -> bool:
    """The child's own counters show ``count`` spans, all sent (until the transport noticed the
    fork, its counters are the parent's, which queued a span before)."""
    stats = backend.stats()
    return stats["queued"] == stats["sent"] == count


def _wait_until_worker_sleeps(transport: BatchingTransport) -> None:
    """Wait until the transport's worker is blocked in its interval wait, the GIL released.

    libc's fork() made while another thread waits for the GIL leaves the child's GIL unusable
    whatever the library does (Python's own os.fork repairs exactly that; a fork from C does
    not), so the tests fork from C only while the worker sleeps. The worker is seen in its
    wait twice, with the GIL handed over between: a thread only about to block would have
    blocked by then, and nothing wakes it before its long interval ends.
    """
    worker = transport._worker
    assert worker is not None
    _wait_until_waiting(worker)


def _wait_until_waiting(
    thread: threading.Thread, wait_code: CodeType = threading.Condition.wait.__code__
) -> None:
    """Wait until ``thread`` is blocked in ``wait_code``, a ``Condition.wait`` (see above)."""
    assert thread.ident is not None
    deadline = time.monotonic() + 10
    seen = 0
    while seen < 2:
        assert time.monotonic() < deadline, f"{thread.name} did not go back to its wait"
        frame = sys._current_frames().get(thread.ident)
        seen = seen + 1 if frame is not None and frame.f_code is wait_code else 0
        time.sleep(0.005)


def _run_fork_case(fork: object, count: int, how: str, batch_size: int = 50) -> None:
    with RecordingZipkinServer() as server:
        # A long interval: the parent's worker sleeps on a lock at the fork, as in an idle
        # uWSGI master.
        backend = ZipkinBackend(server.url, interval=30, batch_size=batch_size)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("parent-before"):
            pass
        assert backend.flush(5)
        _wait_until_worker_sleeps(backend.transport)
        made_in_child, child_end = os.pipe()
        pid = fork()  # type: ignore[operator]
        if pid == 0:
            os._exit(_child_checks(backend, tracer, count, how, child_end))
        os.close(child_end)
        with tracer.span("parent-after"):
            pass
        assert backend.flush(5)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        child_spans = int(os.read(made_in_child, 20))
        os.close(made_in_child)
        # Both sides waited for the endpoint's answers, which come after it recorded.
        spans = list(server.spans)
        backend.close(1)
    names = Counter(span["name"] for span in spans)
    assert names == {"parent-before": 1, "parent-after": 1, "child": child_spans}
    assert server.invalid == []


def test_os_fork_child_gets_its_own_queue_and_worker() -> None:
    _run_fork_case(os.fork, 3, "flush")


def test_spans_pending_at_os_fork_are_sent_by_the_parent_only() -> None:
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, interval=30, batch_size=1000)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("warm-up"):
            pass
        assert backend.flush(5)
        _wait_until_worker_sleeps(backend.transport)  # so that the next span stays queued
        with tracer.span("pending-at-fork"):
            pass
        assert backend.stats()["pending"] == 1
        pid = os.fork()
        if pid == 0:
            code = 0 if backend.stats()["pending"] == 0 else 6
            os._exit(code or _child_checks(backend, tracer, 2, "flush"))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # the child flushed: it sent only its own
        assert backend.flush(5)  # the endpoint answers after recording: all spans are in
        backend.close(1)
    names = Counter(span["name"] for span in server.spans)
    assert names == {"warm-up": 1, "pending-at-fork": 1, "child": 2}


def test_fork_from_c_without_python_hooks_is_detected_by_flush() -> None:
    # libc's fork() called directly (holding the GIL) skips os.register_at_fork, like uWSGI.
    _run_fork_case(ctypes.PyDLL(None).fork, 3, "flush")


def test_fork_from_c_is_detected_on_the_slow_path_without_flush() -> None:
    _run_fork_case(ctypes.PyDLL(None).fork, 120, "batch")


def test_fork_from_c_is_noticed_within_a_second_by_spans_fewer_than_a_batch() -> None:
    # A worker that serves a request now and then never fills a batch: the pid check made at
    # least once a second (a report whose span ended after the last check) still finds it.
    _run_fork_case(ctypes.PyDLL(None).fork, 1, "trickle", batch_size=1000)


def _exit_code_within(pid: int, timeout: float) -> int:
    """The child's exit code; a child still running after ``timeout`` s is killed (-9)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -9


def _threads_report_at_once(tracer: Tracer, threads: int, each: int, name: str) -> None:
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        for _ in range(each):
            with tracer.span(name):
                pass

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def test_threads_of_a_child_forked_from_c_take_the_transport_over_once() -> None:
    # Without Python's fork hooks the child's threads notice the fork on their own; several
    # noticing it at once each made the transport theirs: several workers, spans sent twice.
    threads, each, rounds = 32, 10, 20
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, interval=30, batch_size=4)
        tracer = Tracer("forker", backends=[backend])
        sender = backend.transport.sender
        reset, resets_in = sender.reset, []  # a take-over resets the sender once

        def counted_reset() -> None:
            resets_in.append(os.getpid())
            reset()

        sender.reset = counted_reset  # type: ignore[method-assign]
        failures = []
        for round_ in range(rounds):
            with tracer.span("parent"):
                pass
            assert backend.flush(5)
            _wait_until_worker_sleeps(backend.transport)
            pid = ctypes.PyDLL(None).fork()
            if pid == 0:
                code = 9
                try:
                    sys.setswitchinterval(1e-6)  # switch threads as often as possible
                    _threads_report_at_once(tracer, threads, each, f"child {round_}")
                    sys.setswitchinterval(0.005)
                    name = f"tomograph {backend.transport.sender.name}"
                    workers = [t for t in threading.enumerate() if t.name == name]
                    flushed = backend.flush(10)
                    stats = backend.stats()
                    code = 0
                    if resets_in.count(os.getpid()) != 1:
                        code = 1
                    elif len(workers) != 1:
                        code = 2
                    elif not flushed or not stats["queued"] == stats["sent"] == threads * each:
                        code = 3
                finally:
                    os._exit(code)
            code = _exit_code_within(pid, 30)
            if code:
                failures.append((round_, code))
        assert backend.flush(5)
        spans = list(server.spans)
        backend.close(1)
    names = Counter(span["name"] for span in spans)
    assert failures == [], "(round, 1: taken over twice, 2: two workers, 3: not all sent once)"
    assert names == {"parent": rounds, **{f"child {r}": threads * each for r in range(rounds)}}


def test_a_child_forked_from_c_while_the_parent_holds_the_transports_locks_never_hangs() -> None:
    # The child's copies of the locks a parent thread held at the fork stay locked forever:
    # reporting, stats, flush and the exit hooks in the child must not wait for them.
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, interval=30, batch_size=50)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("parent"):
            pass
        assert backend.flush(5)
        transport = backend.transport
        held = [
            transport._lifecycle,
            transport._sending,
            transport._changed,
            transport._wakeup._cond,
            transport._stopping._cond,
            transport._close_done._cond,
        ]
        release = threading.Event()

        def hold() -> None:
            for lock in held:
                lock.acquire()
            release.wait(30)
            for lock in reversed(held):
                lock.release()

        _wait_until_worker_sleeps(transport)  # first: it needs none of the locks until then
        holder = threading.Thread(target=hold, name="holder")
        holder.start()
        _wait_until_waiting(holder)
        pid = ctypes.PyDLL(None).fork()
        if pid == 0:
            code = 9
            try:
                _threads_report_at_once(tracer, 8, 25, "child")
                queued = backend.stats()["queued"]
                flushed = backend.flush(5)
                transport_module._close_all_at_exit()  # what atexit runs
                stats = backend.stats()
                code = 0 if (queued, flushed, stats["sent"]) == (200, True, 200) else 1
            finally:
                os._exit(code)
        release.set()
        holder.join(10)
        assert _exit_code_within(pid, 30) == 0  # -9: the child hung
        assert backend.flush(5)
        spans = list(server.spans)
        backend.close(1)
    assert Counter(span["name"] for span in spans) == {"parent": 1, "child": 200}


@pytest.mark.parametrize("fork", [os.fork, ctypes.PyDLL(None).fork], ids=["os", "from C"])
def test_a_batch_in_flight_at_the_fork_is_counted_and_sent_by_the_parent_only(fork: Any) -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("sleep", 1.0))  # the parent's batch is answered late
        backend = ZipkinBackend(server.url, interval=30, batch_size=50)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("in flight"):
            pass
        worker = backend.transport._worker
        assert worker is not None
        _wait_until_waiting(worker, socket.SocketIO.readinto.__code__)
        assert backend.stats()["pending"] == 1
        pid = fork()
        if pid == 0:
            code = 9
            try:
                for _ in range(3):
                    with tracer.span("child"):
                        pass
                flushed = backend.flush(10)
                stats = backend.stats()
                code = 0 if flushed and stats["queued"] == stats["sent"] == 3 else 1
            finally:
                os._exit(code)
        assert _exit_code_within(pid, 30) == 0
        assert backend.flush(10)
        stats = backend.stats()
        assert (stats["queued"], stats["sent"], stats["pending"]) == (1, 1, 0)
        spans = list(server.spans)
        backend.close(1)
    assert Counter(span["name"] for span in spans) == {"in flight": 1, "child": 3}


def test_a_child_forked_from_c_counts_the_spans_it_dropped_before_noticing_the_fork(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Forked while the parent's worker sends (its queue then takes spans unchecked up to the
    # bound), the child filled the queue before its first pid check; taking the transport over
    # then reset the counters: the spans dropped until then were in no counter and no log line.
    with RecordingZipkinServer() as server:
        server.faults.append(("sleep", 2.0))  # the parent's first batch is answered late
        backend = ZipkinBackend(server.url, interval=30, batch_size=10, queue_size=200)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("parent"):
            pass
        worker = backend.transport._worker
        assert worker is not None
        _wait_until_waiting(worker, socket.SocketIO.readinto.__code__)  # in the slow send
        for _ in range(30):  # the worker is busy: these make the queue take spans unchecked
            with tracer.span("parent"):
                pass
        pid = ctypes.PyDLL(None).fork()
        if pid == 0:
            code = 9
            try:
                inherited = len(backend.transport._queue)
                for _ in range(300):
                    with tracer.span("child"):
                        pass
                flushed = backend.flush(10)
                stats = backend.stats()
                made = inherited + 300
                full = sum("is full" in record.getMessage() for record in caplog.records)
                if not flushed or stats["queued"] != made:
                    code = 1
                elif (stats["sent"], stats["dropped"]) != (200, made - 200):
                    code = 2
                else:
                    code = 0 if full == 1 else 3
            finally:
                os._exit(code)
        assert _exit_code_within(pid, 30) == 0, "1: spans not counted, 2: miscounted, 3: no log"
        assert backend.flush(10)
        backend.close(1)


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
