"""The collector served from a background thread, and how its URL is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.support.collector import http

from tomograph.collector.server import BackgroundCollector, _url_host
from tomograph.collector.settings import CollectorSettings


def test_a_background_collector_answers_on_its_url_until_stopped(tmp_path: Path) -> None:
    collector = BackgroundCollector(CollectorSettings(port=0, db_path=tmp_path / "t.db"))
    collector.start()
    try:
        assert collector.url.startswith("http://127.0.0.1:")
        assert not collector.url.endswith(":0")
        status, body = http("GET", f"{collector.url}/health")
        assert (status, json.loads(body)) == (200, {"status": "UP"})
    finally:
        collector.stop()
    assert not collector._thread.is_alive()


@pytest.mark.parametrize(
    ("host", "written"),
    [("127.0.0.1", "127.0.0.1"), ("localhost", "localhost"), ("::1", "[::1]")],
)
def test_an_ipv6_address_is_bracketed_in_urls(host: str, written: str) -> None:
    assert _url_host(host) == written
