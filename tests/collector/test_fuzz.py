"""Mutated bodies on every ingest route and mutated parameters on every query route: no answer
is a server error.

The normal suite sends a modest number per route; ``TOMOGRAPH_FUZZ_BODIES=20000`` (``make
fuzz``) sends that many per route and prints the statuses answered per route.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from tests.support.collector_fuzz import call, fuzz

from tomograph.collector.app import create_app
from tomograph.collector.settings import CollectorSettings

COUNT = int(os.environ.get("TOMOGRAPH_FUZZ_BODIES", "150"))
SEED = int(os.environ.get("TOMOGRAPH_FUZZ_SEED", "10"))


def test_no_mutated_request_gets_a_server_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(CollectorSettings(db_path=tmp_path / "fuzz.db", max_age=None))
    try:
        report = asyncio.run(fuzz(app, COUNT, SEED))
    finally:
        app.state.store.close()
    if COUNT > 1000:
        with capsys.disabled():
            print(f"\n{report.summary()}")
    assert min(report.requests.values()) == COUNT
    assert report.server_errors() == 0, "\n\n".join(report.failures)


def test_stray_bytes_in_the_query_of_an_unknown_path_get_a_json_404(tmp_path: Path) -> None:
    # found by the fuzzer: uvicorn's h11 refuses such a request line, other servers pass it on
    app = create_app(CollectorSettings(db_path=tmp_path / "raw.db"))
    try:
        status, body = asyncio.run(call(app, "GET", "/api/v2/nothing", query=b"a=\xed\xa0"))
        assert (status, json.loads(body)) == (404, {"error": "no such resource: /api/v2/nothing"})
        status, _ = asyncio.run(call(app, "DELETE", "/api/v2/services", query=b"\xff"))
        assert status == 405
    finally:
        app.state.store.close()
