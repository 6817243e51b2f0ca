"""The runtime context bridge's first use from several threads at once.

The bridge binds OpenTelemetry's context keys and its span classes on first use (they cannot be
imported while OpenTelemetry's context package is loading it). A thread that finds the keys
bound must find everything else bound too, or OpenTelemetry's ``get_current()`` raises in the
application's request.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from opentelemetry import baggage as otel_baggage

import tomograph
from tomograph.opentelemetry import RuntimeContext, _context
from tomograph.reporting.memory import MemoryBackend

UNBOUND = {
    "SPAN_KEY": "",
    "BAGGAGE_KEY": "",
    "SUPPRESS_KEY": "",
    "SUPPRESS_HTTP_KEY": "",
    "_OtelSpan": None,
    "_RemoteParent": None,
    "_trace_span_class": None,
    "_view": None,
    "_parent_of": None,
}


def test_a_thread_using_the_bridge_while_another_binds_it_gets_a_working_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in UNBOUND.items():
        monkeypatch.setattr(_context, name, value)
    # Hold the first binding thread in the middle of binding: reading the API's baggage key
    # waits until the main thread has used the bridge.
    key = otel_baggage._BAGGAGE_KEY
    monkeypatch.delattr(otel_baggage, "_BAGGAGE_KEY")
    binding, release = threading.Event(), threading.Event()

    def baggage_key(name: str) -> Any:
        if name != "_BAGGAGE_KEY":
            raise AttributeError(name)
        if threading.current_thread() is not threading.main_thread():
            binding.set()
            release.wait(10)
        return key

    monkeypatch.setattr(otel_baggage, "__getattr__", baggage_key, raising=False)
    bridge = RuntimeContext()
    first = threading.Thread(target=bridge.get_current)
    first.start()
    try:
        assert binding.wait(10)
        with tomograph.Tracer("shop", backends=[MemoryBackend()]).span("request") as span:
            current = bridge.get_current()
    finally:
        release.set()
        first.join(10)
    shown = current[_context.SPAN_KEY]
    assert shown.get_span_context().span_id == span.span_id
