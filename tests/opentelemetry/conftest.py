"""Fixtures for the OpenTelemetry tests.

``memory``, ``native`` and ``otel``: a tomograph tracer reporting into memory, and an
OpenTelemetry tracer of a provider on it, with the context bridge installed for the test only
(OpenTelemetry's API sets its provider once per process: the provider is used directly, never
set globally). ``memory`` is the suite's (the default tracer reports into it too).
"""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace

import tomograph
from tomograph.opentelemetry import RuntimeContext, TracerProvider
from tomograph.opentelemetry._context import uninstall_context
from tomograph.reporting.memory import MemoryBackend


@pytest.fixture
def runtime_context() -> Iterator[RuntimeContext]:
    """tomograph's runtime context as OpenTelemetry's, for this test only (as ``install()``
    sets it, without leaving it installed for the tests after)."""
    bridge = RuntimeContext()
    with mock.patch.object(context_api, "_RUNTIME_CONTEXT", bridge):
        yield bridge


@pytest.fixture
def native(memory: MemoryBackend) -> tomograph.Tracer:
    return tomograph.Tracer("shop", backends=[memory])


@pytest.fixture
def otel(native: tomograph.Tracer) -> Iterator[trace.Tracer]:
    provider = TracerProvider(tracer=native)
    try:
        yield provider.get_tracer("shop.library")
    finally:
        uninstall_context()
