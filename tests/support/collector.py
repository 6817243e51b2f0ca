"""Helpers for collector tests: span dicts, a real ``tomograph serve`` process, the API spec."""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.servers import SHARED, BackgroundProcess, free_port, wait_for_port

from tomograph.demo import run_demo
from tomograph.encoding import zipkin_json
from tomograph.reporting.zipkin import ZipkinBackend
from tomograph.span import Span

SPEC_PATH = SHARED / "specs/zipkin/zipkin2-api.yaml"


def now_us() -> int:
    return time.time_ns() // 1000


def make_span(
    trace_id: str,
    span_id: str,
    *,
    parent_id: str | None = None,
    name: str = "op",
    service: str = "svc",
    remote: str | None = None,
    kind: str | None = None,
    timestamp: int | None = None,
    duration: int = 1000,
    tags: dict[str, str] | None = None,
    annotations: list[tuple[int, str]] | None = None,
    shared: bool = False,
) -> dict[str, Any]:
    """A Zipkin v2 span dict, for tests."""
    span: dict[str, Any] = {"traceId": trace_id, "id": span_id, "name": name}
    if parent_id:
        span["parentId"] = parent_id
    if kind:
        span["kind"] = kind
    span["timestamp"] = now_us() if timestamp is None else timestamp
    span["duration"] = duration
    span["localEndpoint"] = {"serviceName": service}
    if remote:
        span["remoteEndpoint"] = {"serviceName": remote}
    if tags:
        span["tags"] = tags
    if annotations:
        span["annotations"] = [{"timestamp": t, "value": v} for t, v in annotations]
    if shared:
        span["shared"] = True
    return span


def otlp_sharing_attributes(
    trace_id: bytes, spans: int, resource_value: str, scope_name: str = "lib"
) -> bytes:
    """An OTLP protobuf request of ``spans`` tiny spans of one trace, under one resource whose
    attribute ``k8s.labels`` holds ``resource_value`` and one scope named ``scope_name``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.trace.v1 import trace_pb2

    labels = KeyValue(key="k8s.labels", value=AnyValue(string_value=resource_value))
    return ExportTraceServiceRequest(
        resource_spans=[
            trace_pb2.ResourceSpans(
                resource={"attributes": [labels]},
                scope_spans=[
                    trace_pb2.ScopeSpans(
                        scope={"name": scope_name},
                        spans=[
                            trace_pb2.Span(trace_id=trace_id, span_id=(n + 1).to_bytes(8, "big"))
                            for n in range(spans)
                        ],
                    )
                ],
            )
        ]
    ).SerializeToString()


def decoded(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``spans`` as a store receives them: sent as Zipkin v2 JSON and decoded (normalized)."""
    return zipkin_json.decode_spans(json.dumps(spans).encode())


@contextmanager
def running_collector(workdir: Path, *extra_args: str) -> Iterator[str]:
    """A real ``tomograph serve`` (uvicorn) on a free port; yields its base URL."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tomograph",
        "serve",
        "--port",
        str(port),
        "--db",
        str(workdir / "traces.db"),
        *extra_args,
    ]
    with BackgroundProcess(argv, workdir / "collector.log") as process:
        try:
            wait_for_port(port)
        except TimeoutError:
            raise AssertionError(f"collector did not start:\n{process.output()}") from None
        yield f"http://127.0.0.1:{port}"


def send_spans(url: str, spans: Sequence[Span], *, token: str | None = None) -> None:
    """Sends finished spans to the collector at ``url`` as an application does (the Zipkin
    backend), and checks that every one was sent."""
    backend = ZipkinBackend(url, token=token)
    for span in spans:
        backend.report(span)
    assert backend.flush(10)
    assert backend.stats()["sent"] == len(spans), backend.stats()
    backend.close(5)


#: The span names of the trace ``tomograph demo`` makes, as the web UI's waterfall lists them.
DEMO_WATERFALL = ["get /checkout", "get /checkout", "load cart", "select cart_items", "charge card"]


def send_demo_trace(url: str, *, token: str | None = None) -> list[Span]:
    """Sends the trace ``tomograph demo`` makes (client -> server -> sqlite, a declined card)
    to the collector at ``url``; returns its spans."""
    memory, _ = run_demo()
    send_spans(url, memory.spans, token=token)
    return memory.spans


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request with the standard library; returns (status, body) for any status."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str) -> Any:
    status, body = http("GET", url)
    assert status == 200, (status, body)
    return json.loads(body)


def wait_for_traces(base_url: str, count: int, query: str = "", timeout: float = 15.0) -> Any:
    """Poll ``/api/v2/traces`` until it returns at least ``count`` traces (exporters are async)."""
    deadline = time.monotonic() + timeout
    while True:
        traces = get_json(f"{base_url}/api/v2/traces?limit=100&{query}")
        if len(traces) >= count or time.monotonic() > deadline:
            return traces
        time.sleep(0.1)


@cache
def zipkin_spec() -> dict[str, Any]:
    import yaml

    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return spec


def validate_response(path: str, status: int, payload: Any, method: str = "get") -> None:
    """Check ``payload`` against the response schema Zipkin's OpenAPI spec gives for ``path``."""
    import jsonschema

    spec = zipkin_spec()
    schema = spec["paths"][path][method]["responses"][str(status)]["schema"]
    document = {"definitions": spec["definitions"], **schema}
    validator = jsonschema.Draft4Validator(document, format_checker=jsonschema.FormatChecker())
    validator.validate(payload)
