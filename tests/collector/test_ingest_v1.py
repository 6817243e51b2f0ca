"""POST /api/v1/spans on a real server: v1 JSON and Thrift stored as Zipkin converts them, with
the same limits, auth and answers as /api/v2/spans; v1 JSON on the v2 endpoint is refused."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from tests.collector.conftest import ServedApp
from tests.collector.test_api_errors import Answer, request

from tomograph import Tracer
from tomograph.encoding.zipkin_v1_thrift import encode_list
from tomograph.reporting.memory import MemoryBackend

TRACE = "4e441824ec2b6a44"
NOW = 1_700_000_000_000_000
WEB = {"serviceName": "web", "ipv4": "10.0.0.1"}
API = {"serviceName": "api", "ipv4": "10.0.0.2", "port": 9000}

#: One RPC logged by both sides under one span id, as a v1 tracer reports it.
RPC = {
    "traceId": TRACE,
    "id": "0000000000000002",
    "parentId": "0000000000000001",
    "name": "GET /items",
    "timestamp": NOW,
    "duration": 100,
    "annotations": [
        {"timestamp": NOW, "value": "cs", "endpoint": WEB},
        {"timestamp": NOW + 10, "value": "sr", "endpoint": API},
        {"timestamp": NOW + 90, "value": "ss", "endpoint": API},
        {"timestamp": NOW + 100, "value": "cr", "endpoint": WEB},
    ],
    "binaryAnnotations": [
        {"key": "http.path", "value": "/items", "endpoint": API},
        {"key": "sa", "value": True, "endpoint": API},
        {"key": "ca", "value": True, "endpoint": WEB},
    ],
}


def post_v1(
    app: ServedApp, body: bytes, content_type: str = "application/json", **headers: str
) -> Answer:
    return request(app, "POST", "/api/v1/spans", body, {"Content-Type": content_type, **headers})


def stored(app: ServedApp, trace_id: str = TRACE) -> list[dict[str, Any]]:
    answer = request(app, "GET", f"/api/v2/trace/{trace_id}")
    assert answer.status == 200, answer.body
    return sorted(answer.json(), key=lambda span: span.get("kind", ""))


def test_v1_json_rpc_is_stored_as_client_and_shared_server_span(served: ServedApp) -> None:
    assert post_v1(served, json.dumps([RPC]).encode()).status == 202
    client, server = stored(served)
    assert client == {
        "traceId": TRACE,
        "parentId": "0000000000000001",
        "id": "0000000000000002",
        "kind": "CLIENT",
        "name": "get /items",
        "timestamp": NOW,
        "duration": 100,
        "localEndpoint": WEB,
        "remoteEndpoint": API,
    }
    assert server == {
        "traceId": TRACE,
        "parentId": "0000000000000001",
        "id": "0000000000000002",
        "kind": "SERVER",
        "name": "get /items",
        "timestamp": NOW + 10,
        "duration": 80,
        "shared": True,
        "localEndpoint": API,
        "remoteEndpoint": WEB,
        "tags": {"http.path": "/items"},
    }
    services = request(served, "GET", "/api/v2/services").json()
    assert services == ["api", "web"]


def test_gzipped_v1_json_is_read(served: ServedApp) -> None:
    answer = post_v1(
        served, gzip.compress(json.dumps([RPC]).encode()), **{"Content-Encoding": "gzip"}
    )
    assert answer.status == 202
    assert len(stored(served)) == 2


def test_thrift_list_is_stored_like_the_same_spans_in_v2(served: ServedApp) -> None:
    memory = MemoryBackend()
    tracer = Tracer("shop", backends=[memory], trace_id_bits=128)
    with tracer.span("checkout", kind="server") as parent:
        with tracer.span("charge", kind="client") as child:
            child.tag("amount", 12)
    answer = post_v1(served, encode_list(memory.spans), "application/x-thrift")
    assert answer.status == 202, answer.body
    trace_id = f"{parent.trace_id:032x}"
    spans = {span["name"]: span for span in stored(served, trace_id)}
    assert spans["checkout"]["kind"] == "SERVER"
    assert spans["charge"]["kind"] == "CLIENT"
    assert spans["charge"]["parentId"] == f"{parent.span_id:016x}"
    assert spans["charge"]["tags"] == {"amount": "12"}
    assert {span["localEndpoint"]["serviceName"] for span in spans.values()} == {"shop"}
    assert spans["charge"]["duration"] == child.duration


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'[{"traceId": "xyz", "id": "0000000000000001"}]', "application/json", "span 0: traceId"),
        (b"{}", "application/json", "JSON list of spans"),
        (b"\x0c\x00\x00\x00\x01\x00", "application/x-thrift", "span 0: span field 1 is missing"),
        (b"\x0c\x00\x00\x00\x05", "application/x-thrift", "longer than the body"),
    ],
)
def test_malformed_bodies_get_400_naming_span_and_field(
    served: ServedApp, body: bytes, content_type: str, message: str
) -> None:
    answer = post_v1(served, body, content_type)
    assert answer.status == 400
    assert message in answer.json()["error"]


def test_other_content_types_get_415_naming_the_accepted_ones(served: ServedApp) -> None:
    answer = post_v1(served, b"[]", "application/x-protobuf")
    assert answer.status == 415
    assert "application/x-thrift" in answer.json()["error"]


def test_oversized_v1_bodies_get_413(tmp_path: Path) -> None:
    with ServedApp(tmp_path, max_body_bytes=1000) as app:
        body = json.dumps([RPC] * 10).encode()
        assert post_v1(app, body).status == 413
        assert post_v1(app, gzip.compress(body), **{"Content-Encoding": "gzip"}).status == 413


def test_v1_ingest_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    with ServedApp(tmp_path, token="s3cret") as app:
        assert post_v1(app, json.dumps([RPC]).encode()).status == 401
        answer = post_v1(app, json.dumps([RPC]).encode(), Authorization="Bearer s3cret")
        assert answer.status == 202


def test_zipkin_js_v1_json_on_the_v2_endpoint_gets_400_naming_v1(served: ServedApp) -> None:
    answer = request(
        served,
        "POST",
        "/api/v2/spans",
        json.dumps([RPC]).encode(),
        {"Content-Type": "application/json"},
    )
    assert answer.status == 400
    error = answer.json()["error"]
    assert "/api/v1/spans" in error and "binaryAnnotations" in error
    assert request(served, "GET", f"/api/v2/trace/{TRACE}").status == 404


def test_v1_annotations_alone_on_the_v2_endpoint_get_400(served: ServedApp) -> None:
    local = {key: value for key, value in RPC.items() if key != "binaryAnnotations"}
    answer = request(
        served,
        "POST",
        "/api/v2/spans",
        json.dumps([local]).encode(),
        {"Content-Type": "application/json"},
    )
    assert answer.status == 400
    assert "annotations[0].endpoint" in answer.json()["error"]
