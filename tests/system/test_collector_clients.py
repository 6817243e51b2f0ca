"""Real tracers send to a real ``tomograph serve``; the spans are queried back intact.

Clients: tomograph's own Zipkin backend (JSON and gzip proto3), the OpenTelemetry SDK with its
Zipkin JSON exporter and with its OTLP/HTTP protobuf exporter, and py_zipkin (v2 JSON).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")

from tests.support.collector import (
    get_json,
    running_collector,
    validate_response,
    wait_for_traces,
)

from tomograph.encoding import zipkin_json
from tomograph.model import Endpoint
from tomograph.propagation import Propagator
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.otlp import OtlpBackend
from tomograph.reporting.zipkin import ZipkinBackend
from tomograph.tracer import Tracer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_collector(tmp_path_factory.mktemp("collector")) as url:
        yield url


def by_name(trace: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["name"]: span for span in trace}


@pytest.mark.parametrize(("encoding", "use_gzip"), [("json", False), ("proto", True)])
def test_tomograph_zipkin_backend(collector: str, encoding: str, use_gzip: bool) -> None:
    memory = MemoryBackend()
    backend = ZipkinBackend(collector, encoding=encoding, use_gzip=use_gzip)
    tracer = Tracer(f"shop-{encoding}", backends=[backend, memory])
    with tracer.span("Checkout", kind="server", tags={"user": 42}) as root:
        root.annotate("validated")
        with tracer.span("charge card", kind="client", tags={"amount": 9.5}) as charge:
            charge.remote_endpoint = Endpoint("payments", ipv4="10.1.2.3", port=443)
            charge.error = True
            charge.tag("error", "declined")
    assert backend.flush(10)
    backend.close(5)
    trace_id = root.context.trace_id
    trace = get_json(f"{collector}/api/v2/trace/{trace_id:032x}")
    validate_response("/trace/{traceId}", 200, trace)
    # what the collector returns is what tomograph encoded, with Zipkin's ingest rules applied
    expected = json.loads(zipkin_json.encode_spans(memory.spans))
    for span in expected:
        span["name"] = span["name"].lower()
    assert sorted(trace, key=lambda s: s["id"]) == sorted(expected, key=lambda s: s["id"])
    found = get_json(
        f"{collector}/api/v2/traces?serviceName=shop-{encoding}&annotationQuery=error%3Ddeclined"
    )
    assert [t[0]["traceId"] for t in found] == [f"{trace_id:032x}"]


def test_opentelemetry_zipkin_json_exporter(collector: str) -> None:
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "otel-zipkin"}))
    provider.add_span_processor(
        SimpleSpanProcessor(ZipkinExporter(endpoint=f"{collector}/api/v2/spans"))
    )
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("Parent Op", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.method", "POST")
        with tracer.start_as_current_span("child-op", kind=SpanKind.CLIENT) as child:
            child.add_event("retrying", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    trace = by_name(get_json(f"{collector}/api/v2/trace/{trace_id}"))
    assert set(trace) == {"parent op", "child-op"}
    assert trace["child-op"]["parentId"] == f"{parent.get_span_context().span_id:016x}"
    assert trace["parent op"]["kind"] == "SERVER"
    assert trace["parent op"]["localEndpoint"]["serviceName"] == "otel-zipkin"
    assert trace["parent op"]["tags"]["http.method"] == "POST"
    assert trace["child-op"]["tags"]["error"] == "boom"
    assert trace["child-op"]["annotations"][0]["value"] == '{"retrying": {"attempt": 2}}'


def test_opentelemetry_otlp_http_exporter(collector: str) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    provider = TracerProvider(resource=Resource.create({"service.name": "otel-otlp"}))
    exporter = OTLPSpanExporter(endpoint=f"{collector}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests", "0.9")
    with tracer.start_as_current_span("handle", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/items/{id}")
        with tracer.start_as_current_span("query", kind=SpanKind.CLIENT) as child:
            child.set_attribute("peer.service", "inventory")
            child.set_attribute("rows", 3)
            child.record_exception(TimeoutError("lock wait"))
            child.set_status(Status(StatusCode.ERROR, "deadlock"))
    provider.shutdown()
    trace_id = f"{parent.get_span_context().trace_id:032x}"
    raw = get_json(f"{collector}/api/v2/trace/{trace_id}")
    validate_response("/trace/{traceId}", 200, raw)
    trace = by_name(raw)
    assert trace["query"]["parentId"] == f"{parent.get_span_context().span_id:016x}"
    assert trace["query"]["kind"] == "CLIENT"
    assert trace["query"]["remoteEndpoint"] == {"serviceName": "inventory"}
    assert trace["query"]["tags"]["rows"] == "3"
    assert trace["query"]["tags"]["error"] == "deadlock"
    # OpenTelemetry's exception event reads as tomograph's own exception note and tags.
    assert [a["value"] for a in trace["query"]["annotations"]] == ["TimeoutError: lock wait"]
    assert trace["query"]["tags"]["exception.type"] == "TimeoutError"
    assert trace["query"]["tags"]["exception.stacktrace"].strip() == "TimeoutError: lock wait"
    assert trace["handle"]["tags"]["otel.scope.name"] == "tests"
    assert trace["handle"]["tags"]["http.route"] == "/items/{id}"
    links = get_json(f"{collector}/api/v2/dependencies?endTs={10**13}&lookback={10**13 - 1}")
    assert {"parent": "otel-otlp", "child": "inventory", "callCount": 1, "errorCount": 1} in links


def raise_kaput() -> None:
    raise RuntimeError("kaput")


def test_tomograph_otlp_backend_shows_the_errors_zipkin_shows(collector: str) -> None:
    """The same spans through tomograph's OTLP exporter and the collector's OTLP ingest look,
    in the Zipkin API, as tomograph's Zipkin JSON encoder writes them: the same errors, error
    messages and notes."""
    memory = MemoryBackend()
    backend = OtlpBackend(collector)
    tracer = Tracer("shop-otlp", backends=[backend, memory])
    upstream = Propagator(["w3c"]).extract(
        {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        }
    )
    with tracer.span("Checkout", kind="server", parent=upstream) as root:
        root.annotate("validated")
        with tracer.span("charge card", kind="client") as charge:
            charge.tag("error", "declined")  # a tag alone: Zipkin shows an error
        with pytest.raises(RuntimeError), tracer.span("reserve stock"):
            raise_kaput()
        with tracer.span("flagged") as flagged:
            flagged.error = True  # failed without a message
        with tracer.span("fine", tags={"n": 1}):
            pass
    assert backend.flush(10)
    backend.close(5)
    trace = by_name(get_json(f"{collector}/api/v2/trace/{root.trace_id:032x}"))
    written = {
        span["name"].lower(): span for span in json.loads(zipkin_json.encode_spans(memory.spans))
    }
    assert set(trace) == set(written)
    for name, expected in written.items():
        got = trace[name]
        expected_tags, got_tags = expected.get("tags", {}), got.get("tags", {})
        assert ("error" in got_tags) == ("error" in expected_tags), name
        if expected_tags.get("error", "true") != "true":
            assert got_tags["error"] == expected_tags["error"], name
        for key, value in expected_tags.items():
            if key != "error":
                assert got_tags[key] == value, (name, key)
        assert [a["value"] for a in got.get("annotations", [])] == [
            a["value"] for a in expected.get("annotations", [])
        ], name
    assert {name for name, span in trace.items() if "error" in span.get("tags", {})} == {
        "charge card",
        "reserve stock",
        "flagged",
    }
    stack = trace["reserve stock"]["tags"]["exception.stacktrace"]
    assert "in raise_kaput" in stack and stack.endswith("RuntimeError: kaput")
    assert trace["checkout"]["tags"]["w3c.tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


PY_ZIPKIN_CLIENT = """
import sys
from py_zipkin.encoding import Encoding
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import zipkin_span

