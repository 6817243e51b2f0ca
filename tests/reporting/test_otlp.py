"""The OTLP/HTTP backend against a real HTTP receiver that parses with the official classes."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("opentelemetry.proto")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tomograph import ConfigurationError, Tracer, config
from tomograph.encoding import zipkin_json
from tomograph.model import Endpoint
from tomograph.propagation import Propagator
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.otlp import OtlpBackend

pytestmark = pytest.mark.integration


class OtlpReceiver:
    """Accepts ``POST /v1/traces`` protobuf bodies and keeps the parsed requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        #: The body of every 200 answer (an ExportTraceServiceResponse, or anything).
        self.answer = b""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ok = self.path == "/v1/traces"
                if ok:
                    receiver.requests.append(
                        (dict(self.headers), ExportTraceServiceRequest.FromString(body))
                    )
                answer = receiver.answer if ok else b""
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def spans(self) -> list[tuple[str, OtlpSpan]]:
        out = []
        for _, request in self.requests:
            for resource in request.resource_spans:
                (service,) = [
                    a.value.string_value
                    for a in resource.resource.attributes
                    if a.key == "service.name"
                ]
                for scope in resource.scope_spans:
                    assert scope.scope.name == "tomograph"
                    out.extend((service, span) for span in scope.spans)
        return out


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    running = OtlpReceiver()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


@pytest.mark.parametrize("query", ["", "?gzip=1"])
def test_spans_arrive_with_otlp_semantics(receiver: OtlpReceiver, query: str) -> None:
    backend = config.backend_from_url(f"otlp+{receiver.url}{query}")
    tracer = Tracer("checkout", backends=[backend], trace_id_bits=64)
    # The upstream context as a server reads it: tracestate pairs in extra, our member removed.
    remote = Propagator(["w3c"]).extract(
        {
            "traceparent": f"00-{0xABC:032x}-{0xDEF:016x}-01",
            "tracestate": f"tomograph={0xDEF:016x};1,vendor=1,congo=t61rcWkgMzE",
        }
    )
    with tracer.span("handle", kind="server", parent=remote, tags={"n": 3, "ok": True, "r": 0.5}):
        with tracer.span(
            "query", remote_endpoint=Endpoint("db", "10.0.0.5", None, 5432)
        ) as query_span:
            query_span.annotate("rows", 7)
    try:
        with tracer.span("broken", parent=None):
            raise ValueError("bad input")
    except ValueError:
        pass
    assert backend.flush(5)
    backend.close(1)
    headers, _ = receiver.requests[0]
    assert headers["Content-Type"] == "application/x-protobuf"
    spans = {span.name: (service, span) for service, span in receiver.spans()}
    service, handle = spans["handle"]
    assert service == "checkout"
    assert handle.kind == OtlpSpan.SPAN_KIND_SERVER
    assert handle.trace_id == (0xABC).to_bytes(16, "big")
    assert handle.parent_span_id == (0xDEF).to_bytes(8, "big")
    assert handle.trace_state == "vendor=1,congo=t61rcWkgMzE"
    attributes = {a.key: a.value for a in handle.attributes}
    assert attributes["n"].int_value == 3
    assert attributes["ok"].bool_value is True
    assert attributes["r"].double_value == 0.5
    assert handle.end_time_unix_nano > handle.start_time_unix_nano > 1_600_000_000 * 10**9
    _, query_span_out = spans["query"]
    assert query_span_out.kind == OtlpSpan.SPAN_KIND_INTERNAL
    assert query_span_out.parent_span_id == handle.span_id
    assert [e.name for e in query_span_out.events] == ["rows"]
    peer = {a.key: a.value for a in query_span_out.attributes}
    assert peer["peer.service"].string_value == "db"
    assert peer["network.peer.address"].string_value == "10.0.0.5"
    assert peer["network.peer.port"].int_value == 5432
    _, broken = spans["broken"]
    assert broken.status.code == Status.STATUS_CODE_ERROR
    assert broken.status.message == "bad input"
    assert not broken.trace_state  # a new trace: nothing received upstream
    assert handle.status.code == Status.STATUS_CODE_UNSET
    assert backend.stats()["sent"] == 3


def sent(receiver: OtlpReceiver, backend: OtlpBackend) -> dict[str, OtlpSpan]:
    assert backend.flush(5)
    backend.close(1)
    return {span.name: span for _, span in receiver.spans()}


def fail_deep(depth: int) -> None:
    if depth:
        fail_deep(depth - 1)
    raise ConnectionError("refused")


def test_spans_zipkin_shows_as_errors_have_status_error(receiver: OtlpReceiver) -> None:
    backend = OtlpBackend(receiver.url)
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[backend, memory])
    with tracer.span("tagged") as tagged:
        tagged.tag("error", "card declined")  # the tag alone, as Zipkin instrumentation does
    with tracer.span("flagged") as flagged:
        flagged.error = True
    with tracer.span("numeric", tags={"error": 503}):
        pass
    with tracer.span("fine", tags={"errors": 0}):
        pass
    spans = sent(receiver, backend)
    zipkin = {
        s["name"]: s.get("tags", {}) for s in json.loads(zipkin_json.encode_spans(memory.spans))
    }
    for name, span in spans.items():
        assert (span.status.code == Status.STATUS_CODE_ERROR) == ("error" in zipkin[name]), name
    assert spans["tagged"].status.message == "card declined"
    assert spans["flagged"].status.message == ""  # Zipkin's bare "true" is not a message
    assert spans["numeric"].status.message == "503"
    assert spans["fine"].status.code == Status.STATUS_CODE_UNSET


