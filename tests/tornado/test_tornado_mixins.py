"""The tomograph.tornado mixins one by one, on a real Tornado server and client."""

from __future__ import annotations

import asyncio
import http.client
import logging
import uuid
from typing import Any

import pytest
from tornado import httpclient, web

from support.servers import free_port
from tomograph.integrations.logging import install, uninstall
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend
from tomograph.tornado import (
    Logger,
    ProbabilisticSampler,
    Recorder,
    RequestIdPropagator,
    RequestTracker,
    ZipkinPropagation,
    ZipkinReporter,
)

pytestmark = pytest.mark.integration


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Handler(RequestTracker, Logger, web.RequestHandler):
    def get(self) -> None:
        if self.get_argument("fail", None):
            raise RuntimeError("database on fire")
        if self.get_argument("status", None):
            raise web.HTTPError(int(self.get_argument("status")))
        with self.record_operation("step"):
            self.logger.info("inside step")
        self.logger.info("outside step", extra={"custom": 1})
        self.write("ok")


def make_app(memory: MemoryBackend, *propagators: Any) -> Recorder:
    class App(Recorder, ProbabilisticSampler, web.Application):
        pass

    app = App([web.url(r"/", Handler)])
    app.set_divak_service("svc")
    app.add_divak_reporter(memory)
    for propagator in propagators:
        app.add_divak_propagator(propagator)
    return app


def fetch_all(
    app: web.Application, *requests: tuple[str, dict[str, str]]
) -> list[httpclient.HTTPResponse]:
    async def scenario() -> list[httpclient.HTTPResponse]:
        port = free_port()
        server = app.listen(port, address="127.0.0.1")
        client = httpclient.AsyncHTTPClient(force_instance=True)
        try:
            return [
                await client.fetch(f"http://127.0.0.1:{port}{path}", headers=h, raise_error=False)
                for path, h in requests
            ]
        finally:
            client.close()
            server.stop()

    return asyncio.run(scenario())


def test_request_id_is_generated_as_uuid4_or_relayed() -> None:
    app = make_app(MemoryBackend(), RequestIdPropagator())
    generated, relayed = fetch_all(app, ("/", {}), ("/", {"Request-Id": "abc-123"}))
    assert uuid.UUID(generated.headers["Request-Id"]).version == 4
    assert relayed.headers["Request-Id"] == "abc-123"


def test_oversized_request_id_is_replaced_not_relayed() -> None:
    app = make_app(MemoryBackend(), RequestIdPropagator())
    (answer,) = fetch_all(app, ("/", {"Request-Id": "x" * 5000}))
    assert uuid.UUID(answer.headers["Request-Id"]).version == 4


def test_request_id_generation_can_be_disabled_and_header_renamed() -> None:
    app = make_app(MemoryBackend(), RequestIdPropagator("X-Correlation-Id", value_factory=None))
    (missing, given) = fetch_all(app, ("/", {}), ("/", {"X-Correlation-Id": "c1"}))
    assert "X-Correlation-Id" not in missing.headers
    assert given.headers["X-Correlation-Id"] == "c1"


def test_request_id_is_in_the_response_of_a_failed_request() -> None:
    app = make_app(MemoryBackend(), RequestIdPropagator())
    (response,) = fetch_all(app, ("/?fail=1", {}))
    assert response.code == 500
    assert response.headers.get("Request-Id")


def test_handler_exception_marks_the_server_span_failed() -> None:
    memory = MemoryBackend()
    (response,) = fetch_all(make_app(memory), ("/?fail=1", {}))
    assert response.code == 500
    (span,) = memory.spans
    assert span.kind is SpanKind.SERVER
    assert span.error
    assert span.tags["error"] == "database on fire"
    assert span.tags["http.status_code"] == 500


def test_client_errors_are_tagged_but_not_failures() -> None:
    memory = MemoryBackend()
    (response,) = fetch_all(make_app(memory), ("/?status=404", {}))
    assert response.code == 404
    (span,) = memory.spans
    assert not span.error
    assert span.tags["http.status_code"] == 404


