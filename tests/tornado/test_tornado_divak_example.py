"""divák-tornado's README example, with only the import changed, against real servers.

Two real Tornado applications (the example's service and the service it calls, both using the
mixins) report to a real HTTP endpoint that validates and records Zipkin v2 JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from tornado import gen, httpclient, web

from support.servers import free_port
from support.zipkin_server import RecordingZipkinServer
from tomograph.tornado import (
    HttpClientMixin,
    Logger,
    ProbabilisticSampler,
    Recorder,
    RequestIdPropagator,
    RequestTracker,
    ZipkinPropagation,
    ZipkinReporter,
)

pytestmark = pytest.mark.integration

TRACE_ID = "463ac35c9f6413ad48485a3953bb6124"
CALLER_SPAN_ID = "a2fb4a1d1a96d312"


class LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Services:
    """The URLs the example's handler needs; set per test."""

    downstream = ""
    zipkin = ""
    probability = 1.0 / 1000.0


# -- the example, as in divák's README (query() is the user's own method) -------------------


class MyHandler(RequestTracker, Logger, HttpClientMixin, web.RequestHandler):
    def initialize(self) -> None:
        super().initialize()
        self.set_divak_name("foo")

    async def query(self, sql: str) -> list[dict[str, int]]:
        await asyncio.sleep(0.001)
        return [{"id": 1}, {"id": 2}]

    async def get(self) -> None:
        with self.record_operation("query-db"):
            rows = await self.query("...")
            self.add_divak_tag("query-db.rowcount", len(rows))
        output = []
        for row in rows:
            self.logger.debug("requesting %r", row["id"])
            response = await self.send_request(
                f"{Services.downstream}/?id={row['id']}", method="GET"
            )
            output.append(json.loads(response.body))
        self.set_status(200)
        self.write({"results": output})


class MyCoroutineHandler(RequestTracker, Logger, HttpClientMixin, web.RequestHandler):
    """The same handler written with ``@gen.coroutine``, as divák's README had it."""

    def initialize(self) -> None:
        super().initialize()
        self.set_divak_name("foo")

    @gen.coroutine
    def query(self, sql: str) -> Any:
        yield gen.sleep(0.001)
        return [{"id": 1}, {"id": 2}]

    @gen.coroutine
    def get(self) -> Any:
        with self.record_operation("query-db"):
            rows = yield self.query("...")
            self.add_divak_tag("query-db.rowcount", len(rows))
        output = []
        for row in rows:
            self.logger.debug("requesting %r", row["id"])
            response = yield self.send_request(
                f"{Services.downstream}/?id={row['id']}", method="GET"
            )
            output.append(json.loads(response.body))
        self.set_status(200)
        self.write({"results": output})


class Application(Recorder, ProbabilisticSampler, web.Application):
    handler: type[web.RequestHandler] = MyHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__([web.url(r"/", self.handler)], *args, **kwargs)
        self.set_divak_service("my-service")
        self.set_divak_sample_probability(Services.probability)
        self.add_divak_reporter(ZipkinReporter(f"{Services.zipkin}/api/v2"))
        self.add_divak_propagator(ZipkinPropagation())
        self.add_divak_propagator(RequestIdPropagator())


# -- the service it calls: a second application using the same mixins ------------------------


class DownstreamHandler(RequestTracker, Logger, web.RequestHandler):
    def get(self) -> None:
        self.set_divak_name("lookup")
        self.add_divak_tag("item.id", self.get_argument("id"))
        self.logger.info("looking up %s", self.get_argument("id"))
        self.write(
            {
                "id": int(self.get_argument("id")),
                "request_id": self.request.headers.get("Request-Id"),
                "sampled": self.request.headers.get("X-B3-Sampled"),
            }
        )


class Downstream(Recorder, web.Application):
    def __init__(self) -> None:
        super().__init__([web.url(r"/", DownstreamHandler)])
        self.set_divak_service("downstream")
        self.add_divak_reporter(ZipkinReporter(f"{Services.zipkin}/api/v2"))
        self.add_divak_propagator(ZipkinPropagation())
        self.add_divak_propagator(RequestIdPropagator())


class CoroutineApplication(Application):
    handler = MyCoroutineHandler


# -- running it ------------------------------------------------------------------------------


@pytest.fixture
def zipkin() -> Iterator[RecordingZipkinServer]:
    with RecordingZipkinServer() as server:
        Services.zipkin = server.url
        yield server


@pytest.fixture
def log_records() -> Iterator[LogRecords]:
    handler = LogRecords()
    logger = logging.getLogger(__name__)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)


def serve_and_fetch(
    app_class: type[Application], headers: dict[str, str], probability: float
) -> tuple[httpclient.HTTPResponse, Application, Downstream]:
    """Run both services on 127.0.0.1, GET / on the first, stop both; flush their reporters."""
    Services.probability = probability

    async def scenario() -> tuple[httpclient.HTTPResponse, Application, Downstream]:
        downstream_port, port = free_port(), free_port()
        Services.downstream = f"http://127.0.0.1:{downstream_port}"
        app, downstream = app_class(), Downstream()
        servers = [
            app.listen(port, address="127.0.0.1"),
            downstream.listen(downstream_port, address="127.0.0.1"),
        ]
        try:
            response = await httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{port}/", headers=headers, raise_error=False
            )
        finally:
            for server in servers:
                server.stop()
        return response, app, downstream

    response, app, downstream = asyncio.run(scenario())
    for recorder in (app, downstream):
        assert recorder.flush_divak(10)
        recorder.divak_tracer.close(1)
    return response, app, downstream


