"""py_zipkin's v1 JSON encoder posting through its HTTP transport, which sends
them to /api/v1/spans, to a real ``tomograph serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.support.collector import running_collector

pytestmark = pytest.mark.integration

CLIENT = """
import sys
from py_zipkin.encoding import Encoding
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import zipkin_span

transport = SimpleHTTPTransport("127.0.0.1", int(sys.argv[1]))
with zipkin_span(service_name="Legacy-App", span_name="Index", transport_handler=transport,
                 sample_rate=100.0, encoding=getattr(Encoding, sys.argv[2]),
                 kind=None) as root:
    root.update_binary_annotations({"page": "home"})
    with zipkin_span(service_name="legacy-app", span_name="render") as child:
        child.add_annotation("template loaded")
    with zipkin_span(service_name="legacy-app", span_name="call db",
                     kind=__import__("py_zipkin").Kind.CLIENT) as call:
        call.add_sa_binary_annotation(port=5432, service_name="postgres", host="10.0.0.9")
print(root.zipkin_attrs.trace_id)
"""


@pytest.mark.parametrize("encoding", ["V1_JSON"])  # py_zipkin 1.x dropped V1_THRIFT
def test_py_zipkin_v1_spans_are_stored_with_services_kinds_and_parents(
    tmp_path: Path, encoding: str
) -> None:
    with running_collector(tmp_path) as collector:
        port = collector.rsplit(":", 1)[1]
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, port, encoding],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        trace_id = done.stdout.strip()
        with urllib.request.urlopen(f"{collector}/api/v2/trace/{trace_id}", timeout=10) as answer:
            trace: list[dict[str, Any]] = json.load(answer)
    spans = {span["name"]: span for span in trace}
    assert set(spans) == {"index", "render", "call db"}, trace
    for span in spans.values():
        assert span["localEndpoint"]["serviceName"] == "legacy-app"
    assert spans["render"]["parentId"] == spans["call db"]["parentId"] == spans["index"]["id"]
    assert spans["index"]["tags"] == {"page": "home"}
    assert [a["value"] for a in spans["render"]["annotations"]] == ["template loaded"]
    assert spans["call db"]["kind"] == "CLIENT"
    assert spans["call db"]["remoteEndpoint"] == {
        "serviceName": "postgres",
        "ipv4": "10.0.0.9",
        "port": 5432,
    }
