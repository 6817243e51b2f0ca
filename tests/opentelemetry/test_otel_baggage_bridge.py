"""OpenTelemetry baggage and tomograph baggage are one, whichever API set it and whichever API's
span is current.

The API's own baggage tests (run by ``test_otel_api_suite.py``) only use OpenTelemetry's API;
these mix the two, as an application does whose libraries use one API and its code the other.
"""

from __future__ import annotations

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as context_api

import tomograph
from tomograph.opentelemetry import RuntimeContext, TracerProvider
from tomograph.propagation import Propagator
from tomograph.propagation import baggage as tomograph_baggage
from tomograph.reporting.memory import MemoryBackend


@pytest.fixture
def otel(memory: MemoryBackend, runtime_context: RuntimeContext) -> trace.Tracer:
    return TracerProvider().get_tracer("baggage-tests")


def test_baggage_set_with_tomograph_is_seen_by_opentelemetry_and_its_child_spans(
    otel: trace.Tracer,
) -> None:
    with tomograph.span("request") as request:
        tomograph_baggage.set_baggage("user.id", "alice")
        assert baggage.get_all() == {"user.id": "alice"}
        with otel.start_as_current_span("query"):
            assert baggage.get_baggage("user.id") == "alice"
            with tomograph.span("row") as row:
                assert tomograph_baggage.get_baggage(row) == {"user.id": "alice"}
    assert tomograph_baggage.get_baggage(request) == {"user.id": "alice"}


def test_baggage_set_with_opentelemetry_in_its_span_reaches_tomograph_children(
    otel: trace.Tracer,
) -> None:
    with otel.start_as_current_span("request"):
        token = context_api.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tomograph.span("work") as work:
                assert tomograph_baggage.get_baggage(work) == {"tenant": "acme"}
                assert baggage.get_baggage("tenant") == "acme"
        finally:
            context_api.detach(token)
        assert baggage.get_all() == {}


def test_removing_opentelemetry_baggage_removes_it_for_tomograph_too(otel: trace.Tracer) -> None:
    with otel.start_as_current_span("request"):
        outer = context_api.attach(baggage.set_baggage("tenant", "acme"))
        inner = context_api.attach(baggage.remove_baggage("tenant"))
        try:
            with tomograph.span("work") as work:
                assert tomograph_baggage.get_baggage(work) == {}
        finally:
            context_api.detach(inner)
            context_api.detach(outer)


def test_opentelemetry_baggage_attached_before_any_span_is_seen_inside_a_tomograph_span(
    otel: trace.Tracer,
) -> None:
    token = context_api.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tomograph.span("job"):
            assert baggage.get_baggage("tenant") == "acme"
    finally:
        context_api.detach(token)


def test_opentelemetry_baggage_attached_before_any_span_is_sent_from_a_tomograph_span(
    otel: trace.Tracer,
) -> None:
    token = context_api.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tomograph.span("client call") as call:
            headers: dict[str, str] = {}
            Propagator(["w3c", "baggage"]).inject(call, headers)
    finally:
        context_api.detach(token)
    assert headers.get("baggage") == "tenant=acme"


def test_opentelemetry_baggage_attached_before_any_span_reaches_an_opentelemetry_span(
    otel: trace.Tracer,
) -> None:
    token = context_api.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with otel.start_as_current_span("job") as job:
            assert baggage.get_baggage("tenant") == "acme"
            assert tomograph_baggage.get_baggage(job.tomograph_span) == {"tenant": "acme"}
    finally:
        context_api.detach(token)
