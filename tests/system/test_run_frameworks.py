"""``tomograph run`` on framework applications: Django and Flask under gunicorn, a Celery worker.

The applications hold no tomograph code: the framework integrations come in through the
registry, patched as the program imports Django, Flask or Celery. Each run goes through real
processes (gunicorn with --preload and two workers, a Celery prefork worker and a producer
program, a redis broker) and counts what a real Zipkin endpoint received: one server span per
request named after the route, the outgoing call as its child, the task's consumer span
continuing the producer's trace.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.http_recorder import RecordingServer
from support.redis_server import redis_server
from support.servers import free_port, process_group, require, wait_for_port
from support.traced_programs import (
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
from tomograph.integrations import INTEGRATIONS

pytestmark = pytest.mark.integration

DJANGO_APP = """
import os

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.urls import path

import requests

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="not a secret: a test",
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    MIDDLEWARE=[],
)


def user(request, id):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pid = os.getpid()
    requests.get(f"{os.environ['DOWNSTREAM_URL']}/from/{pid}", timeout=10).raise_for_status()
    return HttpResponse(str(pid))


urlpatterns = [path("users/<int:id>", user)]

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
"""

FLASK_APP = """
import os

import requests
from flask import Flask

app = Flask(__name__)


@app.route("/users/<int:id>")
def user(id):
    pid = os.getpid()
    requests.get(f"{os.environ['DOWNSTREAM_URL']}/from/{pid}", timeout=10).raise_for_status()
    return str(pid)
"""

CELERY_APP = """
import os

import requests
from celery import Celery

app = Celery("proj", broker=os.environ["BROKER_URL"], backend=os.environ["BROKER_URL"])
app.conf.worker_hijack_root_logger = False


@app.task
def fetch(number):
    requests.get(f"{os.environ['DOWNSTREAM_URL']}/task/{number}", timeout=10)
    return os.getpid()
"""

PRODUCER = """
import json

from proj import fetch

results = [fetch.delay(number) for number in range(4)]
print(json.dumps([result.get(timeout=60) for result in results]))
"""


def test_every_integration_in_the_registry_patches_unpatches_and_says_so() -> None:
    for integration in INTEGRATIONS.values():
        module = importlib.import_module(integration.module)
        for function in ("patch", "unpatch", "patched"):
            assert callable(getattr(module, function, None)), (integration.name, function)


def by_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["id"]: span for span in spans}


@contextmanager
def serve_app(
    tmp_path: Path,
    module: str,
    source: str,
    callable_name: str,
) -> Iterator[tuple[list[dict[str, Any]], RecordingServer, set[str]]]:
    gunicorn = require(str(BIN / "gunicorn"), "gunicorn test extra")
    (tmp_path / f"{module}.py").write_text(source)
    port = free_port()
    with zipkin_and_downstream() as (zipkin, downstream):
        env = environment(TOMOGRAPH_BACKENDS=zipkin_url(zipkin), DOWNSTREAM_URL=downstream.url)
        argv = [TOMOGRAPH, "run", "--service", module, "--", gunicorn, "-w", "2", "--preload"]
        argv += ["-b", f"127.0.0.1:{port}", f"{module}:{callable_name}"]
        log = tmp_path / "server.log"
        with process_group(argv, log, tmp_path, env):
            wait_for_port(port)
            workers = serve_until_every_worker_answered(port, 2, "/users/7")
            count = len(downstream.requests)
            spans = zipkin.wait_until(
                lambda spans: sum(span.get("kind") == "SERVER" for span in spans) >= count,
                RUN_DEADLINE,
            )
            assert zipkin.invalid == [], log.read_text(errors="replace")[-3000:]
        yield spans, downstream, workers


def check_route_named_server_spans(
    spans: list[dict[str, Any]], downstream: RecordingServer, workers: set[str], route: str
) -> None:
    servers = [span for span in spans if span.get("kind") == "SERVER"]
    assert len(servers) == len(downstream.requests)
    assert {span["name"] for span in servers} == {f"GET {route}"}
    assert {span["tags"].get("http.route") for span in servers} == {route}
    spans_by_id = by_id(spans)
    calls = [span for span in spans if span.get("kind") == "CLIENT" and "http.url" in span["tags"]]
    assert len(calls) == len(servers)
    for call in calls:  # the outgoing request is a child of its request's server span
        assert spans_by_id[call["parentId"]]["kind"] == "SERVER"
    reported_by = {call["tags"]["http.url"].rsplit("/", 1)[1] for call in calls}
    assert reported_by == workers


def test_django_under_gunicorn_preload_names_spans_after_the_route(tmp_path: Path) -> None:
    pytest.importorskip("django")
    with serve_app(tmp_path, "djapp", DJANGO_APP, "application") as served:
        spans, downstream, workers = served
    check_route_named_server_spans(spans, downstream, workers, "/users/<int:id>")
    statements = [span for span in spans if span["tags"].get("db.system") == "sqlite"]
    assert len(statements) >= len(downstream.requests)
    spans_by_id = by_id(spans)
    assert all(spans_by_id[span["parentId"]]["kind"] == "SERVER" for span in statements)


def test_flask_under_gunicorn_preload_names_spans_after_the_route(tmp_path: Path) -> None:
    pytest.importorskip("flask")
    with serve_app(tmp_path, "flaskapp", FLASK_APP, "app") as served:
        spans, downstream, workers = served
    check_route_named_server_spans(spans, downstream, workers, "/users/<int:id>")


FLASK_DATA_APP = """
import os

