"""Trace context across a real process boundary: an HTTP client here, an http.server process.

For each propagation format the server process continues the trace: its server span has the
client span as parent and the same trace id, and the caller's baggage arrives.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tests.support.servers import REPO_ROOT, BackgroundProcess, free_port, wait_for_port

import tomograph
from tomograph.propagation import Propagator, baggage
from tomograph.reporting.memory import MemoryBackend

pytestmark = pytest.mark.integration

SERVER = Path(__file__).with_name("propagation_server.py")


@contextmanager
def traced_server(tmp_path: Path, formats: str, *args: str) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "TOMOGRAPH_PROPAGATION": formats, "PYTHONPATH": str(REPO_ROOT / "src")}
    argv = [sys.executable, str(SERVER), str(port), *args]
    with BackgroundProcess(argv, tmp_path / "server.log", env=env) as process:
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
def test_server_process_continues_the_clients_trace(
    fmt: str, tmp_path: Path, memory: MemoryBackend
) -> None:
    propagator = Propagator([fmt, "baggage"])
    with traced_server(tmp_path, f"{fmt},baggage") as port:
        with tomograph.span("call server", kind="client") as client:
            baggage.set_baggage("user", "alice smith")
            headers: dict[str, str] = {}
            propagator.inject(client, headers)
            result = call(port, headers)
    server, child = (
        next(s for s in result["spans"] if s["name"] == name)
        for name in ("GET /traced", "load rows")
    )
    assert server["trace_id"] == client.trace_id
    assert server["parent_id"] == client.span_id
    assert server["span_id"] != client.span_id and not server["shared"]
    assert server["kind"] == "SERVER"
    assert (child["trace_id"], child["parent_id"]) == (client.trace_id, server["span_id"])
    assert result["baggage"] == {"user": "alice smith"}


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
