"""OpenTelemetry's API test cases, pointed at tomograph's implementation.

Not collected by the suite: ``test_otel_api_suite.py`` runs this module with pytest in a
process of its own, from the unpacked ``tests`` folder of the opentelemetry-api sdist (so
``tests.*`` here is OpenTelemetry's test package, never this repository's). Each class subclasses
an upstream case and swaps in tomograph's part where upstream uses its own: the runtime context,
the W3C trace-context and baggage propagators, the tracer provider behind the proxy.
"""

from __future__ import annotations

import unittest
from typing import Any
from unittest import mock

from opentelemetry import context, propagate
from tests.context.base_context import ContextTestCases
from tests.propagators import test_propagators as upstream_propagators
from tests.propagators import test_w3cbaggagepropagator as upstream_baggage
from tests.trace import test_proxy as upstream_proxy
from tests.trace.propagation import test_tracecontexthttptextformat as upstream_tracecontext

import tomograph
from tomograph import opentelemetry as tomograph_otel
from tomograph.propagation import Propagator as TomographPropagator
from tomograph.propagation import baggage as tomograph_baggage
from tomograph.reporting.memory import MemoryBackend


def w3c_propagator() -> tomograph_otel.Propagator:
    """tomograph's OpenTelemetry propagator speaking W3C trace context only, as upstream's
    ``TraceContextTextMapPropagator`` does."""
    return tomograph_otel.Propagator(TomographPropagator("w3c"))


class BaggagePropagator(tomograph_otel.Propagator):
    """tomograph's OpenTelemetry propagator speaking W3C baggage only, with the limits upstream's
    tests read from their propagator set to tomograph's own."""

    _MAX_PAIRS = tomograph_baggage.MAX_MEMBERS
    _MAX_HEADER_LENGTH = tomograph_baggage.MAX_BYTES
    # tomograph bounds a member only by the whole header's limit.
    _MAX_PAIR_LENGTH = tomograph_baggage.MAX_BYTES

    def __init__(self) -> None:
        super().__init__(TomographPropagator("baggage"))


# Read when pytest collects this module, before any case runs (some upstream cases reload the
# propagate module with mocks).
RUNTIME_CONTEXT_AT_START = context._RUNTIME_CONTEXT
PROPAGATORS_AT_START = list(propagate.get_global_textmap()._propagators)  # type: ignore[attr-defined]


class TestTheRunUsesTomograph(unittest.TestCase):
    """Guards every other result: the environment put tomograph's parts in place."""

    def test_the_runtime_context_is_tomographs(self) -> None:
        self.assertIsInstance(RUNTIME_CONTEXT_AT_START, tomograph_otel.RuntimeContext)

    def test_the_global_propagator_is_tomographs(self) -> None:
        # The API wraps the propagators OTEL_PROPAGATORS names in a composite.
        self.assertEqual([type(p) for p in PROPAGATORS_AT_START], [tomograph_otel.Propagator])


class TestTomographRuntimeContext(ContextTestCases.BaseTest):
    """Upstream's runtime-context contract, run against a fresh ``RuntimeContext``."""

    def setUp(self) -> None:
        super().setUp()
        patcher = mock.patch.object(context, "_RUNTIME_CONTEXT", tomograph_otel.RuntimeContext())
        patcher.start()
        self.addCleanup(patcher.stop)


class TestTomographTraceContextFormat(upstream_tracecontext.TestTraceContextFormat):
    """Upstream's W3C trace-context propagator cases, run against tomograph's propagator."""

    def setUp(self) -> None:
        super().setUp()
        patcher = mock.patch.object(upstream_tracecontext, "FORMAT", w3c_propagator())
        patcher.start()
        self.addCleanup(patcher.stop)


class TestTomographTraceContextTextMapPropagator(
    upstream_propagators.TestTraceContextTextMapPropagator
):
    """Upstream's traceparent parsing cases, run against tomograph's propagator."""

    def setUp(self) -> None:
        self.propagator = w3c_propagator()


class TestTomographBaggagePropagator(upstream_baggage.TestW3CBaggagePropagator):
    """Upstream's W3C baggage propagator cases, run against tomograph's propagator."""

    def setUp(self) -> None:
        self.propagator = BaggagePropagator()


class TestProxyWithTomographProvider(upstream_proxy.TestProxy):
    """Upstream's proxy cases with tomograph's provider as the one set: tracers taken from the
    proxy before it was set make tomograph's spans afterwards."""

    def setUp(self) -> None:
        super().setUp()
        memory = self.memory = MemoryBackend()

        class Provider(tomograph_otel.TracerProvider):
            def __init__(self) -> None:
                super().__init__(tomograph.Tracer("proxy-test", backends=[memory]))

        replaced: dict[str, Any] = {
            "TestProvider": Provider,
            "TestTracer": tomograph_otel.Tracer,
            "SpanTest": tomograph_otel.Span,
        }
        for name, value in replaced.items():
            patcher = mock.patch.object(upstream_proxy, name, value)
            patcher.start()
            self.addCleanup(patcher.stop)

    def tearDown(self) -> None:
        # The spans the cases made once the provider was set were tomograph's, and reported.
        self.assertTrue(self.memory.spans)
        super().tearDown()
