"""Fork safety and green threads: forked children and monkey-patched apps still deliver spans."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from support.servers import REPO_ROOT, BackgroundProcess, free_port, require, wait_for_port
from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer
from tomograph.reporting.zipkin import ZipkinBackend

pytestmark = pytest.mark.integration


def _child_checks(backend: ZipkinBackend, tracer: Tracer, count: int, use_flush: bool) -> int:
    """Runs in the child: its spans must be sent by its own worker. Returns an exit code."""
    try:
        for _ in range(count):
            with tracer.span("child"):
                pass
        if use_flush:
            if not backend.flush(5):
                return 3
        else:  # no flush: the worker must have been started by the pid check alone
            deadline = time.monotonic() + 5
            while backend.stats()["sent"] < count and time.monotonic() < deadline:
                time.sleep(0.02)
        stats = backend.stats()
        return 0 if stats["sent"] == count and stats["queued"] == count else 4
    except BaseException:
        return 5


def _run_fork_case(fork: object, count: int, use_flush: bool) -> None:
    with RecordingZipkinServer() as server:
        # A long interval: the parent's worker sleeps on a lock at the fork, as in an idle
        # uWSGI master. A thread that is contending for the GIL at the moment of a fork from
        # C leaves the child's GIL unusable whatever the library does (Python's own fork
        # hooks exist to repair exactly that).
        backend = ZipkinBackend(server.url, interval=30, batch_size=50)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("parent-before"):
            pass
        assert backend.flush(5)
        time.sleep(0.2)  # let the worker go back to sleep
        pid = fork()  # type: ignore[operator]
        if pid == 0:
            os._exit(_child_checks(backend, tracer, count, use_flush))
        with tracer.span("parent-after"):
            pass
        assert backend.flush(5)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        spans = server.wait_for(count + 2)
        backend.close(1)
    names = Counter(span["name"] for span in spans)
    assert names == {"parent-before": 1, "parent-after": 1, "child": count}
    assert server.invalid == []


def test_os_fork_child_gets_its_own_queue_and_worker() -> None:
    _run_fork_case(os.fork, 3, use_flush=True)


def test_spans_pending_at_os_fork_are_sent_by_the_parent_only() -> None:
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, interval=30, batch_size=1000)
        tracer = Tracer("forker", backends=[backend])
        with tracer.span("warm-up"):
            pass
        assert backend.flush(5)
        time.sleep(0.2)
        with tracer.span("pending-at-fork"):
            pass
        assert backend.stats()["pending"] == 1
        pid = os.fork()
        if pid == 0:
            code = 0 if backend.stats()["pending"] == 0 else 6
            os._exit(code or _child_checks(backend, tracer, 2, use_flush=True))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert backend.flush(5)
        spans = server.wait_for(4)
        time.sleep(0.2)
        backend.close(1)
    names = Counter(span["name"] for span in server.spans)
    assert names == {"warm-up": 1, "pending-at-fork": 1, "child": 2}
    assert len(spans) >= 4


def test_fork_from_c_without_python_hooks_is_detected_by_flush() -> None:
    # libc's fork() called directly (holding the GIL) skips os.register_at_fork, like uWSGI.
    _run_fork_case(ctypes.PyDLL(None).fork, 3, use_flush=True)


def test_fork_from_c_is_detected_on_the_slow_path_without_flush() -> None:
    _run_fork_case(ctypes.PyDLL(None).fork, 120, use_flush=False)


GUNICORN_APP = """
import os
import tomograph

tomograph.configure(service="preloaded", backends=[os.environ["ZIPKIN_URL"]], environ={})
with tomograph.span("preload"):
    pass


def app(environ, start_response):
    with tomograph.span("request", tags={"pid": os.getpid()}):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


def test_gunicorn_preload_workers_report_their_spans(tmp_path: Path) -> None:
    gunicorn = require(str(Path(sys.executable).parent / "gunicorn"), "gunicorn test extra")
    (tmp_path / "traced_app.py").write_text(GUNICORN_APP)
    port = free_port()
    with RecordingZipkinServer() as server:
        env = {
            **os.environ,
            "ZIPKIN_URL": f"zipkin+{server.url}?interval=0.05",
            "PYTHONPATH": str(REPO_ROOT / "src"),
        }
        argv = [gunicorn, "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "traced_app:app"]
        with BackgroundProcess(argv, tmp_path / "gunicorn.log", cwd=tmp_path, env=env) as proc:
            wait_for_port(port)
            pids = Counter()
            for _ in range(20):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    pids[response.read().decode()] += 1
            spans = server.wait_for(21)
            assert proc.process is not None
            master = str(proc.process.pid)
        requests = [span for span in spans if span["name"] == "request"]
        assert len(requests) == 20, proc.output()
        assert Counter(span["tags"]["pid"] for span in requests) == pids
        assert master not in pids
        assert [span["name"] for span in spans].count("preload") == 1
    assert server.invalid == []


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
