"""A Django project under gunicorn (WSGI) and uvicorn (ASGI) reports its requests and SQL
statements to a real Zipkin endpoint: with the middleware in its settings, with the app in
INSTALLED_APPS, with patch() only, and under tomograph's own WSGI or ASGI middleware (one span
per request all the same), on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.postgres import postgres_cluster
from support.servers import REPO_ROOT, free_port, process_group, require, wait_for_port
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

#: Deadline for spans to arrive (the transport sends every 0.1 s here); never an expectation.
ARRIVAL_DEADLINE = 20.0

#: Each request and the name its server span must have.
REQUESTS = {
    "/users/7": "GET /users/<int:user_id>",
    "/api/v1/users/8": "GET /api/v1/users/<int:user_id>",
    "/sql/{alias}": "GET /sql/<str:alias>",
    "/boom": "GET /boom",
    "/stream": "GET /stream",
    "/no/such/page": "GET",
}
#: Served only under ASGI: an async view, and an async streamed body.
ASYNC_REQUESTS = {
    "/async/9": "GET /async/<int:user_id>",
    "/stream-async": "GET /stream-async",
}


@pytest.fixture(scope="module")
def postgres_port() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url.rsplit(":", 1)[1].split("/", 1)[0]


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def server_argv(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        uvicorn = require(str(Path(sys.executable).parent / "uvicorn"), "uvicorn test extra")
        application = "tests.integrations.django_site.asgi:application"
        return [uvicorn, "--host", "127.0.0.1", "--port", str(port), "--no-access-log", application]
    gunicorn = require(str(Path(sys.executable).parent / "gunicorn"), "gunicorn test extra")
    application = "tests.integrations.django_site.wsgi:application"
    preload = ["--preload"] if server == "gunicorn-preload" else []  # patched before the fork
    return [gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", *preload, application]


def run_site(
    tmp_path: Path, server: str, setup: str, alias: str, extra_env: dict[str, str]
) -> list[dict[str, Any]]:
    requests = {**REQUESTS, **(ASYNC_REQUESTS if server == "uvicorn" else {})}
    port = free_port()
    with RecordingZipkinServer() as zipkin:
        env = {
            **os.environ,
            "ZIPKIN_URL": f"zipkin+{zipkin.url}?interval=0.1",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]),
            "DJANGO_SETTINGS_MODULE": "tests.integrations.django_site.settings",
            "TOMOGRAPH_DJANGO_SETUP": setup,
            "SQLITE_PATH": str(tmp_path / "site.db"),
            **extra_env,
        }
        log = tmp_path / "server.log"
        with process_group(server_argv(server, port), log, REPO_ROOT, env):
            wait_for_port(port)
            statuses = {
                path: get(f"http://127.0.0.1:{port}{path.format(alias=alias)}") for path in requests
            }
            expected = dict.fromkeys(requests, 200)
            expected.update({"/boom": 500, "/no/such/page": 404})
            assert statuses == expected, log.read_text()

            def arrived(spans: list[dict[str, Any]]) -> bool:
                servers = [span for span in spans if span.get("kind") == "SERVER"]
                return len(servers) >= len(requests) and any(
                    span.get("name") == "SELECT items" for span in spans
                )

            spans = zipkin.wait_until(arrived, ARRIVAL_DEADLINE)
        assert zipkin.invalid == []
    return spans


@pytest.mark.parametrize(
    ("server", "setup", "alias", "stacked"),
    [
        ("gunicorn", "middleware", "default", False),
        ("gunicorn", "app", "postgres", False),
        ("gunicorn-preload", "none", "default", False),  # patch() in wsgi.py, as `tomograph run`
        ("gunicorn", "middleware", "postgres", True),
        ("uvicorn", "app", "default", False),
        ("uvicorn", "none", "postgres", True),
    ],
)
def test_a_django_project_under_a_real_server_reports_one_span_per_request_and_its_sql(
    tmp_path: Path,
    server: str,
    setup: str,
    alias: str,
    stacked: bool,
    request: pytest.FixtureRequest,
) -> None:
    extra_env = {f"TOMOGRAPH_{'ASGI' if server == 'uvicorn' else 'WSGI'}_MIDDLEWARE": "1"}
    if not stacked:
        extra_env = {}
    if alias == "postgres":
        extra_env["DATABASE_PORT"] = request.getfixturevalue("postgres_port")
    spans = run_site(tmp_path, server, setup, alias, extra_env)
    servers = [span for span in spans if span.get("kind") == "SERVER"]
    names = {**REQUESTS, **(ASYNC_REQUESTS if server == "uvicorn" else {})}.values()
    assert sorted(span["name"] for span in servers) == sorted(names)
    by_name = {span["name"]: span for span in servers}
    assert by_name["GET /boom"]["tags"]["exception.type"] == "ViewFailed"
    assert by_name["GET /boom"]["tags"]["http.status_code"] == "500"
    assert "error" not in by_name["GET"]["tags"]  # the 404

    sql_request = by_name["GET /sql/<str:alias>"]
    statements = [span for span in spans if span.get("parentId") == sql_request["id"]]
    assert {span["name"] for span in statements} >= {"INSERT items", "SELECT items"}
    assert all(span["kind"] == "CLIENT" for span in statements)
    system = "postgresql" if alias == "postgres" else "sqlite"
    assert {span["tags"]["db.system"] for span in statements} == {system}
    assert "secret-name" not in repr(spans)

    streams = [
        by_name[name]["id"] for name in ("GET /stream", "GET /stream-async") if name in by_name
    ]
    chunks = [span for span in spans if span["name"].startswith("chunk-")]
    assert len(chunks) == 3 * len(streams)
    assert {span.get("parentId") for span in chunks} == set(streams)
    load_user = [span for span in spans if span["name"] == "load-user"]
    views = [
        "GET /users/<int:user_id>",
        "GET /api/v1/users/<int:user_id>",
        "GET /async/<int:user_id>",
    ]
    assert {span.get("parentId") for span in load_user} == {
        by_name[name]["id"] for name in views if name in by_name
    }
