"""Pre-fork servers: every worker of uWSGI and gunicorn, in their usual modes, reports on its own.

Each run starts a real server on an application that traces a span at import time (before the
server forks its workers, unless the mode loads the application in each worker), sends N
requests, and counts what a real Zipkin endpoint received: all N request spans must arrive
while the server still runs (a worker killed by harakiri or the OOM killer loses only what it
made in its last interval), the import span exactly once, and a graceful stop must end within
5 s. Every run prints its numbers (spans before the stop and how long that took, stop time).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.servers import (
    REPO_ROOT,
    free_port,
    group_alive,
    process_group,
    require,
    wait_for_port,
)
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

REQUESTS = 40
#: The transport's batch interval in these runs: spans should be at the endpoint about this
#: long after they ended. The waits below are deadlines, far longer, never expected durations.
INTERVAL = 0.1
ARRIVAL_DEADLINE = 20.0
#: A graceful stop must take less than this (uWSGI's master checks its workers once a second).
STOP_LIMIT = 5.0
DEBIAN_PLUGIN = "/usr/lib/uwsgi/plugins/python3_plugin.so"

PREFORK_APP = """
import os

import tomograph

tomograph.configure(service="prefork", backends=[os.environ["ZIPKIN_URL"]], environ={})
with tomograph.span("import"):  # traced before a preloading server forks its workers
    pass

if os.environ.get("IMPORT_UWSGIDECORATORS"):
    import uwsgidecorators  # replaces the post-fork hook tomograph installed

    uwsgidecorators.postfork(lambda: None)



def app(environ, start_response):
    with tomograph.span("request", tags={"pid": os.getpid()}):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


@dataclass
class Mode:
    """One way of running a pre-fork server, and what its runs must show."""

    server: (
        str  # "uwsgi" (pip), "debian-uwsgi" (Debian's 2.0.21 and its python3 plugin), "gunicorn"
    )
    options: list[str]
    #: The import span is made once (the application loads before the fork), else per worker.
    preloads: bool = True
    #: uWSGI without Python threads: a worker sends only while it runs Python (a request) and
    #: at exit, so its last spans arrive with the stop, not before.
    threads: bool = True
    #: The import span may wait for the stop (the fork is noticed only by a pid check).
    import_before_stop: bool = True
    #: Workers are replaced during the run: more processes answer than the server's 2 workers.
    recycles: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def master(self) -> bool:
        return self.server == "gunicorn" or "--master" in self.options


MODES = {
    # uWSGI from PyPI (2.0.27 and later always run Python threads)
    "uwsgi-default": Mode("uwsgi", ["--master"]),
    "uwsgi-lazy-apps": Mode("uwsgi", ["--master", "--lazy-apps"], preloads=False),
    "uwsgi-py-call-osafterfork": Mode("uwsgi", ["--master", "--py-call-osafterfork"]),
    "uwsgi-py-call-uwsgi-fork-hooks": Mode("uwsgi", ["--master", "--py-call-uwsgi-fork-hooks"]),
    "uwsgi-no-master": Mode("uwsgi", []),
    "uwsgi-threads": Mode("uwsgi", ["--master", "--threads", "4"]),
    # workers replaced while running: each replacement is forked from the master again
    # (uWSGI replaces none younger than --min-worker-lifetime, 10 s by default: longer than a run)
    "uwsgi-max-requests": Mode(
        "uwsgi", ["--master", "--max-requests", "7", "--min-worker-lifetime", "0"], recycles=True
    ),
    "gunicorn-max-requests": Mode("gunicorn", ["--preload", "--max-requests", "7"], recycles=True),
    "gunicorn-gthread-preload": Mode("gunicorn", ["--preload", "-k", "gthread", "--threads", "2"]),
    "uwsgi-hook-replaced": Mode(
        "uwsgi", ["--master"], import_before_stop=False, env={"IMPORT_UWSGIDECORATORS": "1"}
    ),
    # Debian's uWSGI 2.0.21: Python threads only with --enable-threads
    "debian-enable-threads": Mode("debian-uwsgi", ["--master", "--enable-threads"]),
    "debian-enable-threads-osafterfork": Mode(
        "debian-uwsgi", ["--master", "--enable-threads", "--py-call-osafterfork"]
    ),
    "debian-no-threads": Mode("debian-uwsgi", ["--master"], threads=False),
    "debian-no-threads-osafterfork": Mode(
        "debian-uwsgi", ["--master", "--py-call-osafterfork"], threads=False
    ),
    "debian-no-threads-no-master": Mode("debian-uwsgi", [], threads=False),
    "gunicorn-preload": Mode("gunicorn", ["--preload"]),
    "gunicorn": Mode("gunicorn", [], preloads=False),
}


