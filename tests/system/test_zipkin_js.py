"""zipkin-js (npm ``zipkin`` and ``zipkin-transport-http`` 0.22) reporting to ``tomograph serve``.

A node process traces one real HTTP call with zipkin-js's own client and server
instrumentation; its HttpLogger posts to a real collector. With its default settings zipkin-js
writes v1 JSON: posted to /api/v1/spans the spans must come out with the right services,
kinds and parents; posted to /api/v2/spans they must be refused, not stored without services.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.support.collector import running_collector
from tests.support.servers import NPM_PREFIX, require

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("zipkin_js_app.js")


def run_zipkin_js(collector: str, encoding: str, path: str) -> dict[str, Any]:
    node = require("node", "Node.js runs zipkin-js")
    for package in ("zipkin", "zipkin-transport-http"):
        require(str(NPM_PREFIX / "node_modules" / package / "package.json"), f"npm {package}")
    environment = {**os.environ, "NODE_PATH": str(NPM_PREFIX / "node_modules")}
    done = subprocess.run(
        [node, str(APP), collector, encoding, path],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def trace(collector: str, trace_id: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{collector}/api/v2/trace/{trace_id}", timeout=10) as answer:
        spans: list[dict[str, Any]] = json.load(answer)
    return spans


@pytest.mark.parametrize(
    ("encoding", "path"),
    [("default", "/api/v1/spans"), ("v1", "/api/v1/spans"), ("v2", "/api/v2/spans")],
)
def test_zipkin_js_spans_keep_services_kinds_and_parents(
    tmp_path: Path, encoding: str, path: str
) -> None:
    with running_collector(tmp_path) as collector:
        sent = run_zipkin_js(collector, encoding, path)
        assert (sent["client"], sent["server"]) == ("success", "success")
        spans = {span["kind"]: span for span in trace(collector, sent["traceId"])}
    assert sorted(spans) == ["CLIENT", "SERVER"]
    client, server = spans["CLIENT"], spans["SERVER"]
    assert client["localEndpoint"] == {"serviceName": "frontend"}
    assert client["remoteEndpoint"] == {"serviceName": "backend"}
    assert server["localEndpoint"]["serviceName"] == "backend"
    # zipkin-js servers join the client's span: one id, the server side marked shared
    assert client["id"] == server["id"] == sent["spanId"]
    assert client["parentId"] == server["parentId"] == sent["parentId"]
    assert server.get("shared") is True and "shared" not in client
    for span in (client, server):
        assert span["name"] == "get"
        assert span["tags"] == {"http.path": "/items", "http.status_code": "200"}
        assert span["duration"] >= 1
    assert client["timestamp"] <= server["timestamp"]


def test_zipkin_js_default_json_on_the_v2_endpoint_is_refused_not_stored(
    tmp_path: Path,
) -> None:
    with running_collector(tmp_path) as collector:
        sent = run_zipkin_js(collector, "default", "/api/v2/spans")
        with urllib.request.urlopen(f"{collector}/api/v2/services", timeout=10) as answer:
            services = json.load(answer)
    for answer in (sent["client"], sent["server"]):
        assert "status:400" in answer
    assert services == []