def test_requests_on_one_keep_alive_connection_are_separate_traces() -> None:
    memory = MemoryBackend()
    app = make_app(memory)

    def two_requests(port: int) -> list[int]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        statuses = []
        for _ in range(2):
            connection.request("GET", "/")
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        assert connection.sock is not None  # still the first connection
        connection.close()
        return statuses

    async def scenario() -> list[int]:
        port = free_port()
        server = app.listen(port, address="127.0.0.1")
        try:
            return await asyncio.get_running_loop().run_in_executor(None, two_requests, port)
        finally:
            server.stop()

    assert asyncio.run(scenario()) == [200, 200]
    servers = [s for s in memory.spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 2
    assert all(s.parent_id is None for s in servers)
    assert servers[0].trace_id != servers[1].trace_id
    steps = [s for s in memory.spans if s.name == "step"]
    assert [s.parent_id for s in steps] == [s.span_id for s in servers]


def test_logger_records_carry_current_span_ids() -> None:
    memory = MemoryBackend()
    records = Records()
    logger = logging.getLogger(f"{Handler.__module__}.{Handler.__name__}")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    try:
        fetch_all(make_app(memory, RequestIdPropagator()), ("/", {"Request-Id": "r-1"}))
    finally:
        logger.removeHandler(records)
    step = next(s for s in memory.spans if s.name == "step")
    server = next(s for s in memory.spans if s.kind is SpanKind.SERVER)
    inside, outside = records.records
    assert inside.span_id == f"{step.span_id:016x}"  # type: ignore[attr-defined]
    assert outside.span_id == f"{server.span_id:016x}"  # type: ignore[attr-defined]
    assert outside.custom == 1  # type: ignore[attr-defined]
    assert {r.divak_request_id for r in records.records} == {"r-1"}  # type: ignore[attr-defined]
    assert {r.trace_id for r in records.records} == {f"{server.trace_id:032x}"}  # type: ignore[attr-defined]


def test_logger_works_with_the_logging_integrations_record_factory() -> None:
    memory = MemoryBackend()
    records = Records()
    logger = logging.getLogger(f"{Handler.__module__}.{Handler.__name__}")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    install()  # sets trace_id/span_id on every record it makes
    try:
        (response,) = fetch_all(make_app(memory), ("/", {}))
    finally:
        uninstall()
        logger.removeHandler(records)
    assert response.code == 200
    step = next(s for s in memory.spans if s.name == "step")
    assert records.records[0].span_id == f"{step.span_id:016x}"  # type: ignore[attr-defined]
    assert records.records[0].trace_id == f"{step.trace_id:032x}"  # type: ignore[attr-defined]


def test_malformed_b3_headers_start_a_new_trace() -> None:
    memory = MemoryBackend()
    headers = {"X-B3-TraceId": "not-hex", "X-B3-SpanId": "zz", "X-B3-Sampled": "1"}
    (response,) = fetch_all(make_app(memory, ZipkinPropagation()), ("/", headers))
    assert response.code == 200
    server = next(s for s in memory.spans if s.kind is SpanKind.SERVER)
    assert server.parent_id is None


def test_b3_deny_is_obeyed() -> None:
    memory = MemoryBackend()
    (response,) = fetch_all(make_app(memory, ZipkinPropagation()), ("/", {"b3": "0"}))
    assert response.code == 200
    assert memory.spans == []


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_sample_probability_out_of_range_is_refused(probability: float) -> None:
    app = make_app(MemoryBackend())
    with pytest.raises(ValueError, match=r"0\.0 to 1\.0"):
        app.set_divak_sample_probability(probability)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9411/api/v2",
        "http://127.0.0.1:9411/api/v2/",
        "http://127.0.0.1:9411",
        "http://127.0.0.1:9411/api/v2/spans",
    ],
)
def test_zipkin_reporter_accepts_divak_urls(url: str) -> None:
    reporter = ZipkinReporter(url)
    try:
        assert reporter.endpoint == "http://127.0.0.1:9411/api/v2/spans"
    finally:
        reporter.close(0)


def test_reconfiguring_rebuilds_the_tracer() -> None:
    app = make_app(MemoryBackend())
    first = app.divak_tracer
    app.set_divak_service("renamed")
    assert app.divak_tracer is not first
    assert app.divak_tracer.service_name == "renamed"