def _argv(mode: Mode, app_dir: Path, port: int) -> list[str]:
    if mode.server == "gunicorn":
        gunicorn = require(str(Path(sys.executable).parent / "gunicorn"), "gunicorn test extra")
        bind = f"127.0.0.1:{port}"
        return [gunicorn, "-w", "2", "-b", bind, *mode.options, "prefork_app:app"]
    if mode.server == "uwsgi":
        binary = [require(str(Path(sys.executable).parent / "uwsgi"), "uwsgi test extra")]
    else:
        require(DEBIAN_PLUGIN, "Debian's uwsgi-plugin-python3")
        binary = [require("/usr/bin/uwsgi", "Debian's uwsgi-core"), "--plugin", "python3"]
    argv = [
        *binary,
        "--http-socket",
        f"127.0.0.1:{port}",
        "--wsgi-file",
        str(app_dir / "prefork_app.py"),
        "--callable",
        "app",
        "--processes",
        "2",
        "--need-app",
        "--disable-logging",
        *mode.options,
    ]
    if mode.master:
        argv += ["--master-fifo", str(app_dir / "master.fifo")]
    return argv


def _stop_gracefully(mode: Mode, process: subprocess.Popen[bytes], app_dir: Path) -> float:
    """Ask for a graceful stop the way an operator would; seconds until the server is gone."""
    started = time.monotonic()
    if mode.server == "gunicorn":
        process.send_signal(signal.SIGTERM)
    elif mode.master:
        with (app_dir / "master.fifo").open("w") as fifo:
            fifo.write("q")  # uWSGI's graceful shutdown
    else:
        os.killpg(process.pid, signal.SIGINT)  # no master: every worker stops by itself
    try:
        process.wait(STOP_LIMIT * 4)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not stop within {STOP_LIMIT * 4} s")
    while group_alive(process.pid):  # a worker without master may outlive the first process
        if time.monotonic() - started > STOP_LIMIT * 4:
            pytest.fail("a worker did not stop")
        time.sleep(0.02)
    return time.monotonic() - started


def _wait_for_names(zipkin: RecordingZipkinServer, wanted: Counter[str], timeout: float) -> None:
    """Wait until the endpoint holds at least ``wanted`` spans of each name, or the deadline."""
    zipkin.wait_until(lambda spans: Counter(span["name"] for span in spans) >= wanted, timeout)


def _run(name: str, mode: Mode, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "prefork_app.py").write_text(PREFORK_APP)
    port = free_port()
    with RecordingZipkinServer() as zipkin:
        env = {
            **os.environ,
            "ZIPKIN_URL": f"zipkin+{zipkin.url}?interval={INTERVAL}",
            "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{tmp_path}",
            **mode.env,
        }
        log = tmp_path / "server.log"
        with process_group(_argv(mode, tmp_path, port), log, tmp_path, env) as process:
            wait_for_port(port)
            answered_by: Counter[str] = Counter()
            for _ in range(REQUESTS):
                url = f"http://127.0.0.1:{port}/"
                with urllib.request.urlopen(url, timeout=10) as response:
                    answered_by[response.read().decode()] += 1
            done = time.monotonic()
            wanted = Counter(request=REQUESTS)
            if mode.import_before_stop:
                wanted["import"] = 1 if mode.preloads else 2
            # Without threads nothing is expected before the stop: how much came is measured.
            _wait_for_names(zipkin, wanted, ARRIVAL_DEADLINE if mode.threads else 2.0)
            waited = time.monotonic() - done
            before_stop = Counter(span["name"] for span in zipkin.spans)
            stop_seconds = _stop_gracefully(mode, process, tmp_path)
        spans = list(zipkin.spans)
        invalid = list(zipkin.invalid)
    result = {
        "before_stop": before_stop,
        "waited": waited,
        "stop_seconds": stop_seconds,
        "spans": spans,
        "answered_by": answered_by,
        "log": log.read_text(errors="replace")[-3000:],
        "invalid": invalid,
    }
    row = {
        "requests before stop": f"{before_stop['request']}/{REQUESTS}",
        "import before stop": before_stop["import"],
        "arrival s": round(waited, 2),
        "stop s": round(stop_seconds, 2),
    }
    print(f"prefork matrix {name} ({mode.server} {' '.join(mode.options)}): {json.dumps(row)}")
    return result


@pytest.mark.parametrize("name", list(MODES))
def test_prefork_workers_report_within_the_interval_and_stop_gracefully(
    tmp_path: Path, name: str
) -> None:
    mode = MODES[name]
    run = _run(name, mode, tmp_path)
    names = Counter(span["name"] for span in run["spans"])
    context = run["log"]
    assert run["invalid"] == [], context
    # Delivery is at least once: a retried batch is kept once per span id by Zipkin.
    assert len({span["id"] for span in run["spans"]}) == len(run["spans"]), names
    requests = [span for span in run["spans"] if span["name"] == "request"]
    assert Counter(span["tags"]["pid"] for span in requests) == run["answered_by"], context
    if mode.threads:
        assert run["before_stop"]["request"] == REQUESTS, context
    if mode.preloads:
        assert names["import"] == 1, context
        if mode.threads and mode.import_before_stop:
            assert run["before_stop"]["import"] == 1, context
    else:  # each worker loads the application
        assert names["import"] == 2, context
    assert run["stop_seconds"] < STOP_LIMIT, context
    if mode.recycles:
        assert len(run["answered_by"]) > 2, run["answered_by"]