def by_name(spans: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    named: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        named.setdefault(span["name"], []).append(span)
    return named


def assert_example_trace(spans: list[dict[str, Any]], trace_id: str) -> dict[str, Any]:
    """The shape divák's README promises; returns the request's server span."""
    named = by_name(spans)
    (server,) = named["foo"]
    assert server["kind"] == "SERVER"
    assert server["traceId"] == trace_id
    assert server["localEndpoint"]["serviceName"] == "my-service"
    assert server["tags"]["http.method"] == "GET"
    assert server["tags"]["http.path"] == "/"
    assert server["tags"]["http.status_code"] == "200"

    (query,) = named["query-db"]
    assert query["parentId"] == server["id"]
    assert query["traceId"] == trace_id
    assert query["tags"] == {"query-db.rowcount": "2"}
    assert "kind" not in query

    clients = named["GET"]
    assert len(clients) == 2
    downstream = named["lookup"]
    assert len(downstream) == 2
    for client in clients:
        assert client["kind"] == "CLIENT"
        assert client["parentId"] == server["id"]
        assert client["traceId"] == trace_id
        assert client["tags"]["http.status_code"] == "200"
        assert client["tags"]["http.url"].startswith(Services.downstream + "/?id=")
    assert {s["parentId"] for s in downstream} == {c["id"] for c in clients}
    for span in downstream:
        assert span["kind"] == "SERVER"
        assert span["traceId"] == trace_id
        assert span["localEndpoint"]["serviceName"] == "downstream"
    assert sorted(s["tags"]["item.id"] for s in downstream) == ["1", "2"]
    return server


def test_sampled_caller_forces_recording_at_low_probability(
    zipkin: RecordingZipkinServer, log_records: LogRecords
) -> None:
    headers = {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": CALLER_SPAN_ID, "X-B3-Sampled": "1"}
    response, _, _ = serve_and_fetch(Application, headers, 1.0 / 1000.0)
    assert response.code == 200
    spans = zipkin.wait_for(6)
    assert zipkin.invalid == []
    assert len(spans) == 6
    server = assert_example_trace(spans, TRACE_ID)
    assert server["parentId"] == CALLER_SPAN_ID
    # the Logger mixin: correlation id and trace ids on every record
    records = [r for r in log_records.records if r.getMessage().startswith("requesting")]
    assert len(records) == 2
    request_id = response.headers["Request-Id"]
    for record in records:
        assert record.divak_request_id == request_id  # type: ignore[attr-defined]
        assert record.trace_id == TRACE_ID  # type: ignore[attr-defined]
        assert record.span_id == server["id"]  # type: ignore[attr-defined]
    # the request id travelled to the downstream service too
    results = json.loads(response.body)["results"]
    assert [r["request_id"] for r in results] == [request_id, request_id]
    assert server["tags"]["request.id"] == request_id


def test_new_trace_at_probability_one(zipkin: RecordingZipkinServer) -> None:
    response, _, _ = serve_and_fetch(Application, {}, 1.0)
    assert response.code == 200
    spans = zipkin.wait_for(6)
    assert len(spans) == 6
    trace_id = by_name(spans)["foo"][0]["traceId"]
    server = assert_example_trace(spans, trace_id)
    assert "parentId" not in server


def test_debug_flag_without_ids_forces_a_recorded_debug_trace(
    zipkin: RecordingZipkinServer,
) -> None:
    response, _, _ = serve_and_fetch(Application, {"X-B3-Flags": "1"}, 0.0)
    assert response.code == 200
    spans = zipkin.wait_for(6)
    server = assert_example_trace(spans, by_name(spans)["foo"][0]["traceId"])
    assert server.get("debug") is True
    assert all(s.get("debug") is True for s in spans)


def test_gen_coroutine_handler_records_the_same_trace(zipkin: RecordingZipkinServer) -> None:
    headers = {"X-B3-TraceId": TRACE_ID, "X-B3-SpanId": CALLER_SPAN_ID, "X-B3-Sampled": "1"}
    response, _, _ = serve_and_fetch(CoroutineApplication, headers, 1.0 / 1000.0)
    assert response.code == 200
    spans = zipkin.wait_for(6)
    assert len(spans) == 6
    assert_example_trace(spans, TRACE_ID)


def test_unsampled_requests_report_nothing_and_tell_downstream(
    zipkin: RecordingZipkinServer,
) -> None:
    response, _, _ = serve_and_fetch(Application, {}, 0.0)
    assert response.code == 200
    assert [r["sampled"] for r in json.loads(response.body)["results"]] == ["0", "0"]
    assert zipkin.wait_for(1, timeout=0.3) == []
    assert zipkin.requests == []
