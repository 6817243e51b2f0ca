"""Fixtures for the OpenTelemetry tests."""

from __future__ import annotations

from collections.abc import Iterator
from unittest import mock

import pytest
from opentelemetry import context as context_api

from tomograph.opentelemetry import RuntimeContext


@pytest.fixture
def runtime_context() -> Iterator[RuntimeContext]:
    """tomograph's runtime context as OpenTelemetry's, for this test only (as ``install()``
    sets it, without leaving it installed for the tests after)."""
    bridge = RuntimeContext()
    with mock.patch.object(context_api, "_RUNTIME_CONTEXT", bridge):
        yield bridge
