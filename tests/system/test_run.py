"""``tomograph run``: programs traced without a line of tomograph in them, as real subprocesses.

Each test runs a program under ``tomograph run`` that never imports tomograph, with its spans
sent to a real Zipkin endpoint (a recording server), and checks what arrived: one client span
per HTTP request of each client library, one per SQL statement. Around it: the user's own
``sitecustomize`` and ``PYTHONPATH`` still work, the exit status, pid and signals are the
program's own, ``TOMOGRAPH_INSTRUMENT``/``TOMOGRAPH_DISABLE`` choose, a broken integration leaves
the program running, and the forked workers of gunicorn --preload, uWSGI (default fork and
--lazy-apps) and Celery's prefork pool all report.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.http_recorder import RecordingServer
from support.redis_server import redis_server
from support.servers import free_port, process_group, require, wait_for_port
from support.traced_programs import (
    ARRIVAL_DEADLINE,
    BIN,
    PYTHON,
    RUN_DEADLINE,
    TOMOGRAPH,
    environment,
    run,
    serve_until_every_worker_answered,
    zipkin_and_downstream,
    zipkin_url,
)
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

#: A program using four HTTP clients and SQLAlchemy, and nothing of tomograph.
CLIENTS_APP = """
import json
import os
import sys
import urllib.request

import httpx
import requests
import sqlalchemy
import urllib3

base = os.environ["DOWNSTREAM_URL"]
requests.get(f"{base}/requests").raise_for_status()
urllib3.PoolManager().request("GET", f"{base}/urllib3")
httpx.get(f"{base}/httpx").raise_for_status()
urllib.request.urlopen(f"{base}/urllib").read()
engine = sqlalchemy.create_engine("sqlite://")
with engine.connect() as connection:
    connection.execute(sqlalchemy.text("SELECT 1"))
print(json.dumps({"pid": os.getpid(), "tomograph imported": "tomograph" in sys.modules}))
"""

#: A WSGI application that calls a downstream service for each request.
WSGI_APP = """
import os

import requests


def app(environ, start_response):
    pid = os.getpid()
    requests.get(f"{os.environ['DOWNSTREAM_URL']}/from/{pid}", timeout=10).raise_for_status()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(pid).encode()]
"""

#: A Celery application whose task calls a downstream service.
CELERY_APP = """
import os
import time

import requests
from celery import Celery

