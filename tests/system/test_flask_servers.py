"""Flask applications under real servers (gunicorn, werkzeug), reporting to a real Zipkin
endpoint: the extension and ``patch()``, in the server's worker processes."""

from __future__ import annotations

import http.client
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.servers import REPO_ROOT, BackgroundProcess, free_port, wait_for_port
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _environment(zipkin: RecordingZipkinServer, tracing: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'src'}",
        "TOMOGRAPH_SERVICE": "orders-env",
        "TOMOGRAPH_BACKENDS": f"zipkin+{zipkin.url}",
        "FLASK_TRACING": tracing,
    }


@pytest.fixture
def zipkin() -> Iterator[RecordingZipkinServer]:
    with RecordingZipkinServer() as server:
        yield server


def _exercise_and_check(port: int, zipkin: RecordingZipkinServer, service: str) -> None:
    assert _get(port, "/carts/42", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}) == (
        200,
        b"cart 42",
    )
    assert _get(port, "/fail")[0] == 500
    assert _get(port, "/stream") == (200, b"0\n1\n2\n")
    spans = zipkin.wait_until(
        lambda spans: sum(span.get("kind") == "SERVER" for span in spans) >= 3, 20
    )
    assert zipkin.invalid == []
    servers = {span["name"]: span for span in spans if span.get("kind") == "SERVER"}
    assert sorted(servers) == ["GET /carts/<int:cart_id>", "GET /fail", "GET /stream"]
    cart = servers["GET /carts/<int:cart_id>"]
    assert (cart["traceId"], cart["parentId"]) == (TRACE_ID, PARENT_ID)
    assert cart["localEndpoint"]["serviceName"] == service
    assert cart["tags"]["http.route"] == "/carts/<int:cart_id>"
    assert cart["tags"]["flask.endpoint"] == "carts.show_cart"
    assert cart["remoteEndpoint"]["ipv4"] == "127.0.0.1"
    failed = servers["GET /fail"]
    assert failed["tags"]["exception.type"] == "RuntimeError"
    assert failed["tags"]["http.status_code"] == "500"
    assert any("view bug" in note["value"] for note in failed.get("annotations", []))
    by_name: dict[str, Any] = {span["name"]: span for span in spans}
    assert by_name["load cart"]["parentId"] == cart["id"]
    stream_id = servers["GET /stream"]["id"]
    assert [by_name[f"chunk {index}"]["parentId"] for index in range(3)] == [stream_id] * 3


@pytest.mark.parametrize(
    ("tracing", "preload"),
    [("extension", False), ("extension", True), ("patch", False), ("patch", True)],
)
def test_gunicorn_workers_report_flask_spans(
    tmp_path: Path, zipkin: RecordingZipkinServer, tracing: str, preload: bool
) -> None:
    pytest.importorskip("gunicorn", reason="gunicorn WSGI server (test extra)")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2"]
    argv += ["--threads", "4"]
    if preload:
        argv.append("--preload")  # configured in the master, before the workers fork
    argv.append("tests.support.flask_app:app")
    env = _environment(zipkin, tracing)
    with BackgroundProcess(argv, tmp_path / "gunicorn.log", cwd=REPO_ROOT, env=env) as process:
        wait_for_port(port)
        try:
            _exercise_and_check(port, zipkin, "orders" if tracing == "extension" else "orders-env")
        except AssertionError:
            print(process.output())
            raise


def test_werkzeug_server_reports_flask_spans(tmp_path: Path, zipkin: RecordingZipkinServer) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "tests.support.flask_app", str(port)]
    env = _environment(zipkin, "patch")
    with BackgroundProcess(argv, tmp_path / "werkzeug.log", cwd=REPO_ROOT, env=env) as process:
        wait_for_port(port)
        try:
            _exercise_and_check(port, zipkin, "orders-env")
        except AssertionError:
            print(process.output())
            raise
