"""The log backend."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

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


PRINT_A_SPAN = """
import tomograph
tomograph.configure(service="shop", backends=["log://"])
with tomograph.span("pay"):
    pass
"""


def test_without_logging_set_up_spans_are_written_to_stderr() -> None:
    # Python shows only warnings when logging is not configured: an INFO line would vanish.
    result = subprocess.run(
        [sys.executable, "-c", PRINT_A_SPAN], capture_output=True, text=True, check=True
    )
    (line,) = result.stderr.splitlines()
    assert json.loads(line)["name"] == "pay"
    assert result.stdout == ""


def test_with_logging_set_up_spans_follow_its_configuration() -> None:
    configured = "import logging; logging.basicConfig(level=logging.WARNING)\n" + PRINT_A_SPAN
    result = subprocess.run(
        [sys.executable, "-c", configured], capture_output=True, text=True, check=True
    )
    assert result.stderr == ""  # the application chose to hide INFO
    shown = configured.replace("WARNING", "INFO").replace(
        "basicConfig(", "basicConfig(format='%(name)s %(message)s', "
    )
    result = subprocess.run(
        [sys.executable, "-c", shown], capture_output=True, text=True, check=True
    )
    logger, _, line = result.stderr.strip().partition(" ")
    assert (logger, json.loads(line)["name"]) == ("tomograph.spans", "pay")