def test_exceptions_are_opentelemetry_exception_events(receiver: OtlpReceiver) -> None:
    backend = OtlpBackend(receiver.url)
    tracer = Tracer("svc", backends=[backend])
    with pytest.raises(ConnectionError), tracer.span("call") as call:
        call.annotate("dialing")
        fail_deep(3)
    span = sent(receiver, backend)["call"]
    assert [event.name for event in span.events] == ["dialing", "exception"]
    attributes = {a.key: a.value.string_value for a in span.events[1].attributes}
    assert attributes["exception.type"] == "ConnectionError"
    assert attributes["exception.message"] == "refused"
    stack = attributes["exception.stacktrace"].splitlines()
    assert stack[0] == "Traceback (most recent call last):"
    assert stack[-1] == "ConnectionError: refused"
    assert sum("in fail_deep" in line for line in stack) == 4
    assert '    raise ConnectionError("refused")' in stack  # source lines, read when sent
    assert span.status.message == "refused"


def test_deep_stacks_are_bounded(receiver: OtlpReceiver) -> None:
    backend = OtlpBackend(receiver.url)
    tracer = Tracer("svc", backends=[backend])
    with pytest.raises(ConnectionError), tracer.span("deep"):
        fail_deep(500)
    [event] = sent(receiver, backend)["deep"].events
    stack = {a.key: a.value.string_value for a in event.attributes}["exception.stacktrace"]
    assert len(stack) <= 16384  # the documented bound
    assert "earlier frames not recorded" in stack and stack.endswith("ConnectionError: refused")


def test_unencodable_text_in_notes_and_stacks_loses_no_span(receiver: OtlpReceiver) -> None:
    backend = OtlpBackend(receiver.url)
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("surrogates") as span:
        span.annotate("half a pair: \ud83d")
    # A file name that is not UTF-8 on disk arrives as a surrogate escape.
    code = compile("raise ValueError('from a badly named file')", "/srv/app/\udcff.py", "exec")
    with pytest.raises(ValueError), tracer.span("raised"):
        exec(code)
    with tracer.span("innocent"):
        pass
    spans = sent(receiver, backend)
    assert set(spans) == {"surrogates", "raised", "innocent"}
    assert spans["surrogates"].events[0].name == "half a pair: \ufffd"
    stack = {a.key: a.value.string_value for a in spans["raised"].events[0].attributes}
    assert '/srv/app/\ufffd.py", line 1' in stack["exception.stacktrace"]
    assert backend.stats()["failed"] == 0


def test_names_and_times_protobuf_cannot_hold_lose_no_span(receiver: OtlpReceiver) -> None:
    backend = OtlpBackend(receiver.url)
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("half \ud800 a name"):
        pass
    with Tracer("shop \udcff", backends=[backend]).span("bad service"):
        pass
    first = tracer.start_span("at 1970")
    first.start(timestamp_us=0)
    first.finish()
    last = tracer.start_span("at the end of time")
    last.finish(timestamp_us=(1 << 63) // 1000 - 1)
    early = tracer.start_span("before 1970")
    early.finish()
    early.start_ns -= 10**20  # changed after it finished, not through the API
    with tracer.span("odd notes") as odd:
        odd.annotate_at("at 1970", 0)
        odd.annotate("a long wait", 2**70)
    with tracer.span("innocent"):
        pass
    spans = sent(receiver, backend)
    assert set(spans) == {
        "half \ufffd a name",
        "bad service",
        "at 1970",
        "at the end of time",
        "before 1970",
        "odd notes",
        "innocent",
    }
    services = {service for service, _ in receiver.spans()}
    assert services == {"svc", "shop \ufffd"}
    assert spans["at 1970"].start_time_unix_nano == 0
    assert spans["at the end of time"].end_time_unix_nano == ((1 << 63) // 1000 - 1) * 1000
    assert spans["before 1970"].start_time_unix_nano == 0
    assert spans["odd notes"].events[0].time_unix_nano == 0
    assert backend.stats()["failed"] == 0


def test_bad_otlp_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        config.backend_from_url("otlp+http://127.0.0.1:4318?encoding=json")


def test_endpoint_path() -> None:
    backend = OtlpBackend("https://collector.example/otel")
    assert backend.endpoint == "https://collector.example/otel/v1/traces"
    backend.close(0)


def test_spans_a_collector_rejects_in_a_partial_success_count_as_failed(
    receiver: OtlpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = 2
    response.partial_success.error_message = "2 spans have no name"
    receiver.answer = response.SerializeToString()
    backend = OtlpBackend(receiver.url, interval=0.05)
    tracer = Tracer("svc", backends=[backend])
    for _ in range(10):
        with tracer.span("op"):
            pass
    assert backend.flush(5)
    stats = backend.stats()
    backend.close(1)
    assert (stats["queued"], stats["sent"], stats["failed"]) == (10, 8, 2)
    logged = [
        r.getMessage() for r in caplog.records if "rejected 2 of its 10 spans" in r.getMessage()
    ]
    assert len(logged) == 1 and "2 spans have no name" in logged[0]


@pytest.mark.parametrize("answer", [b"", b"\x00\xff garbage", b"{}"])
def test_a_200_whose_body_is_no_partial_success_counts_every_span_as_sent(
    receiver: OtlpReceiver, answer: bytes
) -> None:
    receiver.answer = answer
    backend = OtlpBackend(receiver.url, interval=0.05)
    with Tracer("svc", backends=[backend]).span("op"):
        pass
    assert backend.flush(5)
    assert backend.stats()["sent"] == 1
    backend.close(1)
