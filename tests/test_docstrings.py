"""The examples in tomograph's docstrings run and show what they say."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

CORE_MODULES = [
    "tomograph",
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
]
REPORTING_MODULES = [
    "tomograph.reporting._http",
    "tomograph.reporting._url_options",
    "tomograph.reporting._zipkin_model",
    "tomograph.reporting.errors",
    "tomograph.reporting.log",
    "tomograph.reporting.memory",
    "tomograph.reporting.otlp",
    "tomograph.reporting.scribe",
    "tomograph.reporting.stats",
    "tomograph.reporting.statsd",
    "tomograph.reporting.transport",
    "tomograph.reporting.values",
    "tomograph.reporting.zipkin",
    "tomograph.reporting.zipkin_json",
    "tomograph.reporting.zipkin_proto",
    "tomograph.encoding.zipkin_v1",
    "tomograph.encoding.zipkin_v1_json",
    "tomograph.encoding.zipkin_v1_thrift",
]
COLLECTOR_MODULES = [
    "tomograph.collector",
    "tomograph.collector.annotation_query",
    "tomograph.collector.api",
    "tomograph.collector.app",
    "tomograph.collector.coalescing",
    "tomograph.collector.dependencies",
    "tomograph.collector.ingest",
    "tomograph.collector.normalize",
    "tomograph.collector.otlp",
    "tomograph.collector.params",
    "tomograph.collector.query_gate",
    "tomograph.collector.server",
    "tomograph.collector.settings",
    "tomograph.collector.sqlite_readers",
    "tomograph.collector.sqlite_store",
    "tomograph.collector.storage",
]
INTEGRATION_MODULES = [
    "tomograph.integrations._endpoint",
    "tomograph.integrations.httpx",
    "tomograph.integrations.logging",
    "tomograph.integrations.requests",
    "tomograph.integrations.sqlalchemy",
    "tomograph.integrations.urllib",
    "tomograph.integrations.urllib3",
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
    "name", CORE_MODULES + REPORTING_MODULES + COLLECTOR_MODULES + INTEGRATION_MODULES
)
def test_docstring_examples(name: str) -> None:
    check_docstring_examples(name)


def test_every_public_name_is_documented() -> None:
    import tomograph

    undocumented = [
        name
        for name in tomograph.__all__
        if not name.startswith("__") and not (getattr(tomograph, name).__doc__ or "").strip()
    ]
    assert undocumented == []
