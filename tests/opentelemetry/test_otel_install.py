"""Installing tomograph as OpenTelemetry's SDK, each way a user does, in a fresh interpreter
(OpenTelemetry's API sets its provider once per process): ``install()``, the
``OTEL_PYTHON_TRACER_PROVIDER``/``OTEL_PYTHON_CONTEXT``/``OTEL_PROPAGATORS`` entry points, and
``tomograph run`` with spans arriving at a real ``tomograph serve``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from support import traced_programs
from support.collector import running_collector, wait_for_traces
from support.traced_programs import PYTHON, environment, run

pytestmark = pytest.mark.integration


def run_json(source: str | tuple[str, ...], tmp_path: Path, **variables: str) -> dict[str, Any]:
    """Run ``source`` (parts, each dedented) in a fresh interpreter; it prints one JSON document
    as its last line."""
    parts = (source,) if isinstance(source, str) else source
    program = "\n".join(textwrap.dedent(part) for part in parts)
    result = traced_programs.run_python(program, tmp_path, environment(**variables))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    document["stderr"] = result.stderr
    return document


PRELUDE = """
import json
import tomograph
from tomograph.reporting.memory import MemoryBackend
memory = MemoryBackend()
tomograph.configure(service="orders", backends=[memory], environ={})
"""


def test_install_makes_every_tracer_report_through_tomograph(tmp_path: Path) -> None:
    # A library that took its tracer at import, before install(), is the common case.
    source = (
        """
    from opentelemetry import trace, propagate
    library_tracer = trace.get_tracer("early.library")
    """,
        PRELUDE,
        """
    import tomograph.opentelemetry as tomograph_otel
    provider = tomograph_otel.install()
    again = tomograph_otel.install()
    with library_tracer.start_as_current_span("library work"):
        with tomograph.span("native"):
            headers = {}
            propagate.inject(headers)
    print(json.dumps({
        "same provider": provider is again is trace.get_tracer_provider(),
        "propagator": type(propagate.get_global_textmap()).__name__,
        "spans": sorted(s.name for s in memory.spans),
        "one trace": len({s.trace_id for s in memory.spans}) == 1,
        "headers": sorted(headers),
        "patched": tomograph_otel.patched(),
    }))
    """,
    )
    result = run_json(source, tmp_path)
    assert result["same provider"] is True
    assert result["propagator"] == "Propagator"
    assert result["spans"] == ["library work", "native"]
    assert result["one trace"] is True
    assert "traceparent" in result["headers"] and "x-b3-traceid" in result["headers"]
    assert result["patched"] is True


def test_install_refuses_when_the_sdk_is_already_the_provider(tmp_path: Path) -> None:
    source = """
    import json
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
    import tomograph
    import tomograph.opentelemetry as tomograph_otel
    try:
        tomograph_otel.install()
        outcome = "installed"
    except tomograph.ConfigurationError as error:
        outcome = str(error)
    print(json.dumps({"outcome": outcome, "patch": tomograph_otel.patch()}))
    """
    result = run_json(source, tmp_path)
    assert "already has a tracer provider" in result["outcome"]
    assert "opentelemetry.sdk.trace.TracerProvider" in result["outcome"]
    assert result["patch"] is False
    assert "tomograph is not OpenTelemetry's SDK here" in result["stderr"]


def test_the_provider_entry_point_and_its_propagator(tmp_path: Path) -> None:
    source = (
        PRELUDE,
        """
    from opentelemetry import trace, propagate, context
    from tomograph.opentelemetry import RuntimeContext
    with trace.get_tracer("lib").start_as_current_span("from env"):
        inside = tomograph.current_span().name
    print(json.dumps({
        "provider": type(trace.get_tracer_provider()).__module__,
        "propagator": type(propagate.get_global_textmap()).__name__,
        "bridge": isinstance(context._RUNTIME_CONTEXT, RuntimeContext),
        "inside": inside,
        "spans": [s.name for s in memory.spans],
    }))
    """,
    )
    result = run_json(source, tmp_path, OTEL_PYTHON_TRACER_PROVIDER="tomograph")
    assert result == {
        "provider": "tomograph.opentelemetry._tracer",
        "propagator": "Propagator",
        "bridge": True,
        "inside": "from env",
        "spans": ["from env"],
        "stderr": result["stderr"],
    }
    # OTEL_PROPAGATORS chosen by the user is left alone
    chosen = run_json(
        source, tmp_path, OTEL_PYTHON_TRACER_PROVIDER="tomograph", OTEL_PROPAGATORS="tracecontext"
    )
    assert chosen["propagator"] == "CompositePropagator"


def test_the_context_and_propagator_entry_points(tmp_path: Path) -> None:
    source = (
        PRELUDE,
        """
    from opentelemetry import context, propagate, trace
    from tomograph.opentelemetry import Propagator, RuntimeContext
    with tomograph.span("native") as native:
        seen = trace.get_current_span().get_span_context().span_id == native.span_id
    print(json.dumps({
        "bridge": isinstance(context._RUNTIME_CONTEXT, RuntimeContext),
        "seen": seen,
        "propagators": [type(p).__name__ for p in propagate.get_global_textmap()._propagators],
    }))
    """,
    )
    result = run_json(
        source, tmp_path, OTEL_PYTHON_CONTEXT="tomograph", OTEL_PROPAGATORS="tomograph"
    )
    assert result["bridge"] is True
    assert result["seen"] is True
    assert result["propagators"] == ["Propagator"]


#: A program instrumented with the OpenTelemetry API only: it never imports tomograph.
OTEL_ONLY_PROGRAM = """
from opentelemetry import trace

tracer = trace.get_tracer("billing.jobs", "1.0")


@tracer.start_as_current_span("nightly invoice run")
def run():
    for customer in ("acme", "globex"):
        with tracer.start_as_current_span("invoice", attributes={"customer": customer}) as span:
            span.add_event("rendered", {"pages": 2})


run()
"""


def test_tomograph_run_reports_a_program_that_only_uses_the_otel_api(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(OTEL_ONLY_PROGRAM)
    with running_collector(tmp_path) as base_url:
        env = environment(
            TOMOGRAPH_SERVICE="billing",
            TOMOGRAPH_BACKENDS=f"zipkin+http://{base_url.removeprefix('http://')}",
        )
        result = run(["--", PYTHON, str(program)], tmp_path, env)
        assert result.returncode == 0, result.stderr
        traces = wait_for_traces(base_url, 1, "serviceName=billing")
    assert len(traces) == 1
    spans = {(span["name"], span.get("tags", {}).get("customer")): span for span in traces[0]}
    root = spans[("nightly invoice run", None)]
    assert root["localEndpoint"]["serviceName"] == "billing"
    for customer in ("acme", "globex"):
        invoice = spans[("invoice", customer)]
        assert invoice["parentId"] == root["id"]
        assert invoice["tags"]["otel.scope.name"] == "billing.jobs"
        assert [a["value"] for a in invoice["annotations"]] == ['{"rendered": {"pages": 2}}']


def test_tomograph_run_leaves_the_sdk_when_disabled(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(
        "from opentelemetry import trace\nprint(type(trace.get_tracer_provider()).__name__)\n"
    )
    env = environment(TOMOGRAPH_DISABLE="opentelemetry", TOMOGRAPH_BACKENDS="")
    result = run(["--", PYTHON, str(program)], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ProxyTracerProvider"
