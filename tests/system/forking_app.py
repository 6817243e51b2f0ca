"""The forking side of test_reporting_fork.py, run in a process of its own.

``python forking_app.py SCENARIO ZIPKIN_URL [ARGS...]`` traces, forks (with ``os.fork`` or
with libc's ``fork()`` called from C, as uWSGI does), checks the child and the parent with
assertions (a failed one ends this process with its traceback) and prints one JSON line; the
test checks that and what the Zipkin endpoint received.

Why a process of its own: libc's fork() made while another thread waits for the GIL leaves the
child's interpreter unusable whatever the library does. The forking thread holds the GIL
through the fork; the child inherits a GIL whose waiter and switch state belong to threads the
fork did not copy, and its only thread then waits in ``drop_gil`` for one of them forever
(Python's own os.fork repairs the GIL; a fork from C does not). The test process runs the
endpoint's threads, which wake at any moment (the server polls twice a second, a handler
finishes its answer); here no thread runs but the ones a scenario controls, and :func:`fork`
checks that and waits until each of them is blocked before it forks.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Any

from support.thread_calls import IN_A_WAIT, READING_AN_ANSWER, all_at_once, wait_until_blocked
from tomograph import Tracer
from tomograph.reporting import transport as transport_module
from tomograph.reporting.zipkin import ZipkinBackend


def fork(how: str, *blocked: tuple[threading.Thread, CodeType]) -> int:
    """Fork with ``os.fork`` ("os") or libc's fork() called from C ("C"); the child's pid, or 0.

    Every thread but this one must be one of ``blocked`` (thread, code where it blocks), and
    the fork waits until each one is blocked there, the GIL released: see the module's doc.
    """
    others = set(threading.enumerate()) - {threading.current_thread()}
    assert others == {thread for thread, _ in blocked}, f"threads not controlled: {others}"
    for thread, code in blocked:
        wait_until_blocked(thread, code)
    if how == "os":
        return os.fork()
    assert how == "C", how
    return int(ctypes.PyDLL(None).fork())


def worker_of(backend: ZipkinBackend) -> threading.Thread:
    worker = backend.transport._worker
    assert worker is not None
    return worker


def exit_code_within(pid: int, timeout: float) -> int:
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


def sent_all(backend: ZipkinBackend, count: int) -> bool:
    """The child's own counters show ``count`` spans, all sent (until the transport noticed the
    fork, its counters are the parent's, which queued a span before)."""
    stats = backend.stats()
    return stats["queued"] == stats["sent"] == count


def child_checks(backend: ZipkinBackend, tracer: Tracer, count: int, how: str) -> tuple[int, int]:
    """Runs in the child: its spans must be sent by its own worker. (exit code, spans made)

    ``how``: "flush" (then flush), "batch" (no flush: ``count`` reaches the batch size) or
    "trickle" (no flush: one span every 50 ms, fewer than a batch, until they are sent).
    """
    reported = 0
    try:
        deadline = time.monotonic() + 5
        while reported < count or (how == "trickle" and not sent_all(backend, reported)):
            if time.monotonic() > deadline:
                return 6, reported
            with tracer.span("child"):
                pass
            reported += 1
            if how == "trickle":
                time.sleep(0.05)
        if how == "flush" and not backend.flush(5):
            return 3, reported
        while not sent_all(backend, reported) and time.monotonic() < deadline:
            time.sleep(0.02)
        return (0 if sent_all(backend, reported) else 4), reported
    except BaseException:
        return 5, reported


def threads_report_at_once(tracer: Tracer, threads: int, each: int, name: str) -> None:
    def work(_: int) -> None:
        for _ in range(each):
            with tracer.span(name):
                pass

    all_at_once(threads, work)


def child_and_parent(url: str, how: str, count: str, mode: str, batch_size: str) -> dict[str, Any]:
    """A child forked while the parent's worker sleeps sends its own spans, the parent its own."""
    # A long interval: the parent's worker sleeps on a lock at the fork, as in an idle uWSGI master.
    backend = ZipkinBackend(url, interval=30, batch_size=int(batch_size))
    tracer = Tracer("forker", backends=[backend])
    with tracer.span("parent-before"):
        pass
    assert backend.flush(5)
    made_in_child, child_end = os.pipe()
    pid = fork(how, (worker_of(backend), IN_A_WAIT))
    if pid == 0:
        code, made = child_checks(backend, tracer, int(count), mode)
        os.write(child_end, str(made).encode())
        os._exit(code)
    os.close(child_end)
    with tracer.span("parent-after"):
        pass
    assert backend.flush(5)
    code = exit_code_within(pid, 30)
    assert code == 0, f"child exit code {code} (3: flush failed, 4: not sent, 5: raised, 6: slow)"
    child_spans = int(os.read(made_in_child, 20))
    os.close(made_in_child)
    backend.close(1)  # both sides waited for the endpoint's answers, which come after it recorded
    return {"child_spans": child_spans}


