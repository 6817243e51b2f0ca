"""One trace across three real processes, delivered to a Zipkin endpoint and to statsd.

test process (client) -> front (WSGI, waitress) -> back (ASGI, uvicorn) -> SQLite. Every
process reports to a recording Zipkin server (which validates each body against Zipkin's API
definition) and to a real statsd daemon flushing into Graphite's carbon.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tests.support.servers import REPO_ROOT, BackgroundProcess, free_port, wait_for_port
from tests.support.statsd_graphite import StatsdGraphite
from tests.support.zipkin_server import RecordingZipkinServer

import tomograph
from tomograph import config
from tomograph.integrations.requests import instrument_session

pytestmark = pytest.mark.integration


@pytest.fixture
def zipkin() -> Iterator[RecordingZipkinServer]:
    with RecordingZipkinServer() as server:
        yield server


@pytest.fixture
def graphite(tmp_path: Path) -> Iterator[StatsdGraphite]:
    with StatsdGraphite(tmp_path / "graphite") as running:
        yield running


def test_one_trace_across_three_processes(
    zipkin: RecordingZipkinServer, graphite: StatsdGraphite, tmp_path: Path
) -> None:
    backends = (
        f"zipkin+http://127.0.0.1:{zipkin.port}?interval=0.2,"
        f"statsd://127.0.0.1:{graphite.statsd_port}?prefix=e2e&interval=0.2"
    )
    env = {**os.environ, "TOMOGRAPH_BACKENDS": backends, "PYTHONPATH": str(REPO_ROOT)}
    front_port, back_port = free_port(), free_port()
    module = [sys.executable, "-m", "tests.support.e2e_apps"]
    back = [*module, "back", str(back_port), str(tmp_path / "orders.db")]
    front = [*module, "front", str(front_port), f"http://127.0.0.1:{back_port}"]
    tomograph.configure(service="e2e-client", backends=backends.split(","))
    try:
        with (
            BackgroundProcess(back, tmp_path / "back.log", cwd=REPO_ROOT, env=env) as back_p,
            BackgroundProcess(front, tmp_path / "front.log", cwd=REPO_ROOT, env=env) as front_p,
        ):
            wait_for_port(back_port)
            wait_for_port(front_port)
            session = instrument_session(requests.Session())
            with tomograph.span("checkout") as root:
                response = session.get(f"http://127.0.0.1:{front_port}/checkout/7", timeout=20)
            assert (response.status_code, response.text) == (200, "teapot")
            tomograph.flush(5)
            trace_hex = f"{root.trace_id:032x}"
            deadline = time.monotonic() + 15
            while True:
                spans = [s for s in zipkin.wait_for(6, 1) if s["traceId"] == trace_hex]
                if len(spans) >= 6 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert len(spans) >= 6, (spans, back_p.output(), front_p.output())
            # statsd, while the services run: a timer per service and span name (the front
            # end has two GET spans, its server span and its client span).
            timers = {
                "e2e-client.checkout": 1,
                "e2e-client.get": 1,
                "front.get": 2,
                "back.get_orders_order_id": 1,
                "back.select_orders": 1,
            }
            for timer, count in timers.items():
                values = graphite.wait_for_total(f"stats.timers.e2e.{timer}.count", count)
                assert sum(values) == count, (timer, values, graphite.metric_names())
    finally:
        config.reset()
    assert zipkin.invalid == []
    by_id = {s["id"]: s for s in spans}
    assert len(spans) == 6, [s["name"] for s in spans]

    def only(service: str, kind: str | None, name: str | None = None) -> dict[str, object]:
        found = [
            s
            for s in spans
            if s["localEndpoint"]["serviceName"] == service
            and s.get("kind") == kind
            and (name is None or s["name"] == name)
        ]
        assert len(found) == 1, (service, kind, name, spans)
        return found[0]

    checkout = only("e2e-client", None, "checkout")
    client = only("e2e-client", "CLIENT")
    front_server = only("front", "SERVER")
    front_client = only("front", "CLIENT")
    back_server = only("back", "SERVER")
    query = only("back", "CLIENT")
    chain = [checkout, client, front_server, front_client, back_server, query]
    for parent, child in itertools.pairwise(chain):
        assert child["parentId"] == parent["id"], (parent["name"], child["name"])
    assert "parentId" not in checkout
    assert back_server["name"] == "GET /orders/{order_id}"
    assert query["name"] == "SELECT orders"
    assert query["tags"]["db.statement"] == "SELECT item FROM orders WHERE id = ?"
    assert front_server["tags"]["http.status_code"] == "200"
    assert set(by_id) == {s["id"] for s in chain}
