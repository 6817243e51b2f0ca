"""OpenTelemetry's own contrib instrumentations (Flask, requests, SQLAlchemy) with tomograph as
the provider build the same traces as with the OpenTelemetry SDK.

The scenario (``contrib_service``) runs twice in real processes: once with the SDK and its Zipkin
exporter, once with ``tomograph.opentelemetry.install()``; both report to a real ``tomograph
serve`` and the traces are read back through its Zipkin API. The SDK's run is first checked
against the trees written below, then tomograph's is compared to the SDK's span by span: tree,
names, kinds, services, tags, events, errors. What differs by design is listed here
(``SDK_ONLY_TAGS``, ``TOMOGRAPH_ONLY_TAGS``, the event and exception encodings), never ignored
wholesale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.instrumentation.flask", reason="opentelemetry-instrumentation")
pytest.importorskip("opentelemetry.sdk", reason="OpenTelemetry SDK (test extra)")

from tests.support.collector import http, running_collector
from tests.support.postgres import postgres_cluster
from tests.support.servers import BackgroundProcess, free_port, wait_for_port
from tests.support.thread_calls import all_at_once

pytestmark = pytest.mark.integration

SERVICE = Path(__file__).with_name("contrib_service.py")

#: The incoming trace of each request, and the caller's span id its server span continues.
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACE_IDS = {
    "checkout": "4bf92f3577b34da6a3ce929d0e0e4736",
    "fail": "5bf92f3577b34da6a3ce929d0e0e4737",
    "quiet": "6bf92f3577b34da6a3ce929d0e0e4738",
    "offline": "7bf92f3577b34da6a3ce929d0e0e4739",
    "annotate": "8bf92f3577b34da6a3ce929d0e0e473a",
}
PATHS = {request: f"/{request}" for request in TRACE_IDS} | {"checkout": "/checkout/7"}
#: How many spans each trace has when it is complete (both processes, every instrumentation).
SPAN_COUNTS = {"checkout": 11, "fail": 3, "quiet": 1, "offline": 2, "annotate": 1}
BAGGAGE = "tenant=acme"
#: A checkout its caller did not sample (``-00``): no span may be recorded, and the trace goes on.
UNSAMPLED_TRACE_ID = "9bf92f3577b34da6a3ce929d0e0e473b"
#: Requests sent to the inventory at once, each in a trace of its own: the inventory's four spans.
CONCURRENT = 32
INVENTORY_SPANS = 4


def concurrent_trace_id(index: int) -> str:
    return f"{index + 1:08x}3577b34da6a3ce929d0e0e47"


@dataclass
class Run:
    """What one run of the scenario produced: the responses and the traces, by request."""

    provider: str
    export: str
    ports: dict[str, int]
    responses: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    traces: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: The traces of the requests sent to the inventory at once, in order.
    concurrent: list[list[dict[str, Any]]] = field(default_factory=list)
    logs: dict[str, str] = field(default_factory=dict)


def run_scenario(
    provider: str, workdir: Path, inventory_database: str, export: str = "zipkin"
) -> Run:
    """Start a collector, the inventory and the shop under ``provider`` exporting to the
    collector in the ``export`` format; send every request."""
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {"shop": free_port(), "inventory": free_port(), "offline": free_port()}
    run = Run(provider, export, ports)
    with ExitStack() as stack:
        collector = stack.enter_context(running_collector(workdir))
        environment = {
            **os.environ,
            "CONTRIB_PROVIDER": provider,
            "CONTRIB_EXPORT": export,
            "CONTRIB_COLLECTOR": collector,
            "CONTRIB_INVENTORY": f"http://127.0.0.1:{ports['inventory']}",
            "CONTRIB_OFFLINE": f"http://127.0.0.1:{ports['offline']}/stock/tea",
        }
        # the services run in ``workdir``: the shop's SQLite file is named alike in every run
        databases = {"inventory": inventory_database, "shop": "sqlite:///shop.db"}
        processes = {}
        commands = {
            "inventory": [
                *(sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{ports['inventory']}"),
                *("--preload", "--workers", "2", "--threads", "8"),
                *("--pythonpath", str(SERVICE.parent), "contrib_service:inventory_app()"),
            ],
            "shop": [sys.executable, str(SERVICE), str(ports["shop"])],
        }
        for role, argv in commands.items():
            processes[role] = stack.enter_context(
                BackgroundProcess(
                    argv,
                    workdir / f"{role}.log",
                    cwd=workdir,
                    env={**environment, "CONTRIB_DATABASE": databases[role]},
                )
            )
        try:
            for role, process in processes.items():
                _wait_until_serving(process, ports[role])
            shop = f"http://127.0.0.1:{ports['shop']}"
            unsampled = f"00-{UNSAMPLED_TRACE_ID}-{CALLER_SPAN_ID}-00"
            run.responses["unsampled"] = http(
                "GET", f"{shop}/checkout/7", headers={"traceparent": unsampled}
            )
            for request, path in PATHS.items():
                run.responses[request] = http(
                    "GET",
                    f"{shop}{path}",
                    headers={
                        "traceparent": f"00-{TRACE_IDS[request]}-{CALLER_SPAN_ID}-01",
                        "baggage": BAGGAGE,
                    },
                )
            _call_the_inventory_at_once(ports["inventory"])
            deadline = time.monotonic() + 60
            for request, trace_id in TRACE_IDS.items():
                run.traces[request] = _wait_for_trace(
                    collector, trace_id, SPAN_COUNTS[request], deadline
                )
            run.concurrent = [
                _wait_for_trace(collector, concurrent_trace_id(index), INVENTORY_SPANS, deadline)
                for index in range(CONCURRENT)
            ]
            # reported before every span above, had it been recorded
            run.traces["unsampled"] = _wait_for_trace(collector, UNSAMPLED_TRACE_ID, 0, deadline)
        finally:
            run.logs = {role: process.output() for role, process in processes.items()}
    return run


def _call_the_inventory_at_once(port: int) -> None:
    def call(index: int) -> None:
        traceparent = f"00-{concurrent_trace_id(index)}-{CALLER_SPAN_ID}-01"
        status, _ = http(
            "GET", f"http://127.0.0.1:{port}/stock/tea", headers={"traceparent": traceparent}
        )
        assert status == 200

    all_at_once(CONCURRENT, call)


def _wait_until_serving(process: BackgroundProcess, port: int, timeout: float = 60) -> None:
    """Wait for ``process`` to listen on ``port``; fail with its output if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            wait_for_port(port, timeout=0.2)
            return
        except TimeoutError:
            assert process.process is not None
            exited = process.process.poll() is not None
            if exited or time.monotonic() > deadline:
                raise AssertionError(f"not serving on {port}:\n{process.output()}") from None