def pending_at_os_fork(url: str) -> dict[str, Any]:
    """A span queued at os.fork is the parent's to send; the child sends only its own."""
    backend = ZipkinBackend(url, interval=30, batch_size=1000)
    tracer = Tracer("forker", backends=[backend])
    with tracer.span("warm-up"):
        pass
    assert backend.flush(5)
    wait_until_blocked(worker_of(backend), IN_A_WAIT)  # so that the next span stays queued
    with tracer.span("pending-at-fork"):
        pass
    assert backend.stats()["pending"] == 1
    pid = fork("os", (worker_of(backend), IN_A_WAIT))
    if pid == 0:
        code = 0 if backend.stats()["pending"] == 0 else 6
        os._exit(code or child_checks(backend, tracer, 2, "flush")[0])
    code = exit_code_within(pid, 30)
    assert code == 0, f"child exit code {code} (6: it holds the parent's span)"
    assert backend.flush(5)  # the endpoint answers after recording: all spans are in
    backend.close(1)
    return {}


def threads_take_over_once(url: str, threads: str, each: str, rounds: str) -> dict[str, Any]:
    """Threads of a child forked from C, noticing the fork at once, take the transport over once."""
    backend = ZipkinBackend(url, interval=30, batch_size=4)
    tracer = Tracer("forker", backends=[backend])
    sender = backend.transport.sender
    reset, resets_in = sender.reset, []  # a take-over resets the sender once

    def counted_reset() -> None:
        resets_in.append(os.getpid())
        reset()

    sender.reset = counted_reset  # type: ignore[method-assign]
    spans = int(threads) * int(each)
    failures = []
    for round_ in range(int(rounds)):
        with tracer.span("parent"):
            pass
        assert backend.flush(5)
        pid = fork("C", (worker_of(backend), IN_A_WAIT))
        if pid == 0:
            code = 9
            try:
                sys.setswitchinterval(1e-6)  # switch threads as often as possible
                threads_report_at_once(tracer, int(threads), int(each), f"child {round_}")
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
                elif not flushed or not stats["queued"] == stats["sent"] == spans:
                    code = 3
            finally:
                os._exit(code)
        code = exit_code_within(pid, 30)
        if code:
            failures.append((round_, code))
    assert backend.flush(5)
    backend.close(1)
    return {"failures": failures}


def locks_held_at_fork(url: str) -> dict[str, Any]:
    """A child forked from C while a parent thread holds the transport's locks never waits for
    them: its copies stay locked forever."""
    backend = ZipkinBackend(url, interval=30, batch_size=50)
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

    wait_until_blocked(worker_of(backend), IN_A_WAIT)  # first: it needs none of the locks then
    holder = threading.Thread(target=hold, name="holder")
    holder.start()
    pid = fork("C", (worker_of(backend), IN_A_WAIT), (holder, IN_A_WAIT))
    if pid == 0:
        code = 9
        try:
            threads_report_at_once(tracer, 8, 25, "child")
            queued = backend.stats()["queued"]
            flushed = backend.flush(5)
            transport_module._close_all_at_exit()  # what atexit runs
            stats = backend.stats()
            code = 0 if (queued, flushed, stats["sent"]) == (200, True, 200) else 1
        finally:
            os._exit(code)
    release.set()
    holder.join(10)
    assert exit_code_within(pid, 30) == 0  # -9: the child hung
    assert backend.flush(5)
    backend.close(1)
    return {}


def batch_in_flight(url: str, how: str) -> dict[str, Any]:
    """A batch in flight at the fork (the endpoint answers late) is the parent's only."""
    backend = ZipkinBackend(url, interval=30, batch_size=50)
    tracer = Tracer("forker", backends=[backend])
    with tracer.span("in flight"):
        pass
    worker = worker_of(backend)
    wait_until_blocked(worker, READING_AN_ANSWER)
    assert backend.stats()["pending"] == 1
    pid = fork(how, (worker, READING_AN_ANSWER))
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
    assert exit_code_within(pid, 30) == 0
    assert backend.flush(10)
    stats = backend.stats()
    assert (stats["queued"], stats["sent"], stats["pending"]) == (1, 1, 0)
    backend.close(1)
    return {}


class _Messages(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def drops_before_noticing(url: str) -> dict[str, Any]:
    """A child forked from C while the parent's worker sends counts and logs the spans it
    dropped before its first pid check."""
    log = _Messages()
    logging.getLogger("tomograph").addHandler(log)
    backend = ZipkinBackend(url, interval=30, batch_size=10, queue_size=200)
    tracer = Tracer("forker", backends=[backend])
    with tracer.span("parent"):
        pass
    worker = worker_of(backend)
    wait_until_blocked(worker, READING_AN_ANSWER)  # in the slow send
    for _ in range(30):  # the worker is busy: these make the queue take spans unchecked
        with tracer.span("parent"):
            pass
    pid = fork("C", (worker, READING_AN_ANSWER))
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
            full = sum("is full" in message for message in log.messages)
            if not flushed or stats["queued"] != made:
                code = 1
            elif (stats["sent"], stats["dropped"]) != (200, made - 200):
                code = 2
            else:
                code = 0 if full == 1 else 3
        finally:
            os._exit(code)
    code = exit_code_within(pid, 30)
    assert code == 0, f"child exit code {code} (1: spans not counted, 2: miscounted, 3: no log)"
    assert backend.flush(10)
    backend.close(1)
    return {}


SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "child-and-parent": child_and_parent,
    "pending-at-os-fork": pending_at_os_fork,
    "threads-take-over-once": threads_take_over_once,
    "locks-held-at-fork": locks_held_at_fork,
    "batch-in-flight": batch_in_flight,
    "drops-before-noticing": drops_before_noticing,
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]](*sys.argv[2:])))
