"""Trace context across real process boundaries: an HTTP client process calls an http.server
process on 127.0.0.1.

For each propagation format the server process continues the client process's trace: its server
span has the client span as parent and the same trace id, and the caller's baggage arrives.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.servers import REPO_ROOT, BackgroundProcess, free_port, wait_for_port

import tomograph
from tomograph.propagation import Propagator
from tomograph.reporting.memory import MemoryBackend

pytestmark = pytest.mark.integration

SERVER = Path(__file__).with_name("propagation_server.py")
CLIENT = Path(__file__).with_name("propagation_client.py")
#: The headers each format writes (besides baggage).
HEADERS = {
    "w3c": {"traceparent", "tracestate"},
    "b3": {"x-b3-traceid", "x-b3-spanid", "x-b3-sampled"},
    "b3single": {"b3"},
    "xtraceinfo": {"x-trace-info"},
    "jaeger": {"uber-trace-id"},
}


def environment(formats: str) -> dict[str, str]:
    return {**os.environ, "TOMOGRAPH_PROPAGATION": formats, "PYTHONPATH": str(REPO_ROOT / "src")}


@contextmanager
def traced_server(tmp_path: Path, formats: str, *args: str) -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, str(SERVER), str(port), *args]
    with BackgroundProcess(argv, tmp_path / "server.log", env=environment(formats)) as process:
        try:
            wait_for_port(port)
        except TimeoutError:
            pytest.fail(f"server did not start:\n{process.output()}")
        yield port


def call(port: int, headers: dict[str, str]) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/traced", headers=headers)
        response = connection.getresponse()
        assert response.status == 200
        result: dict[str, Any] = json.loads(response.read())
        return result
    finally:
        connection.close()


@pytest.mark.parametrize("fmt", ["w3c", "b3", "b3single", "xtraceinfo", "jaeger"])
def test_server_process_continues_the_client_process_trace(fmt: str, tmp_path: Path) -> None:
    formats = f"{fmt},baggage"
    with traced_server(tmp_path, formats) as port:
        done = subprocess.run(
            [sys.executable, str(CLIENT), str(port)],
            env=environment(formats),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    client, answer = result["client"], result["server"]
    server, child = (
        next(s for s in answer["spans"] if s["name"] == name)
        for name in ("GET /traced", "load rows")
    )
    assert server["trace_id"] == client["trace_id"]
    assert server["parent_id"] == client["span_id"]
    assert server["span_id"] != client["span_id"] and not server["shared"]
    assert server["kind"] == "SERVER"
    assert (child["trace_id"], child["parent_id"]) == (client["trace_id"], server["span_id"])
    assert answer["baggage"] == {"user": "alice smith"}
    sent = {name.lower() for name in client["sent"]}
    assert sent == {*HEADERS[fmt], "baggage"}


def test_server_process_obeys_a_b3_deny(tmp_path: Path) -> None:
    with traced_server(tmp_path, "b3") as port:
        assert call(port, {"b3": "0"})["spans"] == []


def test_shared_span_server_reports_under_the_clients_span_id(
    tmp_path: Path, memory: MemoryBackend
) -> None:
    with traced_server(tmp_path, "b3", "join") as port:
        with tomograph.span("request") as root, tomograph.span("call", kind="client") as client:
            headers: dict[str, str] = {}
            Propagator(["b3"]).inject(client, headers)
            result = call(port, headers)
    server = next(s for s in result["spans"] if s["name"] == "GET /traced")
    assert server["span_id"] == client.span_id and server["shared"]
    assert server["parent_id"] == root.span_id
