"""eventlet.zipkin's patcher on tomograph: real eventlet.wsgi servers and green clients,
in a subprocess (monkey-patching), reporting to a real Zipkin-compatible endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support.servers import REPO_ROOT
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).with_name("eventlet_scenario.py")
TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"


def run_scenario(
    zipkin: RecordingZipkinServer | None, sampling_rate: float, *backends: str
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    port = zipkin.port if zipkin is not None else 9
    completed = subprocess.run(
        [sys.executable, str(SCENARIO), str(port), str(sampling_rate), *backends],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO_ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def traced() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with RecordingZipkinServer() as zipkin:
        result = run_scenario(zipkin, 1.0)
        spans = zipkin.wait_for(1, timeout=5)
        assert zipkin.invalid == []
    return result, spans


def spans_of_trace(spans: list[dict[str, Any]], trace_id: str) -> dict[str, list[dict[str, Any]]]:
    named: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        if span["traceId"] == trace_id:
            named.setdefault(span["name"], []).append(span)
    return named


def test_requests_are_answered(traced: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    result, _ = traced
    assert result["traced_status"] == 200
    assert result["new_trace_status"] == 200
    assert result["after_disable_status"] == 200


def test_server_span_continues_incoming_b3_with_uri_tag(
    traced: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, spans = traced
    named = spans_of_trace(spans, TRACE_ID)
    servers = [s for s in named["GET"] if s.get("kind") == "SERVER"]
    (frontend,) = [s for s in servers if s.get("parentId") == "a2fb4a1d1a96d312"]
    assert frontend["localEndpoint"]["serviceName"] == "frontend"
    assert frontend["tags"]["http.uri"] == "/users?id=7"
    assert frontend["tags"]["http.method"] == "GET"
    assert frontend["tags"]["key"] == "value"
    notes = [a["value"] for a in frontend["annotations"]]
    assert "Cache miss for /users" in notes
    assert "app log line" in notes  # trace_app_log=True


def test_green_clients_send_b3_and_record_client_spans(
    traced: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    result, spans = traced
    named = spans_of_trace(spans, TRACE_ID)
    clients = [s for s in named["GET"] if s.get("kind") == "CLIENT"]
    assert sorted(s["tags"]["http.url"].rsplit("/", 1)[1] for s in clients) == [
        "via-httplib",
        "via-urllib",
    ]
    frontend = next(
        s
        for s in named["GET"]
        if s.get("kind") == "SERVER" and s.get("parentId") == "a2fb4a1d1a96d312"
    )
    assert {c["parentId"] for c in clients} == {frontend["id"]}
    first_request = [
        b for b in result["backend_while_enabled"] if b["headers"].get("x-b3-traceid") == TRACE_ID
    ]
    assert sorted(b["path"] for b in first_request) == ["/via-httplib", "/via-urllib"]
    assert {b["headers"]["x-b3-spanid"] for b in first_request} == {c["id"] for c in clients}
    assert all(b["headers"]["x-b3-sampled"] == "1" for b in first_request)
    # the back end is an eventlet.wsgi server too: its server spans join the client spans
    backend_servers = [
        s
        for s in named["GET"]
        if s.get("kind") == "SERVER" and s.get("parentId") in {c["id"] for c in clients}
    ]
    assert len(backend_servers) == 2


def test_green_threads_continue_the_request_trace(
    traced: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, spans = traced
    named = spans_of_trace(spans, TRACE_ID)
    frontend = next(
        s
        for s in named["GET"]
        if s.get("kind") == "SERVER" and s.get("parentId") == "a2fb4a1d1a96d312"
    )
    for label in ("spawned", "spawned_n", "pool.spawn", "pool.spawn_n"):
        (span,) = named[label]
        assert span["parentId"] == frontend["id"], label
        assert [a["value"] for a in span["annotations"]] == [f"in {label}"]


def test_request_without_context_starts_a_trace(
    traced: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, spans = traced
    roots = [s for s in spans if s.get("kind") == "SERVER" and "parentId" not in s]
    assert [s["tags"]["http.uri"] for s in roots] == ["/new"]
    new_trace = spans_of_trace(spans, roots[0]["traceId"])
    assert len(new_trace["spawned"]) == 1


def test_disable_undoes_everything(traced: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    result, spans = traced
    assert result["spawn_restored"] is True
    assert all(not b["headers"] for b in result["backend_after_disable"])
    assert len(result["backend_after_disable"]) == 2
    assert not [s for s in spans if s.get("tags", {}).get("http.uri") == "/after"]


def test_sampling_rate_zero_records_nothing_and_tells_downstream() -> None:
    with RecordingZipkinServer() as zipkin:
        result = run_scenario(zipkin, 0.0)
        spans = zipkin.wait_for(1, timeout=0.5)
    new_trace_calls = [
        b for b in result["backend_while_enabled"] if b["headers"].get("x-b3-traceid") != TRACE_ID
    ]
    assert len(new_trace_calls) == 2
    assert {b["headers"]["x-b3-sampled"] for b in new_trace_calls} == {"0"}
    # the request that arrived sampled is still recorded: upstream decisions win
    assert spans
    assert {s["traceId"] for s in spans} == {TRACE_ID}


def test_legacy_scribe_backend_under_eventlet(tmp_path: Path) -> None:
    from support.scribe_server import ZIPKIN_CORE, ScribeServer, load_zipkin_core

    if not ZIPKIN_CORE.exists():
        pytest.fail(
            f"{ZIPKIN_CORE} is missing: the shared specs folder must sit beside the checkout"
        )
    with ScribeServer(tmp_path) as scribe:
        result = run_scenario(None, 1.0, f"scribe://127.0.0.1:{scribe.port}?interval=0.05")
        scribe.wait_for(1)
        spans = scribe.spans(load_zipkin_core())
    assert result["traced_status"] == 200
    trace_low = int(TRACE_ID[16:], 16)
    in_trace = [s for s in spans if s.trace_id & (2**64 - 1) == trace_low]
    frontend = next(s for s in in_trace if (s.parent_id or 0) & (2**64 - 1) == 0xA2FB4A1D1A96D312)
    notes = [a.value for a in frontend.annotations]
    assert (notes[0], notes[-1]) == ("sr", "ss")
    assert "Cache miss for /users" in [a.value for a in frontend.annotations]
    binary = {b.key: b.value for b in frontend.binary_annotations}
    assert binary["http.uri"] == b"/users?id=7"
    clients = [s for s in in_trace if s.annotations and s.annotations[0].value == "cs"]
    assert len(clients) == 2
    assert {s.name for s in in_trace} >= {"spawned", "spawned_n", "pool.spawn", "pool.spawn_n"}
