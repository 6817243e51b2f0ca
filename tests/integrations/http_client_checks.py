"""Assertions shared by the HTTP client integration tests."""

from __future__ import annotations

from tests.support.http_recorder import RecordingServer

import tomograph
from tomograph.ids import format_span_id, format_trace_id
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend


def client_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.CLIENT]


def check_traced_request(
    memory: MemoryBackend, recorder: RecordingServer, parent: tomograph.Span, status: int = 200
) -> tomograph.Span:
    """One client span, child of ``parent``, whose context reached the server in the headers."""
    (span,) = client_spans(memory)
    assert span.name == "GET"
    assert span.parent_id == parent.span_id
    assert span.trace_id == parent.trace_id
    assert span.tags["http.method"] == "GET"
    assert span.tags["http.status_code"] == status
    assert span.remote_endpoint == tomograph.Endpoint(None, "127.0.0.1", None, recorder.port)
    received = recorder.requests[-1].headers
    trace_hex, span_hex = format_trace_id(span.trace_id, 32), format_span_id(span.span_id)
    assert received["traceparent"] == f"00-{trace_hex}-{span_hex}-01"
    assert received["x-b3-spanid"] == span_hex
    assert "x-trace-info" not in received  # not among the default formats
    return span
