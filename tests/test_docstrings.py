"""The examples in tomograph's docstrings run and show what they say."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

CORE_MODULES = [
    "tomograph",
    "tomograph._cache",
    "tomograph.classic",
    "tomograph.config",
    "tomograph.clock",
    "tomograph.context",
    "tomograph.errors",
    "tomograph.ids",
    "tomograph.model",
    "tomograph.sampling",
    "tomograph.span",
    "tomograph.text",
    "tomograph.tracer",
    "tomograph.urls",
]
ENCODING_MODULES = [
    "tomograph.encoding._zipkin_model",
    "tomograph.encoding.normalize",
    "tomograph.encoding.otlp",
    "tomograph.encoding.values",
    "tomograph.encoding.zipkin_json",
    "tomograph.encoding.zipkin_proto",
    "tomograph.encoding.zipkin_v1",
    "tomograph.encoding.zipkin_v1_json",
    "tomograph.encoding.zipkin_v1_thrift",
]
REPORTING_MODULES = [
    "tomograph.reporting._http",
    "tomograph.reporting._url_options",
    "tomograph.reporting.log",
    "tomograph.reporting.memory",
    "tomograph.reporting.otlp",
    "tomograph.reporting.scribe",
    "tomograph.reporting.stats",
    "tomograph.reporting.statsd",
    "tomograph.reporting.transport",
    "tomograph.reporting.zipkin",
]
COLLECTOR_MODULES = [
    "tomograph.collector",
    "tomograph.collector.annotation_query",
    "tomograph.collector.api",
    "tomograph.collector.app",
    "tomograph.collector.coalescing",
    "tomograph.collector.dependencies",
    "tomograph.collector.ingest",
    "tomograph.collector.params",
    "tomograph.collector.query_gate",
    "tomograph.collector.server",
    "tomograph.collector.settings",
    "tomograph.collector.span_fields",
    "tomograph.collector.sqlite_readers",
    "tomograph.collector.sqlite_store",
    "tomograph.collector.storage",
]
INTEGRATION_MODULES = [
    "tomograph.integrations.aiohttp",
    "tomograph.integrations.http_client",
    "tomograph.integrations.http_server",
    "tomograph.integrations.http_status",
    "tomograph.integrations.httpx",
    "tomograph.integrations.logging",
    "tomograph.integrations.psycopg",
    "tomograph.integrations.psycopg2",
    "tomograph.integrations.redis",
    "tomograph.integrations.requests",
    "tomograph.integrations.sqlalchemy",
    "tomograph.integrations.urllib",
    "tomograph.integrations.urllib3",
    "tomograph.opentelemetry._propagator",
    "tomograph.opentelemetry._span",
    "tomograph.opentelemetry._tracer",
    "tomograph.opentracing",
    "tomograph.opentracing._span",
    "tomograph.opentracing._tracer",
    "tomograph.opentracing.binary",
    "tomograph.opentracing.scope_managers",
    "tomograph.tornado",
    "tomograph.tornado.propagators",
    "tomograph.tornado.reporters",
    "tomograph.eventlet.api",
    "tomograph.eventlet._applog",
]


@pytest.mark.parametrize(
    "name",
    CORE_MODULES + ENCODING_MODULES + REPORTING_MODULES + COLLECTOR_MODULES + INTEGRATION_MODULES,
)
def test_docstring_examples(name: str) -> None:
    try:
        check_docstring_examples(name)
    finally:
        if name.startswith("tomograph.opentelemetry"):
            # A TracerProvider made in an example installs the context bridge: take it out
            # again, as the OpenTelemetry tests do.
            from tomograph.opentelemetry import uninstall

            uninstall()


def test_every_public_name_is_documented() -> None:
    import tomograph

    undocumented = [
        name
        for name in tomograph.__all__
        if not name.startswith("__") and not (getattr(tomograph, name).__doc__ or "").strip()
    ]
    assert undocumented == []
