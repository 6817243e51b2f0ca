"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tomograph
from tomograph import config
from tomograph.reporting.memory import MemoryBackend


@pytest.fixture
def memory() -> Iterator[MemoryBackend]:
    """The default tracer, configured to keep spans in memory; reset afterwards."""
    backend = MemoryBackend()
    tomograph.configure(service="test-service", backends=[backend], environ={})
    yield backend
    config.reset()


@pytest.fixture
def tracer(memory: MemoryBackend) -> tomograph.Tracer:
    """The default tracer (reporting into ``memory``)."""
    return tomograph.get_tracer()
