"""Fixtures for the integration tests: a real HTTP server that records what it receives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.http_recorder import RecordingServer, recording_server


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    with recording_server() as server:
        yield server