transport = SimpleHTTPTransport("127.0.0.1", int(sys.argv[1]))
with zipkin_span(service_name="legacy-app", span_name="Index", transport_handler=transport,
                 sample_rate=100.0, encoding=Encoding.V2_JSON) as root:
    root.update_binary_annotations({"page": "home"})
    with zipkin_span(service_name="legacy-app", span_name="render") as child:
        child.add_annotation("template loaded")
"""


def test_py_zipkin_v2_json(collector: str) -> None:
    # py_zipkin runs in its own process: importing it registers Zipkin's proto classes in
    # protobuf's global pool, which must not leak into other tests.
    port = collector.rsplit(":", 1)[1]
    subprocess.run([sys.executable, "-c", PY_ZIPKIN_CLIENT, port], check=True, timeout=60)
    traces = wait_for_traces(collector, 1, "serviceName=legacy-app")
    [trace] = traces
    spans = by_name(trace)
    assert set(spans) == {"index", "render"}
    assert spans["render"]["parentId"] == spans["index"]["id"]
    assert spans["index"]["tags"]["page"] == "home"
    assert [a["value"] for a in spans["render"]["annotations"]] == ["template loaded"]


# Every request span is named after its route template, on both sides of each call.
DEMO_SPANS = [
    ("demo-client", "checkout"),
    ("demo-client", "get /checkout"),
    ("inventory", "get /carts/{cart_id}"),
    ("inventory", "load cart"),
    ("inventory", "select cart_items"),
    ("payments", "authorize card"),
    ("payments", "get /charges"),
    ("shop", "get /carts/{cart_id}"),
    ("shop", "get /charges"),
    ("shop", "get /checkout"),
]


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tomograph", "demo", "--no-color", "--no-wait", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def check_demo_trace(base_url: str, stdout: str) -> None:
    link = stdout.strip().splitlines()[-1]
    assert link.startswith(f"trace: {base_url}/#/trace/"), stdout
    trace = get_json(f"{base_url}/api/v2/trace/{link.rsplit('/', 1)[1]}")
    assert sorted((s["localEndpoint"]["serviceName"], s["name"]) for s in trace) == DEMO_SPANS
    spans = {(s["localEndpoint"]["serviceName"], s["name"]): s for s in trace}
    root = spans[("demo-client", "checkout")]
    assert "parentId" not in root
    shop = spans[("shop", "get /checkout")]
    assert shop["kind"] == "SERVER"
    assert shop["tags"]["http.route"] == "/checkout"
    assert shop["parentId"] == spans[("demo-client", "get /checkout")]["id"]
    inventory = spans[("inventory", "get /carts/{cart_id}")]
    assert inventory["tags"]["http.path"] == "/carts/42"
    assert inventory["parentId"] == spans[("shop", "get /carts/{cart_id}")]["id"]
    query = spans[("inventory", "select cart_items")]
    assert query["tags"]["db.statement"] == "SELECT sku, qty FROM cart_items WHERE cart_id = ?"
    assert query["parentId"] == spans[("inventory", "load cart")]["id"]
    failed = spans[("payments", "authorize card")]
    assert failed["tags"]["error"] == "card declined: insufficient funds"
    assert len({s["traceId"] for s in trace}) == 1


def test_tomograph_demo_sends_its_trace_to_a_running_collector(collector: str) -> None:
    done = run_demo("--send", collector)
    assert done.returncode == 0, done.stderr
    assert "started the tomograph collector" not in done.stdout
    check_demo_trace(collector, done.stdout)


def test_tomograph_demo_uses_a_collector_already_on_its_port(collector: str) -> None:
    done = run_demo("--port", collector.rsplit(":", 1)[1])
    assert done.returncode == 0, done.stderr
    assert "started the tomograph collector" not in done.stdout
    check_demo_trace(collector, done.stdout)


def test_tomograph_demo_starts_a_collector_when_none_runs(tmp_path: Path) -> None:
    from tests.support.servers import free_port

    port = free_port()
    done = run_demo("--port", str(port), "--db", str(tmp_path / "traces.db"))
    assert done.returncode == 0, done.stderr
    assert f"started the tomograph collector on http://127.0.0.1:{port}" in done.stdout
    link = done.stdout.strip().splitlines()[-1]
    trace_id = link.rsplit("/", 1)[1]
    # The demo's collector stopped with it (--no-wait); the trace stayed in its database.
    with running_collector(tmp_path) as url:
        check_demo_trace(url, done.stdout.replace(f"http://127.0.0.1:{port}", url))
        assert get_json(f"{url}/api/v2/trace/{trace_id}")


def test_tomograph_demo_offline_prints_the_waterfall_only() -> None:
    done = run_demo("--offline")
    assert done.returncode == 0, done.stderr
    assert "demo-client: GET /check" in done.stdout
    assert "PaymentDeclined: card declined" in done.stdout
    assert "trace:" not in done.stdout


def test_tomograph_demo_reports_a_collector_that_is_not_there() -> None:
    from tests.support.servers import free_port

    done = subprocess.run(
        [sys.executable, "-m", "tomograph", "demo", "--send", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "tomograph serve" in done.stderr


def test_everything_landed_in_one_searchable_store(collector: str) -> None:
    services = get_json(f"{collector}/api/v2/services")
    validate_response("/services", 200, services)
    assert services == sorted(services)
    assert {"shop-json", "shop-proto", "otel-zipkin", "otel-otlp", "legacy-app"} <= set(services)


def test_collector_process_writes_its_database(tmp_path: Path) -> None:
    with running_collector(tmp_path) as url:
        assert get_json(f"{url}/health") == {"status": "UP"}
    assert (tmp_path / "traces.db").exists()
