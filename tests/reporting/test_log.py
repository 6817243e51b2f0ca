"""The log backend."""

from __future__ import annotations

import json
import logging

import pytest

from tomograph import Tracer
from tomograph.reporting.log import LogBackend


def test_logs_one_json_line_per_span(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tomograph.spans")
    tracer = Tracer("shop", backends=[LogBackend()])
    with tracer.span("pay", kind="client", tags={"ok": True, "n": 2}) as span:
        span.annotate("sent")
    (record,) = [r for r in caplog.records if r.name == "tomograph.spans"]
    data = json.loads(record.getMessage())
    assert data["name"] == "pay"
    assert data["kind"] == "CLIENT"
    assert int(data["traceId"], 16) == span.trace_id and len(data["traceId"]) in (16, 32)
    assert data["id"] == f"{span.span_id:016x}"
    assert data["tags"] == {"ok": "true", "n": "2"}
    assert data["annotations"][0]["value"] == "sent"
    assert data["localEndpoint"] == {"serviceName": "shop"}


def test_formats_nothing_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tomograph.spans")
    tracer = Tracer("shop", backends=[LogBackend(level="debug")])
    with tracer.span("quiet"):
        pass
    assert [r for r in caplog.records if r.name == "tomograph.spans"] == []
