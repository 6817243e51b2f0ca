"""tomograph as OpenTelemetry's SDK in processes forked after ``install()`` (gunicorn
``--preload``, multiprocessing with fork): the child's spans made through the API reach the
collector, in the trace of the span open at the fork, and so do the parent's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from support.collector import running_collector, wait_for_traces
from support.traced_programs import run_python

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform == "win32", reason="os.fork"),
]

PROGRAM = """
import multiprocessing, os, sys
import tomograph, tomograph.opentelemetry
from opentelemetry import trace

tomograph.configure(service="forked", backends=[sys.argv[1]], environ={})
tomograph.opentelemetry.install()
tracer = trace.get_tracer("jobs")

def work(name):
    with tracer.start_as_current_span(name) as span:
        span.set_attribute("pid", os.getpid())
    assert trace.get_tracer_provider().force_flush(10_000)

with tracer.start_as_current_span("parent before fork"):
    pid = os.fork()
    if pid == 0:
        work("os.fork child")
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    process = multiprocessing.get_context("fork").Process(target=work, args=("mp child",))
    process.start()
    process.join()
    assert process.exitcode == 0
    work("parent after fork")
assert trace.get_tracer_provider().force_flush(10_000)
"""


def test_spans_of_forked_children_reach_the_collector_in_the_parents_trace(
    tmp_path: Path,
) -> None:
    with running_collector(tmp_path) as base_url:
        backend = f"zipkin+http://{base_url.removeprefix('http://')}"
        result = run_python(PROGRAM, tmp_path, args=(backend,))
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 15
        traces = wait_for_traces(base_url, 1, "serviceName=forked")
        while sum(len(spans) for spans in traces) < 4 and time.monotonic() < deadline:
            traces = wait_for_traces(base_url, 1, "serviceName=forked")
    (spans,) = traces
    by_name = {span["name"]: span for span in spans}
    assert set(by_name) == {"parent before fork", "os.fork child", "mp child", "parent after fork"}
    root = by_name["parent before fork"]
    for name in ("os.fork child", "mp child", "parent after fork"):
        assert by_name[name]["parentId"] == root["id"], name
    pids = {
        by_name[name]["tags"]["pid"] for name in ("os.fork child", "mp child", "parent after fork")
    }
    assert len(pids) == 3


LOCK_HELD_AT_FORK = """
import os, sys, time
from opentelemetry import baggage, context
import tomograph
from tomograph.opentelemetry import TracerProvider, _context

tracer = TracerProvider(tracer=tomograph.Tracer("forked", backends=[])).get_tracer("jobs")
with tracer.start_as_current_span("shared"):
    _context._BAGGAGE_LOCK.acquire()  # as another thread may hold it at the moment of a fork
    pid = os.fork()
    if pid == 0:
        token = context.attach(baggage.set_baggage("user", "alice"))
        context.detach(token)
        os._exit(0)
    _context._BAGGAGE_LOCK.release()
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            sys.exit(os.waitstatus_to_exitcode(status))
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            sys.exit("the child hung on the baggage lock")
        time.sleep(0.01)
"""


def test_a_child_forked_while_the_baggage_lock_was_held_can_attach_baggage(
    tmp_path: Path,
) -> None:
    result = run_python(LOCK_HELD_AT_FORK, tmp_path)
    assert result.returncode == 0, result.stderr