import redis
import requests
import sqlalchemy
from flask import Flask

engine = sqlalchemy.create_engine(os.environ["DATABASE_URL"], pool_pre_ping=False)
with engine.begin() as connection:  # at import: in gunicorn's master under --preload
    connection.execute(sqlalchemy.text("CREATE TABLE IF NOT EXISTS visits (pid int)"))
engine.dispose()  # the workers open their own connections
cache = redis.Redis.from_url(os.environ["REDIS_URL"])
app = Flask(__name__)


@app.route("/users/<int:id>")
def user(id):
    pid = os.getpid()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("INSERT INTO visits VALUES (:pid)"), {"pid": pid})
        connection.execute(sqlalchemy.text("SELECT count(*) FROM visits")).scalar()
    cache.incr(f"visits:{pid}")
    requests.get(f"{os.environ['DOWNSTREAM_URL']}/from/{pid}", timeout=10).raise_for_status()
    return str(pid)
"""


def test_flask_with_sqlalchemy_psycopg_redis_and_requests_makes_one_span_per_operation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every layer patched at once (SQLAlchemy over psycopg, redis, requests over urllib3 over
    # http.client), gunicorn --preload: one span per statement, command and call, all children
    # of their request's span, in every worker.
    pytest.importorskip("flask")
    from support.postgres import postgres_cluster

    with postgres_cluster() as database, redis_server() as cache:
        monkeypatch.setenv("DATABASE_URL", database)
        monkeypatch.setenv("REDIS_URL", cache)
        with serve_app(tmp_path, "dataapp", FLASK_DATA_APP, "app") as served:
            spans, downstream, workers = served
    check_route_named_server_spans(spans, downstream, workers, "/users/<int:id>")
    servers = {span["id"]: span for span in spans if span.get("kind") == "SERVER"}
    children: dict[str, list[str]] = {server: [] for server in servers}
    for span in spans:
        if span.get("parentId") in children:
            children[span["parentId"]].append(span["name"])
    expected = ["GET", "INCRBY", "INSERT visits", "SELECT visits"]  # redis-py sends INCRBY
    assert {tuple(sorted(names)) for names in children.values()} == {tuple(expected)}, children
    statements = [span for span in spans if span["tags"].get("db.system") == "postgresql"]
    in_requests = [span for span in statements if span.get("parentId") in servers]
    assert len(in_requests) == 2 * len(servers)  # psycopg below SQLAlchemy adds none
    # Outside requests: the CREATE TABLE, and the queries SQLAlchemy's dialect sends as it
    # first connects (psycopg's, under no SQLAlchemy statement); never a request's statement.
    assert not {"INSERT visits", "SELECT visits"} & {
        span["name"] for span in statements if span not in in_requests
    }


def test_celery_tasks_continue_the_producers_trace_in_prefork_children(tmp_path: Path) -> None:
    pytest.importorskip("celery")
    (tmp_path / "proj.py").write_text(CELERY_APP)
    (tmp_path / "producer.py").write_text(PRODUCER)
    with redis_server() as broker, zipkin_and_downstream() as (zipkin, downstream):
        env = environment(
            TOMOGRAPH_BACKENDS=zipkin_url(zipkin),
            DOWNSTREAM_URL=downstream.url,
            BROKER_URL=broker,
        )
        argv = [TOMOGRAPH, "run", "--service", "worker", "--", str(BIN / "celery"), "-A"]
        argv += ["proj", "worker", "--pool", "prefork", "--concurrency", "2"]
        log = tmp_path / "worker.log"
        with process_group(argv, log, tmp_path, env):
            sent = run(["--service", "producer", "--", PYTHON, "producer.py"], tmp_path, env)
            assert sent.returncode == 0, sent.stderr + log.read_text(errors="replace")[-3000:]
            pids = set(json.loads(sent.stdout))
            spans = zipkin.wait_until(
                lambda spans: sum(span.get("kind") == "CONSUMER" for span in spans) >= 4,
                RUN_DEADLINE,
            )
    context = log.read_text(errors="replace")[-3000:]
    producers = [span for span in spans if span.get("kind") == "PRODUCER"]
    consumers = [span for span in spans if span.get("kind") == "CONSUMER"]
    assert len(producers) == len(consumers) == 4, context
    assert all("proj.fetch" in json.dumps(span) for span in consumers), context
    producer_by_id = by_id(producers)
    for consumer in consumers:  # each task continues the trace of the call that sent it
        assert producer_by_id[consumer["parentId"]]["traceId"] == consumer["traceId"]
    calls = [span for span in spans if span.get("kind") == "CLIENT" and "http.url" in span["tags"]]
    consumer_ids = {span["id"] for span in consumers}
    assert len(calls) == 4 and all(call["parentId"] in consumer_ids for call in calls)
    assert pids  # the tasks ran in the pool's children
    # redis is patched too, but the broker's own commands (kombu polling, acks, its scripts)
    # outside any span make no traces: every redis span belongs to a task's trace.
    redis_spans = [span for span in spans if span.get("tags", {}).get("db.system") == "redis"]
    assert all("parentId" in span for span in redis_spans), redis_spans
    assert zipkin.invalid == []
