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
    "jaeger": {"uber-trace-id", "uberctx-user"},  # Jaeger carries the baggage too
}


def environment(formats: str) -> dict[str, str]:
    return {**os.environ, "TOMOGRAPH_PROPAGATION": formats, "PYTHONPATH": str(REPO_ROOT / "src")}


@contextmanager
def traced_server(tmp_path: Path, formats: str, *args: str) -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, str(SERVER), str(port), *args]
    tmp_path.mkdir(parents=True, exist_ok=True)
    with BackgroundProcess(argv, tmp_path / "server.log", env=environment(formats)) as process:
        try:
            wait_for_port(port)
        except TimeoutError:
            pytest.fail(f"server did not start:\n{process.output()}")
        yield port


def call(
    port: int, headers: dict[str, str] | list[tuple[str, str]], path: str = "/traced"
) -> dict[str, Any]:
    """GET ``path``, sending ``headers`` as given: names in their case, repeated ones repeated."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path)
        for name, value in headers.items() if isinstance(headers, dict) else headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 200
        result: dict[str, Any] = json.loads(response.read())
        return result
    finally:
        connection.close()


def run_client(port: int, formats: str) -> dict[str, Any]:
    """Runs the traced client process against the server on ``port``; what it printed."""
    done = subprocess.run(
        [sys.executable, str(CLIENT), str(port)],
        env=environment(formats),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("fmt", ["w3c", "b3", "b3single", "xtraceinfo", "jaeger"])
def test_server_process_continues_the_client_process_trace(fmt: str, tmp_path: Path) -> None:
    formats = f"{fmt},baggage"
    with traced_server(tmp_path, formats) as port:
        result = run_client(port, formats)
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


# -- Jaeger baggage across a real hop ---------------------------------------------------------

JAEGER_TRACE = "463ac35c9f6413ad48485a3953bb6124:a2fb4a1d1a96d312:0:1"


def jaeger_headers(items: dict[str, str]) -> dict[str, str]:
    """What a Jaeger peer sends: OpenTelemetry's Jaeger propagator, with ``items`` as baggage."""
    from opentelemetry import baggage as otel_baggage
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.propagators.jaeger import JaegerPropagator
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span_context = SpanContext(
        0x463AC35C9F6413AD48485A3953BB6124, 0xA2FB4A1D1A96D312, True, TraceFlags(1)
    )
    context = trace.set_span_in_context(NonRecordingSpan(span_context), Context())
    for key, value in items.items():
        context = otel_baggage.set_baggage(key, value, context)
    headers: dict[str, str] = {}
    JaegerPropagator().inject(headers, context)
    return headers


def test_jaeger_baggage_crosses_a_tomograph_hop(tmp_path: Path) -> None:
    # A Jaeger peer calls service A, which calls B. A has the default formats: it reads Jaeger
    # (and W3C, B3, ...) and writes W3C, baggage and B3, not Jaeger.
    sent = jaeger_headers({"user": "Ann Lee", "plan": "gold+1", "city": "München"})
    assert {"uberctx-user", "uberctx-plan", "uberctx-city"} <= set(sent)
    with (
        traced_server(tmp_path / "b", "w3c,baggage") as downstream,
        traced_server(tmp_path / "a", "") as hop,
    ):
        answer = call(hop, sent, f"/traced?forward={downstream}")
    expected = {"user": "Ann Lee", "plan": "gold+1", "city": "München"}
    assert answer["baggage"] == expected
    assert answer["downstream"]["baggage"] == expected
    [server] = [s for s in answer["downstream"]["spans"] if s["name"] == "GET /traced"]
    assert server["trace_id"] == 0x463AC35C9F6413AD48485A3953BB6124


def test_with_jaeger_only_baggage_travels_as_uberctx_headers(tmp_path: Path) -> None:
    from opentelemetry import baggage as otel_baggage
    from opentelemetry.propagators.jaeger import JaegerPropagator

    with traced_server(tmp_path, "jaeger") as port:
        result = run_client(port, "jaeger")
    assert result["server"]["baggage"] == {"user": "alice smith"}
    sent = {name.lower(): value for name, value in result["client"]["sent"].items()}
    assert set(sent) == {"uber-trace-id", "uberctx-user"}
    # A Jaeger peer reads the same baggage.
    assert otel_baggage.get_all(JaegerPropagator().extract(sent)) == {"user": "alice smith"}


def test_go_and_java_jaeger_clients_plus_encoded_spaces_are_read(tmp_path: Path) -> None:
    # Jaeger's Go and Java clients write a space as "+" (QueryEscape, URLEncoder), "+" as %2B.
    headers = [
        ("Uber-Trace-Id", JAEGER_TRACE),
        ("Uberctx-User", "Ann+Lee"),
        ("UBERCTX-PLAN", "gold%2B1"),
        ("uberctx-tenant-id", "acme%20corp"),
    ]
    with traced_server(tmp_path, "w3c,baggage,jaeger") as port:
        answer = call(port, headers)
    assert answer["baggage"] == {"user": "Ann Lee", "plan": "gold+1", "tenant-id": "acme corp"}


def test_w3c_and_jaeger_baggage_make_one_baggage(tmp_path: Path) -> None:
    headers = [
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ("baggage", "user=alice,plan=gold;ttl=60"),
        ("uber-trace-id", JAEGER_TRACE),
        ("uberctx-user", "mallory"),  # the same key in both: W3C's value wins
        ("uberctx-region", "eu"),
        ("jaeger-baggage", "debug-id=42"),
    ]
    with (
        traced_server(tmp_path / "b", "w3c,baggage,jaeger") as downstream,
        traced_server(tmp_path / "a", "w3c,baggage,jaeger") as hop,
    ):
        answer = call(hop, headers, f"/traced?forward={downstream}")
    expected = {"user": "alice", "plan": "gold", "region": "eu", "debug-id": "42"}
    assert answer["baggage"] == expected
    assert answer["downstream"]["baggage"] == expected
    forwarded = answer["sent"]
    assert forwarded["baggage"] == "user=alice,plan=gold;ttl=60,region=eu,debug-id=42"
    assert sorted(name for name in forwarded if name.startswith("uberctx-")) == [
        "uberctx-debug-id",
        "uberctx-plan",
        "uberctx-region",
        "uberctx-user",
    ]
    assert forwarded["uberctx-user"] == "alice"