app = Celery("proj", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.worker_hijack_root_logger = False
app.conf.worker_prefetch_multiplier = 1


@app.task
def fetch(number):
    time.sleep(0.1)  # the work: keeps one child busy so that the other takes the next task
    pid = os.getpid()
    requests.get(f"{os.environ['DOWNSTREAM_URL']}/task/{number}/{pid}", timeout=10)
    return pid
"""


def paths(spans: list[dict[str, Any]]) -> list[str]:
    """The path of each HTTP client span's URL, sorted."""
    return sorted(
        span["tags"]["http.url"].split("/", 3)[3]
        for span in spans
        if span.get("kind") == "CLIENT" and "http.url" in span.get("tags", {})
    )


def sql(spans: list[dict[str, Any]]) -> list[str]:
    return [span["name"] for span in spans if "db.system" in span.get("tags", {})]


def run_clients_app(tmp_path: Path, **variables: str) -> tuple[Any, list[dict[str, Any]], str]:
    """Run CLIENTS_APP under ``tomograph run``; what it printed, the spans that arrived (all
    sent by its exit) and its stderr."""
    (tmp_path / "app.py").write_text(CLIENTS_APP)
    with zipkin_and_downstream() as (zipkin, downstream):
        env = environment(
            TOMOGRAPH_BACKENDS=zipkin_url(zipkin), DOWNSTREAM_URL=downstream.url, **variables
        )
        result = run(["--service", "clients", "--", PYTHON, "app.py"], tmp_path, env)
        assert result.returncode == 0, result.stderr
        assert len(downstream.requests) == 4
        spans = list(zipkin.spans)  # the program flushed them on its way out
        assert zipkin.invalid == []
    return json.loads(result.stdout), spans, result.stderr


def test_every_http_client_and_sqlalchemy_are_traced_without_code_changes(
    tmp_path: Path,
) -> None:
    printed, spans, stderr = run_clients_app(tmp_path)
    assert printed["tomograph imported"] is True  # by the bootstrap, not by the program
    # One span per request, from the outermost library (requests over urllib3 over http.client)
    assert paths(spans) == ["httpx", "requests", "urllib", "urllib3"]
    assert sql(spans) == ["SELECT"]
    assert {span["localEndpoint"]["serviceName"] for span in spans} == {"clients"}
    assert "tomograph" not in stderr


def test_the_program_keeps_its_pid_exit_status_and_signals(tmp_path: Path) -> None:
    env = environment(TOMOGRAPH_BACKENDS="memory://")
    status = run(["--", PYTHON, "-c", "raise SystemExit(7)"], tmp_path, env)
    assert status.returncode == 7
    program = "import os, sys, time; print(os.getpid(), flush=True); time.sleep(60)"
    process = subprocess.Popen(
        [TOMOGRAPH, "run", PYTHON, "-c", program], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        assert int(process.stdout.readline()) == process.pid  # exec'd: the same process
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()


def test_the_users_sitecustomize_and_pythonpath_still_work(tmp_path: Path) -> None:
    user_path = tmp_path / "user"
    user_path.mkdir()
    (user_path / "sitecustomize.py").write_text(
        "import os\nos.environ['USER_SITECUSTOMIZE'] = __file__\n"
    )
    (user_path / "user_lib.py").write_text("NAME = 'user lib'\n")
    program = (
        "import json, os, sys, sitecustomize, user_lib\n"
        "import tomograph.integrations.requests as r\n"
        "import requests\n"
        "print(json.dumps([os.environ.get('USER_SITECUSTOMIZE'), sitecustomize.__file__,"
        " user_lib.NAME, sys.path.index(os.environ['USER_PATH']) >= 0, r.patched()]))\n"
    )
    env = environment(
        TOMOGRAPH_BACKENDS="memory://", PYTHONPATH=str(user_path), USER_PATH=str(user_path)
    )
    result = run(["--", PYTHON, "-c", program], tmp_path, env)
    assert result.returncode == 0, result.stderr
    expected = str(user_path / "sitecustomize.py")
    assert json.loads(result.stdout) == [expected, expected, "user lib", True, True]


def test_a_failing_user_sitecustomize_still_reports_as_python_does_and_tracing_starts(
    tmp_path: Path,
) -> None:
    user_path = tmp_path / "user"
    user_path.mkdir()
    (user_path / "sitecustomize.py").write_text("raise ValueError('user bug')\n")
    program = "import requests, tomograph.integrations.requests as r; print(r.patched())"
    env = environment(TOMOGRAPH_BACKENDS="memory://", PYTHONPATH=str(user_path))
    result = run(["--", PYTHON, "-c", program], tmp_path, env)
    assert (result.returncode, result.stdout) == (0, "True\n")
    assert "Error in sitecustomize" in result.stderr
    assert "user bug" in result.stderr


def test_tomograph_instrument_chooses_the_integrations(tmp_path: Path) -> None:
    _, spans, _ = run_clients_app(tmp_path, TOMOGRAPH_INSTRUMENT="requests,sqlalchemy")
    assert paths(spans) == ["requests"]
    assert sql(spans) == ["SELECT"]


def test_tomograph_disable_leaves_integrations_out(tmp_path: Path) -> None:
    _, spans, _ = run_clients_app(tmp_path, TOMOGRAPH_DISABLE="httpx, SQLAlchemy")
    assert paths(spans) == ["requests", "urllib", "urllib3"]
    assert sql(spans) == []


def test_unknown_names_in_the_environment_are_a_warning_naming_the_known_ones(
    tmp_path: Path,
) -> None:
    _, spans, stderr = run_clients_app(tmp_path, TOMOGRAPH_DISABLE="requets")
    assert "tomograph: unknown integration requets (known: requests, urllib3" in stderr
    assert paths(spans) == ["httpx", "requests", "urllib", "urllib3"]


def test_a_broken_integration_leaves_the_program_running_and_says_so_once(
    tmp_path: Path,
) -> None:
    # The user's sitecustomize runs before tracing starts: it breaks two integrations.
    user_path = tmp_path / "user"
    user_path.mkdir()
    (user_path / "sitecustomize.py").write_text(
        "import sys, types\n"
        "broken = types.ModuleType('tomograph.integrations.httpx')\n"
        "def patch():\n"
        "    raise RuntimeError('integration bug')\n"
        "broken.patch = patch\n"
        "sys.modules['tomograph.integrations.httpx'] = broken\n"
        "sys.modules['tomograph.integrations.sqlalchemy'] = None  # cannot be imported\n"
    )
    _, spans, stderr = run_clients_app(tmp_path, PYTHONPATH=str(user_path))
    assert paths(spans) == ["requests", "urllib", "urllib3"]
    assert sql(spans) == []
    assert stderr.count("httpx is not traced") == 1
    assert "integration bug" in stderr
    assert stderr.count("sqlalchemy is not traced: cannot import") == 1


def test_a_python_without_tomograph_runs_untraced_with_one_line(tmp_path: Path) -> None:
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    if sys.prefix == sys.base_prefix or not base_python.exists():
        pytest.skip("needs the interpreter this virtualenv was made from")
    env = environment(TOMOGRAPH_BACKENDS="memory://")
    result = run(["--", str(base_python), "-c", "print('ran')"], tmp_path, env)
    assert (result.returncode, result.stdout) == (0, "ran\n")
    assert result.stderr.count("runs untraced") == 1


def test_command_line_mistakes_are_clear(tmp_path: Path) -> None:
    env = environment(TOMOGRAPH_BACKENDS="memory://")
    unknown = run(["--instrument", "flask,flsk", "--", PYTHON, "-c", "pass"], tmp_path, env)
    assert unknown.returncode == 2
    assert "--instrument: unknown integration flsk (known: requests" in unknown.stderr
    missing = run([], tmp_path, env)
    assert missing.returncode == 2
    assert "missing the command to run" in missing.stderr
    not_found = run(["--", "tomograph-no-such-command"], tmp_path, env)
    assert not_found.returncode == 127
    assert "command not found: tomograph-no-such-command" in not_found.stderr
    no_backends = run(["--", PYTHON, "-c", "pass"], tmp_path, environment())
    assert no_backends.returncode == 0
    assert "TOMOGRAPH_BACKENDS is not set" in no_backends.stderr


def test_options_set_the_variables_the_program_reads(tmp_path: Path) -> None:
    program = (
        "import json, os\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('TOMOGRAPH_')}))"
    )
    options = [
        "--service=shop",
        "--backends=memory://",
        "--sample-rate=0.5",
        "--propagation=w3c",
        "--instrument=flask",
        "--disable=redis",
    ]
    result = run([*options, PYTHON, "-c", program], tmp_path, environment())
    assert json.loads(result.stdout) == {
        "TOMOGRAPH_SERVICE": "shop",
        "TOMOGRAPH_BACKENDS": "memory://",
        "TOMOGRAPH_SAMPLE_RATE": "0.5",
        "TOMOGRAPH_PROPAGATION": "w3c",
        "TOMOGRAPH_INSTRUMENT": "flask",
        "TOMOGRAPH_DISABLE": "redis",
    }


# -- pre-fork servers and workers -------------------------------------------------------------


def check_every_worker_reported(
    zipkin: RecordingZipkinServer, downstream: RecordingServer, workers: set[str], log: Path
) -> None:
    """Every request a worker made downstream arrives as that worker's client span."""
    made = sorted(request.path.lstrip("/") for request in downstream.requests)
    spans = zipkin.wait_until(lambda spans: len(paths(spans)) >= len(made), ARRIVAL_DEADLINE)
    context = log.read_text(errors="replace")[-3000:]
    assert paths(spans) == made, context
    assert {path.split("/")[1] for path in made} == workers, context
    assert zipkin.invalid == []


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_workers_all_report(tmp_path: Path, preload: bool) -> None:
    gunicorn = require(str(BIN / "gunicorn"), "gunicorn test extra")
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    port = free_port()
    with zipkin_and_downstream() as (zipkin, downstream):
        env = environment(TOMOGRAPH_BACKENDS=zipkin_url(zipkin), DOWNSTREAM_URL=downstream.url)
        argv = [TOMOGRAPH, "run", "--", gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}"]
        argv += ["--preload", "wsgi_app:app"] if preload else ["wsgi_app:app"]
        log = tmp_path / "server.log"
        with process_group(argv, log, tmp_path, env):
            wait_for_port(port)
            workers = serve_until_every_worker_answered(port, 2)
            check_every_worker_reported(zipkin, downstream, workers, log)
    print(f"run gunicorn preload={preload}: {len(downstream.requests)} spans from 2 workers")


@pytest.mark.parametrize("lazy_apps", [False, True], ids=["default-fork", "lazy-apps"])
def test_uwsgi_workers_all_report(tmp_path: Path, lazy_apps: bool) -> None:
    uwsgi = require(str(BIN / "uwsgi"), "uwsgi test extra")
    (tmp_path / "wsgi_app.py").write_text(WSGI_APP)
    port = free_port()
    with zipkin_and_downstream() as (zipkin, downstream):
        env = environment(TOMOGRAPH_BACKENDS=zipkin_url(zipkin), DOWNSTREAM_URL=downstream.url)
        argv = [TOMOGRAPH, "run", "--", uwsgi, "--master", "--processes", "2", "--need-app"]
        argv += ["--http-socket", f"127.0.0.1:{port}", "--disable-logging"]
        argv += ["--wsgi-file", str(tmp_path / "wsgi_app.py"), "--callable", "app"]
        argv += ["--lazy-apps"] if lazy_apps else []
        log = tmp_path / "server.log"
        with process_group(argv, log, tmp_path, env):
            wait_for_port(port)
            workers = serve_until_every_worker_answered(port, 2)
            check_every_worker_reported(zipkin, downstream, workers, log)


def test_celery_prefork_children_all_report(tmp_path: Path) -> None:
    celery = pytest.importorskip("celery")
    (tmp_path / "proj.py").write_text(CELERY_APP)
    with redis_server() as broker, zipkin_and_downstream() as (zipkin, downstream):
        env = environment(
            TOMOGRAPH_BACKENDS=zipkin_url(zipkin),
            DOWNSTREAM_URL=downstream.url,
            BROKER_URL=broker,
        )
        argv = [TOMOGRAPH, "run", "--", str(BIN / "celery"), "-A", "proj", "worker"]
        argv += ["--pool", "prefork", "--concurrency", "2", "-O", "fair", "--loglevel", "WARNING"]
        log = tmp_path / "worker.log"
        client = celery.Celery("client", broker=broker, backend=broker)
        try:
            with process_group(argv, log, tmp_path, env):
                results = [client.send_task("proj.fetch", args=[n]) for n in range(12)]
                pids = {str(result.get(timeout=RUN_DEADLINE)) for result in results}
                check_every_worker_reported_by_task(zipkin, downstream, pids, log)
        finally:
            client.close()
    print(f"run celery prefork: 12 tasks in {len(pids)} children, every span arrived")


def check_every_worker_reported_by_task(
    zipkin: RecordingZipkinServer, downstream: RecordingServer, pids: set[str], log: Path
) -> None:
    made = sorted(request.path.lstrip("/") for request in downstream.requests)
    spans = zipkin.wait_until(lambda spans: len(paths(spans)) >= len(made), ARRIVAL_DEADLINE)
    context = log.read_text(errors="replace")[-3000:]
    assert len(made) == 12, context
    assert paths(spans) == made, context
    assert {path.split("/")[2] for path in made} == pids, context
    assert len(pids) == 2, context  # both pool children ran tasks, and both reported
    assert zipkin.invalid == []


def test_the_distributions_sitecustomize_still_runs(tmp_path: Path) -> None:
    # Debian's Python ships /usr/lib/python3.X/sitecustomize.py; tomograph's hides it.
    python = require("/usr/bin/python3", "Debian's python3")
    program = "import sitecustomize, sys; print(sitecustomize.__file__, sys.version_info[1])"
    env = environment(TOMOGRAPH_BACKENDS="memory://")
    result = run(["--", python, "-c", program], tmp_path, env)
    path, minor = result.stdout.split()
    assert path == f"/usr/lib/python3.{minor}/sitecustomize.py", result.stderr


def test_a_program_that_makes_no_span_starts_no_thread_and_no_backend(tmp_path: Path) -> None:
    program = (
        "import sys, threading, requests\n"
        "print(threading.active_count(), 'tomograph.reporting.zipkin' in sys.modules)\n"
    )
    env = environment(TOMOGRAPH_BACKENDS="zipkin+http://127.0.0.1:9")
    result = run(["--", PYTHON, "-c", program], tmp_path, env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "1 False\n", "")
