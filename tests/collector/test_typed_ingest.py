"""Uploads decoded through msgspec (the typed path) are answered and stored as without it.

Each hostile body goes to two collectors, one with the typed path and one without: the same
status and message, never a server error, and the same spans stored.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from tests.encoding.test_typed_json import HOSTILE_BODIES
from tests.support.collector_fuzz import call
from tests.support.servers import in_ci

from tomograph.collector.app import create_app
from tomograph.collector.settings import CollectorSettings
from tomograph.encoding import typed_json


def _upload(tmp_path: Path, body: bytes) -> tuple[int, bytes, int, bytes]:
    """(status, answer) of posting ``body``, then (status, answer) of reading its trace."""
    app = create_app(CollectorSettings(db_path=tmp_path / "spans.db"))
    try:
        headers = {"content-type": "application/json"}
        status, answer = asyncio.run(call(app, "POST", "/api/v2/spans", body=body, headers=headers))
        read, trace = asyncio.run(call(app, "GET", "/api/v2/trace/00000000000000a1"))
    finally:
        app.state.store.close()
    return status, answer, read, trace


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=lambda body: repr(body[:70]))
def test_hostile_uploads_are_answered_and_stored_as_without_msgspec(
    tmp_path: Path, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not typed_json.ACCELERATED:
        if in_ci():
            pytest.fail("msgspec is not installed: the test extra includes it")
        pytest.skip("msgspec is not installed: there is one path only")
    typed = _upload(tmp_path / "typed", body)
    monkeypatch.setattr(typed_json, "ACCELERATED", False)
    careful = _upload(tmp_path / "careful", body)
    assert typed[0] < 500
    assert typed == careful
