"""OpenTelemetry's propagation API and tomograph's middlewares agree on one trace, over real
HTTP on 127.0.0.1: an OpenTelemetry client calling a tomograph-traced WSGI server, a
tomograph-traced client calling a server that extracts with OpenTelemetry, baggage both ways,
custom getters and setters, and the formats tomograph is configured with."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
from opentelemetry import baggage, context, trace
from opentelemetry.propagators.textmap import Getter, Setter

import tomograph
from tomograph.integrations.wsgi import Middleware
from tomograph.opentelemetry import Propagator, TracerProvider
from tomograph.opentelemetry._context import uninstall_context
from tomograph.propagation import Propagator as TomographPropagator
from tomograph.propagation.baggage import get_baggage
from tomograph.reporting.memory import MemoryBackend


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def otel(memory: MemoryBackend) -> Iterator[trace.Tracer]:
    try:
        yield TracerProvider().get_tracer("client.library")
    finally:
        uninstall_context()


def serve(app: Any) -> Iterator[str]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def traced_server(memory: MemoryBackend) -> Iterator[str]:
    """A WSGI app behind tomograph's middleware that answers with the baggage it sees."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen = ",".join(f"{k}={v}" for k, v in sorted(get_baggage().items()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [seen.encode()]

    yield from serve(Middleware(app))


def test_an_otel_client_and_a_tomograph_server_share_one_trace(
    otel: trace.Tracer, traced_server: str, memory: MemoryBackend
) -> None:
    propagator = Propagator()
    with otel.start_as_current_span("checkout", kind=trace.SpanKind.CLIENT) as client:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            headers: dict[str, str] = {}
            propagator.inject(headers)
            answer = requests.get(f"{traced_server}/pay", headers=headers, timeout=10)
        finally:
            context.detach(token)
    assert answer.text == "tenant=acme"
    tomograph.flush()
    server = next(span for span in memory.spans if span.kind is tomograph.SpanKind.SERVER)
    assert server.trace_id == client.get_span_context().trace_id
    assert server.parent_id == client.get_span_context().span_id


def test_a_tomograph_client_and_an_otel_server_share_one_trace(
    otel: trace.Tracer, memory: MemoryBackend
) -> None:
    seen: dict[str, Any] = {}
    propagator = Propagator()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # What OpenTelemetry's WSGI instrumentation does: extract, attach, start a server span.
        extracted = propagator.extract(environ, getter=_EnvironGetter())
        token = context.attach(extracted)
        try:
            with otel.start_as_current_span("handle", kind=trace.SpanKind.SERVER) as span:
                seen["context"] = span.get_span_context()
                seen["baggage"] = dict(baggage.get_all())
                with tomograph.span("native work") as work:
                    seen["work parent"] = work.parent_id
        finally:
            context.detach(token)
        start_response("204 No Content", [])
        return []

    for base in serve(app):
        with tomograph.span("caller", kind="client") as caller:
            from tomograph.propagation.baggage import set_baggage

            set_baggage("user", "alice")
            headers: dict[str, str] = {}
            tomograph.propagation.inject(caller, headers)
            requests.get(f"{base}/", headers=headers, timeout=10)
    assert seen["context"].trace_id == caller.trace_id
    assert seen["baggage"] == {"user": "alice"}
    spans = {span.name: span for span in memory.spans}
    assert spans["handle"].parent_id == caller.span_id
    assert seen["work parent"] == spans["handle"].span_id


class _EnvironGetter(Getter[dict[str, Any]]):
    """A WSGI environ getter, as OpenTelemetry's WSGI instrumentation has."""

    def get(self, carrier: dict[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    def keys(self, carrier: dict[str, Any]) -> list[str]:
        return [k[5:].lower().replace("_", "-") for k in carrier if k.startswith("HTTP_")]


class _ListSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


def test_custom_getters_and_setters_and_configured_formats(otel: trace.Tracer) -> None:
    b3_only = Propagator(TomographPropagator(["b3", "jaeger"]))
    with otel.start_as_current_span("producer") as span:
        token = context.attach(baggage.set_baggage("region", "eu"))
        try:
            pairs: list[tuple[str, str]] = []
            b3_only.inject(pairs, setter=_ListSetter())
        finally:
            context.detach(token)
    names = {name for name, _ in pairs}
    assert {"x-b3-traceid", "x-b3-spanid", "uber-trace-id", "uberctx-region"} <= names
    assert "traceparent" not in names
    assert b3_only.fields >= {"x-b3-traceid", "uber-trace-id"}
    environ = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in pairs}
    extracted = b3_only.extract(environ, getter=_EnvironGetter())
    remote = trace.get_current_span(extracted).get_span_context()
    assert remote.is_remote and remote.trace_id == span.get_span_context().trace_id
    assert remote.span_id == span.get_span_context().span_id
    assert baggage.get_all(extracted) == {"region": "eu"}


def test_bad_headers_and_broken_getters_give_an_empty_context(otel: trace.Tracer) -> None:
    class Broken(Getter[Any]):
        def get(self, carrier: Any, key: str) -> list[str] | None:
            raise RuntimeError("broken carrier")

        def keys(self, carrier: Any) -> list[str]:
            raise RuntimeError("broken carrier")

    propagator = Propagator()
    assert propagator.extract({"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}) == {}
    assert propagator.extract({"traceparent": "\ud800" * 10_000}) == {}
    assert propagator.extract({}, getter=Broken()) == {}
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=context.Context())  # no span, no baggage: nothing
    assert carrier == {}
    propagator.inject(carrier, context=baggage.set_baggage("only", "baggage", context.Context()))
    assert carrier == {"baggage": "only=baggage"}
