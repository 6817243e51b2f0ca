"""Hostile and extreme input over real HTTP: every answer is a clear 4xx (or a retryable 503),
never a crash, always with the security headers; limits hold."""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.collector.conftest import ServedApp
from tests.support.collector import make_span

from tomograph.collector.app import SECURITY_HEADERS
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import DependencyLink, SpanDict

T1 = "4e441824ec2b6a44"
T2 = "5af7183fb1d4cf5f"
JSON = {"Content-Type": "application/json"}


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    app: ServedApp,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    connection = http.client.HTTPConnection(app.settings.host, app.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return Answer(connection.getresponse())
    finally:
        connection.close()


def post_spans(app: ServedApp, spans: Sequence[SpanDict], **headers: str) -> Answer:
    return request(app, "POST", "/api/v2/spans", json.dumps(spans).encode(), {**JSON, **headers})


def assert_security_headers(answer: Answer) -> None:
    for name, value in SECURITY_HEADERS:
        assert answer.headers[name.decode()] == value.decode(), (answer.status, name)


# -- OTLP/JSON text protobuf cannot hold ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        rb'{"resourceSpans":[{"resource":"\ud800"}]}',  # a string where a message is expected
        rb'{"resourceSpans":[{"\ud800":1}]}',  # in a key
        rb'{"resourceSpans":[{"scopeSpans":[{"spans":[{"\udfff":{}}]}]}]}',
        rb'{"resourceSpans":[{"resource":{"attributes":[{"key":"k",'
        rb'"value":{"stringValue":"a\ud800"}}]}}]}',
    ],
)
def test_otlp_json_with_lone_surrogates_gets_400(served: ServedApp, body: bytes) -> None:
    answer = request(served, "POST", "/v1/traces", body, JSON)
    assert answer.status == 400
    assert "lone surrogate" in answer.json()["error"]


# -- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_gets_503_with_retry_after_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    store = SqliteSpanStore(tmp_path / "full.db", max_age=None)
    with ServedApp(tmp_path, store=store) as app:
        assert post_spans(app, [make_span(T1, "0000000000000001")]).status == 202
        # SQLite's page cap fails writes the way a full disk does (SQLITE_FULL)
        pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
        store._writer.execute(f"PRAGMA max_page_count = {pages + 2}")
        spans = [make_span(T2, f"{i + 1:016x}", tags={"v": f"{i:05d}" * 2000}) for i in range(50)]
        answer = post_spans(app, spans)
        assert answer.status == 503
        assert answer.headers["Retry-After"].isdigit()
        assert "full" in answer.json()["error"]
        assert_security_headers(answer)
        # what was acknowledged is there, the refused batch left nothing half-written
        assert len(request(app, "GET", f"/api/v2/trace/{T1}").json()) == 1
        assert request(app, "GET", f"/api/v2/trace/{T2}").status == 404
        assert store.span_count() == 1
        # once there is room again, the sender's retry lands whole
        store._writer.execute("PRAGMA max_page_count = 1073741823")
        assert post_spans(app, spans).status == 202
        assert len(request(app, "GET", f"/api/v2/trace/{T2}").json()) == 50


# -- every answer carries the security headers --------------------------------------------------


class BrokenStore(SqliteSpanStore):
    """A store with a bug in one query: the collector must still answer JSON 500, with headers."""

    def dependencies(self, end_ts: int, lookback: int) -> list[DependencyLink]:
        raise ZeroDivisionError("a bug")


@pytest.fixture
def broken(tmp_path: Path) -> Any:
    with ServedApp(
        tmp_path, store=BrokenStore(tmp_path / "broken.db"), token="s3cret", max_body_bytes=1000
    ) as app:
        yield app


AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("status", "method", "path", "body", "headers"),
    [
        (200, "GET", "/api/v2/services", None, AUTH),
        (200, "GET", "/", None, {}),
        (202, "POST", "/api/v2/spans", b"[]", {**AUTH, **JSON}),
        (400, "GET", "/api/v2/traces?limit=x", None, AUTH),
        (401, "GET", "/api/v2/services", None, {}),
        (403, "GET", "/api/v2/services", None, {**AUTH, "Origin": "http://evil.example"}),
        (404, "GET", "/api/v2/nothing", None, AUTH),
        (404, "GET", "/ui/nothing.js", None, {}),
        (405, "DELETE", "/api/v2/spans", None, AUTH),
        (413, "POST", "/api/v2/spans", b" " * 2000, {**AUTH, **JSON}),
        (415, "POST", "/api/v2/spans", b"[]", {**AUTH, "Content-Type": "text/plain"}),
        (500, "GET", "/api/v2/dependencies?endTs=1", None, AUTH),
    ],
)
def test_every_status_carries_the_security_headers(
    broken: ServedApp,
    status: int,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    answer = request(broken, method, path, body, headers)
    assert answer.status == status
    assert_security_headers(answer)
    if path.startswith("/api/") and status >= 400:
        assert answer.headers["Content-Type"] == "application/json"
        assert "error" in answer.json()


def test_a_handler_bug_answers_json_500_without_details(broken: ServedApp) -> None:
    answer = request(broken, "GET", "/api/v2/dependencies?endTs=1", headers=AUTH)
    assert answer.status == 500
    assert "a bug" not in answer.json()["error"]
    assert request(broken, "GET", "/health").status == 200  # and keeps serving