def _wait_for_trace(collector: str, trace_id: str, count: int, deadline: float) -> Any:
    """The spans of ``trace_id`` once the collector has ``count`` of them (or at ``deadline``,
    on the monotonic clock)."""
    while True:
        status, body = http("GET", f"{collector}/api/v2/trace/{trace_id}")
        spans = json.loads(body) if status == 200 else []
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


#: A span as compared: (service, kind, name, children); the collector lower-cases names.
Tree = tuple[str, str | None, str, tuple[Any, ...]]


def _sql(service: str, operation: str, database: str) -> tuple[Tree, Tree]:
    """What SQLAlchemy's instrumentation makes for ``engine.connect()`` and one statement."""
    return (
        (service, "CLIENT", "connect", ()),
        (service, "CLIENT", f"{operation} {database}", ()),
    )


#: The trees the scenario makes, as the OpenTelemetry SDK records them.
EXPECTED_TREES: dict[str, Tree] = {
    "checkout": (
        "shop",
        "SERVER",
        "get /checkout/<int:order_id>",
        (
            *_sql("shop", "select", "shop.db"),
            ("shop", None, "price order", _sql("shop", "select", "shop.db")),
            (
                "shop",
                "CLIENT",
                "get",
                (
                    (
                        "inventory",
                        "SERVER",
                        "get /stock/<sku>",
                        (
                            (
                                "inventory",
                                None,
                                "count stock",
                                _sql("inventory", "select", "postgres"),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
    "fail": ("shop", "SERVER", "get /fail", _sql("shop", "select", "shop.db")),
    # nothing under suppress_instrumentation() makes a span (nor tells the inventory the trace)
    "quiet": ("shop", "SERVER", "get /quiet", ()),
    "offline": ("shop", "SERVER", "get /offline", (("shop", "CLIENT", "get", ()),)),
    "annotate": ("shop", "SERVER", "get /annotate", ()),
}

#: Tags only the SDK's Zipkin exporter writes: the resource's attributes on every span
#: (tomograph's service is the span's local endpoint) and the scope under its deprecated names.
SDK_ONLY_TAGS = frozenset(
    {
        "service.name",
        "service.instance.id",
        "telemetry.sdk.language",
        "telemetry.sdk.name",
        "telemetry.sdk.version",
        "otel.library.name",
        "otel.library.version",
    }
)
#: Tags only tomograph writes.
TOMOGRAPH_ONLY_TAGS: frozenset[str] = frozenset()


@pytest.fixture(scope="module")
def inventory_database() -> Iterator[str]:
    """The inventory's database: a private PostgreSQL cluster (the shop's is SQLite)."""
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="module")
def sdk_run(tmp_path_factory: pytest.TempPathFactory, inventory_database: str) -> Run:
    return run_scenario("sdk", tmp_path_factory.mktemp("sdk"), inventory_database)


@pytest.fixture(scope="module")
def tomograph_run(tmp_path_factory: pytest.TempPathFactory, inventory_database: str) -> Run:
    return run_scenario("tomograph", tmp_path_factory.mktemp("tomograph"), inventory_database)


def _by_id(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {span["id"]: span for span in spans}


def _root(spans: list[dict[str, Any]]) -> dict[str, Any]:
    """The one span whose parent is not in the trace (the incoming caller's span)."""
    ids = _by_id(spans)
    roots = [span for span in spans if span.get("parentId") not in ids]
    assert len(roots) == 1, roots
    return roots[0]


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in spans if span.get("parentId") == parent["id"]]


def tree(spans: list[dict[str, Any]], span: dict[str, Any] | None = None) -> Tree:
    """The trace as (service, kind, name, children), children in a stable order."""
    span = _root(spans) if span is None else span
    children = sorted((tree(spans, child) for child in _children(spans, span)), key=repr)
    return (span["localEndpoint"]["serviceName"], span.get("kind"), span["name"], tuple(children))


def _sorted_expected(node: Tree) -> Tree:
    service, kind, name, children = node
    return (service, kind, name, tuple(sorted((_sorted_expected(c) for c in children), key=repr)))


def _report(run: Run) -> str:
    return "\n".join(f"--- {role}\n{log[-4000:]}" for role, log in run.logs.items())


def test_the_sdk_run_makes_the_expected_trees(sdk_run: Run) -> None:
    """The reference itself is checked: the scenario makes the trees the test is about."""
    for request, expected in EXPECTED_TREES.items():
        spans = sdk_run.traces[request]
        assert len(spans) == SPAN_COUNTS[request], _report(sdk_run)
        assert tree(spans) == _sorted_expected(expected), request


def test_tomograph_makes_the_same_trees_as_the_sdk(sdk_run: Run, tomograph_run: Run) -> None:
    for request, expected in EXPECTED_TREES.items():
        spans = tomograph_run.traces[request]
        assert len(spans) == SPAN_COUNTS[request], _report(tomograph_run)
        assert tree(spans) == tree(sdk_run.traces[request]) == _sorted_expected(expected), request


@pytest.mark.parametrize("provider", ["sdk", "tomograph"])
def test_the_incoming_traceparent_is_continued(
    provider: str, sdk_run: Run, tomograph_run: Run
) -> None:
    run = {"sdk": sdk_run, "tomograph": tomograph_run}[provider]
    for request, trace_id in TRACE_IDS.items():
        spans = run.traces[request]
        assert {span["traceId"] for span in spans} == {trace_id}
        assert _root(spans)["parentId"] == CALLER_SPAN_ID


@pytest.mark.parametrize("provider", ["sdk", "tomograph"])
def test_the_call_to_the_inventory_carries_the_client_span(
    provider: str, sdk_run: Run, tomograph_run: Run
) -> None:
    """The inventory answers with the ``traceparent`` it received: the requests span's."""
    run = {"sdk": sdk_run, "tomograph": tomograph_run}[provider]
    status, body = run.responses["checkout"]
    assert status == 200
    answer = json.loads(body)
    client = _at(run.traces["checkout"], CHECKOUT, "get")
    expected = {"quantity": 2, "sku": "tea", "stock": 40}
    assert answer == {**expected, "traceparent": f"00-{TRACE_IDS['checkout']}-{client['id']}-01"}
    others = set(PATHS) - {"checkout"}
    assert {key: run.responses[key] for key in others} == {
        key: sdk_run.responses[key] for key in others
    }


@pytest.mark.parametrize("provider", ["sdk", "tomograph", "mixed"])
def test_a_trace_its_caller_did_not_sample_is_continued_and_not_recorded(
    provider: str, sdk_run: Run, tomograph_run: Run, mixed_run: Run
) -> None:
    run = {"sdk": sdk_run, "tomograph": tomograph_run, "mixed": mixed_run}[provider]
    status, body = run.responses["unsampled"]
    assert status == 200
    version, trace_id, _, flags = json.loads(body)["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", UNSAMPLED_TRACE_ID, "00")
    assert run.traces["unsampled"] == []


@pytest.mark.parametrize("provider", ["sdk", "tomograph", "mixed"])
def test_requests_served_at_once_by_threads_of_forked_workers_keep_their_traces_apart(
    provider: str, sdk_run: Run, tomograph_run: Run, mixed_run: Run
) -> None:
    run = {"sdk": sdk_run, "tomograph": tomograph_run, "mixed": mixed_run}[provider]
    stock = EXPECTED_TREES["checkout"][3][-1][3][0]
    for index, spans in enumerate(run.concurrent):
        assert len(spans) == INVENTORY_SPANS, (index, _report(run))
        assert {span["traceId"] for span in spans} == {concurrent_trace_id(index)}
        assert _root(spans)["parentId"] == CALLER_SPAN_ID
        assert tree(spans) == _sorted_expected(stock)


def _paths(spans: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Each span by its path from the root (``service kind name`` of every ancestor)."""
    paths: dict[tuple[str, ...], dict[str, Any]] = {}

    def walk(span: dict[str, Any], above: tuple[str, ...]) -> None:
        path = (*above, f"{span['localEndpoint']['serviceName']} {span.get('kind')} {span['name']}")
        assert path not in paths, f"two spans at {path}"
        paths[path] = span
        for child in _children(spans, span):
            walk(child, path)

    walk(_root(spans), ())
    return paths


#: The ``error`` tag of a span whose status is ERROR without a description (a 5xx response):
#: the SDK's exporter writes the empty description, tomograph ``true`` (its error model: a
#: Zipkin error tag always says something).
ERROR_WITHOUT_DESCRIPTION = {"sdk": "", "tomograph": "true", "mixed": "true"}
#: Over OTLP the status has no description and the collector writes the error tag empty.
OTLP_ERROR_WITHOUT_DESCRIPTION = ""


def _error_without_description(run: Run) -> str:
    return (
        OTLP_ERROR_WITHOUT_DESCRIPTION
        if run.export == "otlp"
        else ERROR_WITHOUT_DESCRIPTION[run.provider]
    )


def comparable_tags(run: Run, span: dict[str, Any]) -> dict[str, str]:
    """The span's tags with what differs from run to run replaced by what it stands for: the
    ports (free ports, new each run), the caller's ephemeral port, the empty error."""
    only_elsewhere = SDK_ONLY_TAGS if run.provider == "sdk" else TOMOGRAPH_ONLY_TAGS
    tags = {}
    for key, value in span.get("tags", {}).items():
        if key in only_elsewhere:
            continue
        for role, port in run.ports.items():
            value = value.replace(str(port), f"<{role} port>")
        if key == "net.peer.port" and span.get("kind") == "SERVER":
            value = "<caller's port>"
        if key == "error" and value == _error_without_description(run):
            value = "<error without description>"
        if key == "exception.stacktrace":
            # by design: tomograph writes the frames it kept (no chained causes), the SDK
            # Python's whole report
            assert value.startswith("Traceback (most recent call last):\n"), value
            last_line = value.splitlines()[-1]
            assert last_line.startswith(f"{span['tags']['exception.type']}: "), value
            value = "<stack trace>"
        tags[key] = value
    return tags


def events(span: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The span's events as (name, attributes), read from its Zipkin annotations.

    Both write an event with attributes as ``{"name": {attributes}}``. By design tomograph
    writes an event without attributes as the plain note ``name`` (the SDK: ``{"name": {}}``),
    and an exception as the note ``Type: message`` (the SDK: an ``exception`` event with type,
    message, stack trace; tomograph exports the stack trace to OTLP only): both read here as
    tomograph's, ``(name, {})`` and ``("Type: message", {})``. In Zipkin tomograph's note names
    the class alone, the SDK's event its module too (``requests.exceptions.ConnectionError``);
    over OTLP both write the module (``exception.type``).
    """
    found = []
    for annotation in span.get("annotations", []):
        value = annotation["value"]
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = {value: {}}
        ((name, attributes),) = decoded.items()
        if name == "exception" and "exception.stacktrace" in attributes:
            type_name = attributes["exception.type"].rpartition(".")[2]  # its module left out
            name = f"{type_name}: {attributes['exception.message']}"
            attributes = {}
        found.append((name, attributes))
    return found


def comparable_events(run: Run, span: dict[str, Any]) -> str:
    """The span's events as JSON text, the ports replaced by what they stand for."""
    text = json.dumps(events(span), sort_keys=True)
    for role, port in run.ports.items():
        text = text.replace(str(port), f"<{role} port>")
    return text


def test_every_span_has_the_same_tags_and_events_as_with_the_sdk(
    sdk_run: Run, tomograph_run: Run
) -> None:
    _assert_the_same_tags_and_events(sdk_run, tomograph_run)


def _assert_the_same_tags_and_events(sdk_run: Run, tomograph_run: Run) -> None:
    compared = 0
    for request in TRACE_IDS:
        reference = _paths(sdk_run.traces[request])
        spans = _paths(tomograph_run.traces[request])
        assert sorted(spans) == sorted(reference)
        for path, span in spans.items():
            expected = comparable_tags(sdk_run, reference[path])
            assert comparable_tags(tomograph_run, span) == expected, path
            assert comparable_events(tomograph_run, span) == comparable_events(
                sdk_run, reference[path]
            ), path
            compared += 1
    assert compared == sum(SPAN_COUNTS.values())


def _at(spans: list[dict[str, Any]], *names: str) -> dict[str, Any]:
    """The span reached from the root through children of these names."""
    span = _root(spans)
    assert span["name"] == names[0]
    for name in names[1:]:
        (span,) = [child for child in _children(spans, span) if child["name"] == name]
    return span


CHECKOUT = "get /checkout/<int:order_id>"
STOCK = (CHECKOUT, "get", "get /stock/<sku>")


@pytest.mark.parametrize("provider", ["sdk", "tomograph"])
def test_the_key_attributes_are_those_of_the_instrumentations(
    provider: str, sdk_run: Run, tomograph_run: Run
) -> None:
    """What each instrumentation records, written out (not taken from either run)."""
    run = {"sdk": sdk_run, "tomograph": tomograph_run}[provider]
    spans = run.traces["checkout"]
    shop = _at(spans, CHECKOUT)["tags"]
    assert shop["http.method"] == "GET"
    assert shop["http.route"] == "/checkout/<int:order_id>"
    assert shop["http.target"] == "/checkout/7"
    assert shop["http.status_code"] == "200"
    assert shop["app.tenant"] == "acme"
    assert shop["otel.scope.name"] == "opentelemetry.instrumentation.flask"
    call = _at(spans, CHECKOUT, "get")["tags"]
    assert call["http.url"] == f"http://127.0.0.1:{run.ports['inventory']}/stock/tea"
    assert call["http.status_code"] == "200"
    assert call["otel.scope.name"] == "opentelemetry.instrumentation.requests"
    assert _at(spans, *STOCK)["tags"]["app.tenant"] == "acme"
    query = _at(spans, *STOCK, "count stock", "select postgres")["tags"]
    assert query["db.system"] == "postgresql"
    assert query["db.statement"] == "SELECT units FROM stock WHERE sku = %(sku)s"
    assert query["db.name"] == "postgres"
    assert query["otel.scope.name"] == "opentelemetry.instrumentation.sqlalchemy"
    local = _at(spans, CHECKOUT, "select shop.db")["tags"]
    assert local["db.system"] == "sqlite"
    assert local["db.statement"] == "SELECT sku, quantity FROM orders WHERE id = ?"


def test_events_are_the_same_as_with_the_sdk(sdk_run: Run, tomograph_run: Run) -> None:
    expected = [("cache miss", {"cache.key": "user:42", "cache.size": 10}), ("plain", {})]
    for run in (sdk_run, tomograph_run):
        assert events(_root(run.traces["annotate"])) == expected, run.provider
        (price,) = [s for s in run.traces["checkout"] if s["name"] == "price order"]
        assert events(price) == [("priced", {"order.quantity": 2})], run.provider


def test_application_attributes_of_every_type(sdk_run: Run, tomograph_run: Run) -> None:
    for run in (sdk_run, tomograph_run):
        tags = _root(run.traces["annotate"])["tags"]
        app = {key: value for key, value in tags.items() if key.startswith("app.")}
        assert app == {
            "app.text": "hello",
            "app.count": "3",
            "app.ratio": "0.5",
            "app.flag": "true",
            "app.tags": '["a","b"]',
            "app.sizes": '["1","2","3"]',
        }, run.provider


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory, inventory_database: str) -> Run:
    return run_scenario("mixed", tmp_path_factory.mktemp("mixed"), inventory_database)


def test_tomograph_integrations_and_opentelemetry_instrumentations_make_one_trace(
    mixed_run: Run,
) -> None:
    """The shop traced by tomograph's Flask integration, its queries and calls by OpenTelemetry's
    instrumentations; the inventory's view opens a native ``tomograph.span()`` inside
    OpenTelemetry's Flask span: the trees are those of the SDK run, nesting and all."""
    for request, expected in EXPECTED_TREES.items():
        spans = mixed_run.traces[request]
        assert len(spans) == SPAN_COUNTS[request], _report(mixed_run)
        assert tree(spans) == _sorted_expected(expected), request
        assert {span["traceId"] for span in spans} == {TRACE_IDS[request]}
        assert _root(spans)["parentId"] == CALLER_SPAN_ID
    spans = mixed_run.traces["checkout"]
    shop = _at(spans, CHECKOUT)["tags"]
    assert "otel.scope.name" not in shop
    assert (shop["http.route"], shop["app.tenant"]) == ("/checkout/<int:order_id>", "acme")
    query = _at(spans, CHECKOUT, "price order", "select shop.db")["tags"]
    assert query["otel.scope.name"] == "opentelemetry.instrumentation.sqlalchemy"
    assert _at(spans, *STOCK)["tags"]["otel.scope.name"] == "opentelemetry.instrumentation.flask"
    assert "otel.scope.name" not in _at(spans, *STOCK, "count stock").get("tags", {})
    query = _at(spans, *STOCK, "count stock", "select postgres")["tags"]
    assert query["db.statement"] == "SELECT units FROM stock WHERE sku = %(sku)s"
    annotated = _root(mixed_run.traces["annotate"])
    assert annotated["tags"]["app.count"] == "3"
    assert events(annotated) == [
        ("cache miss", {"cache.key": "user:42", "cache.size": 10}),
        ("plain", {}),
    ]


@pytest.mark.parametrize("provider", ["sdk", "tomograph"])
def test_errors_carry_their_status_and_exception(
    provider: str, sdk_run: Run, tomograph_run: Run
) -> None:
    run = {"sdk": sdk_run, "tomograph": tomograph_run}[provider]
    failed = _at(run.traces["fail"], "get /fail")
    assert failed["tags"]["otel.status_code"] == "ERROR"
    assert failed["tags"]["error"] == "RuntimeError: checkout exploded"
    assert failed["tags"]["http.status_code"] == "500"
    assert events(failed) == [("RuntimeError: checkout exploded", {})]
    query = _at(run.traces["fail"], "get /fail", "select shop.db")["tags"]
    assert (query["otel.status_code"], query["error"]) == ("ERROR", "no such table: missing_table")
    offline = _at(run.traces["offline"], "get /offline")
    assert offline["tags"]["http.status_code"] == "502"
    assert offline["tags"]["error"] == _error_without_description(run)
    call = _at(run.traces["offline"], "get /offline", "get")
    assert call["tags"]["otel.status_code"] == "ERROR"
    assert call["tags"]["error"].startswith("ConnectionError: ")
    assert "http.status_code" not in call["tags"]
    ((exception, _),) = events(call)
    assert exception == call["tags"]["error"]


def test_the_sdk_marks_its_spans_debug_and_tomograph_does_not(
    sdk_run: Run, tomograph_run: Run
) -> None:
    """By design: the SDK's Zipkin exporter writes ``debug`` for every sampled span; tomograph
    only for a trace its caller asked to debug (B3 ``X-B3-Flags: 1``), and none did."""
    for request in TRACE_IDS:
        assert all(span.get("debug") is True for span in sdk_run.traces[request])
        assert not any("debug" in span for span in tomograph_run.traces[request])


@pytest.mark.parametrize("provider", ["sdk", "tomograph", "mixed"])
def test_the_services_log_no_tracing_trouble(
    provider: str, sdk_run: Run, tomograph_run: Run, mixed_run: Run
) -> None:
    """Nothing from the instrumentations' or the provider's loggers: no context detached out of
    order, no span missing at the response, no export failing."""
    run = {"sdk": sdk_run, "tomograph": tomograph_run, "mixed": mixed_run}[provider]
    for role, log in run.logs.items():
        lines = re.findall(r"^(?:WARNING|ERROR|CRITICAL) (?:opentelemetry|tomograph).*", log, re.M)
        tracebacks = log.count("Traceback (most recent call last)")
        # Flask logs the /fail view's exception with its causes: sqlite3's, SQLAlchemy's, its own
        assert (lines, tracebacks) == ([], 3 if role == "shop" else 0), log


@pytest.fixture(scope="module")
def sdk_otlp_run(tmp_path_factory: pytest.TempPathFactory, inventory_database: str) -> Run:
    return run_scenario("sdk", tmp_path_factory.mktemp("sdk-otlp"), inventory_database, "otlp")


@pytest.fixture(scope="module")
def tomograph_otlp_run(tmp_path_factory: pytest.TempPathFactory, inventory_database: str) -> Run:
    workdir = tmp_path_factory.mktemp("tomograph-otlp")
    return run_scenario("tomograph", workdir, inventory_database, "otlp")


def test_over_otlp_tomograph_makes_the_same_traces_as_the_sdk(
    sdk_otlp_run: Run, tomograph_otlp_run: Run
) -> None:
    """The same scenario, both exporting OTLP (protobuf over HTTP) to the collector's
    ``/v1/traces``: kinds, scopes, typed attributes, status and exception events as OTLP
    carries them, read back through the same Zipkin API."""
    for request, expected in EXPECTED_TREES.items():
        for run in (sdk_otlp_run, tomograph_otlp_run):
            spans = run.traces[request]
            assert len(spans) == SPAN_COUNTS[request], _report(run)
            assert tree(spans) == _sorted_expected(expected), (run.provider, request)
            assert _root(spans)["parentId"] == CALLER_SPAN_ID
    _assert_the_same_tags_and_events(sdk_otlp_run, tomograph_otlp_run)
    query = _at(tomograph_otlp_run.traces["checkout"], *STOCK, "count stock", "select postgres")
    assert query["tags"]["otel.scope.name"] == "opentelemetry.instrumentation.sqlalchemy"
    annotated = _root(tomograph_otlp_run.traces["annotate"])["tags"]
    assert annotated["app.sizes"] == "[1,2,3]"  # an int array stays one over OTLP


def test_over_otlp_the_exception_type_is_fully_qualified_as_in_the_sdk(
    sdk_otlp_run: Run, tomograph_otlp_run: Run
) -> None:
    for run in (sdk_otlp_run, tomograph_otlp_run):
        call = _at(run.traces["offline"], "get /offline", "get")
        assert call["tags"]["exception.type"] == "requests.exceptions.ConnectionError"


#: A requests call traced by OpenTelemetry's requests instrumentation in a program where
#: tomograph's urllib3 integration is on too (``tomograph run`` patches it): prints each span.
LAYERED_CLIENTS = """
import sys
import requests
import tomograph
import tomograph.opentelemetry
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from tomograph.integrations import urllib3 as traced_urllib3
from tomograph.reporting.memory import MemoryBackend

memory = MemoryBackend()
tomograph.configure(service="shop", backends=[memory], environ={})
tomograph.opentelemetry.install()
traced_urllib3.patch()
RequestsInstrumentor().instrument()
with tomograph.span("checkout"):
    requests.get(sys.argv[1], timeout=20)
for span in memory.spans:
    print(span.name, span.kind and span.kind.name, span.tags.get("otel.scope.name"))
"""


def test_under_opentelemetrys_requests_instrumentation_tomographs_urllib3_layer_stays_quiet(
    tmp_path: Path,
) -> None:
    with running_collector(tmp_path) as collector:
        done = subprocess.run(
            [sys.executable, "-c", LAYERED_CLIENTS, f"{collector}/api/v2/services"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert sorted(done.stdout.splitlines()) == [
        "GET CLIENT opentelemetry.instrumentation.requests",
        "checkout None None",
    ]
