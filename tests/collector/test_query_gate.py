"""Queries under load: a bounded line, then 503 with Retry-After; ingest never waits for them."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from tests.collector.conftest import ServedApp
from tests.support.collector import http, make_span, now_us

from tomograph.collector import sqlite_links, sqlite_store
from tomograph.collector.query_gate import Overloaded, QueryGate
from tomograph.collector.sqlite_store import SqliteSpanStore


class StuckStore(SqliteSpanStore):
    """A store whose service list hangs until released, like a query over a huge window."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_age=None)
        self.release = threading.Event()
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def service_names(self) -> list[str]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            assert self.release.wait(60)
            return super().service_names()
        finally:
            with self._lock:
                self.running -= 1


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    connection = HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/" + url.split("/", 3)[3])
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def post(app: ServedApp, spans: Sequence[dict[str, Any]]) -> int:
    status, _ = http(
        "POST",
        f"{app.url}/api/v2/spans",
        json.dumps(list(spans)).encode(),
        {"Content-Type": "application/json"},
    )
    return status


def test_fifty_stuck_queries_get_a_bounded_line_and_ingest_goes_on(tmp_path: Path) -> None:
    # Each query used to take a thread of the pool ingest shares: 40 stuck queries and a
    # batch waited behind them; and the 41st query waited without end.
    store = StuckStore(tmp_path / "stuck.db")
    with ServedApp(tmp_path, store=store, query_timeout=60.0) as app:
        gate = app.app.state.query_gate
        answers: list[tuple[int, dict[str, str], bytes]] = []
        lock = threading.Lock()

        def ask() -> None:
            answer = get(f"{app.url}/api/v2/services")
            with lock:
                answers.append(answer)

        askers = [threading.Thread(target=ask) for _ in range(50)]
        for asker in askers:
            asker.start()
        limit = app.settings.max_concurrent_queries + app.settings.max_queued_queries
        wait_until(lambda: len(answers) == 50 - limit, "the queries beyond the line are refused")
        assert store.running == app.settings.max_concurrent_queries
        assert gate._queued == app.settings.max_queued_queries

        span = make_span("ab" * 16, "1" * 16, service="shop", timestamp=now_us())
        assert post(app, [span]) == 202  # while every query slot is taken

        store.release.set()
        for asker in askers:
            asker.join(30)
        statuses = Counter(status for status, _, _ in answers)
        assert statuses == {503: 50 - limit, 200: limit}
        for status, headers, body in answers:
            if status == 503:
                assert int(headers["retry-after"]) >= 1
                assert "the query line is full" in json.loads(body)["error"]
            else:
                assert json.loads(body) == ["shop"]
        assert store.most_running == app.settings.max_concurrent_queries


def test_a_query_running_past_the_timeout_is_answered_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links_of = sqlite_links.links_of

    def slow_links_of(spans: list[Any]) -> Any:
        if spans:
            time.sleep(0.5)  # one trace alone outlasts the query's budget
        return links_of(spans)

    # the links are left for the query to compute (the store's background pass would too)
    monkeypatch.setattr(sqlite_store, "_LINK_INTERVAL", 3600.0)
    with ServedApp(tmp_path, query_timeout=0.3) as app:
        spans = [
            make_span(f"{n:032x}", "1" * 16, service="web", remote="db", kind="CLIENT")
            for n in range(1, 4)
        ]
        assert post(app, spans) == 202
        assert post(app, spans) == 202  # a retry reaches stored traces: their links wait
        monkeypatch.setattr(sqlite_links, "links_of", slow_links_of)
        end = now_us() // 1000 + 1000
        status, headers, body = get(f"{app.url}/api/v2/dependencies?endTs={end}")
        assert status == 503
        assert "retry-after" in headers
        assert "ran longer than 0.3 s" in json.loads(body)["error"]
        status, _, _ = get(f"{app.url}/api/v2/services")  # the next query runs normally
        assert status == 200


def test_a_closed_gate_refuses_at_once() -> None:
    gate = QueryGate(running=1, waiting=4, max_wait=60.0)
    gate.close()
    with pytest.raises(Overloaded, match="shutting down"):
        anyio.run(gate.run, lambda: 1)


def test_a_query_waiting_longer_than_max_wait_is_refused() -> None:
    gate = QueryGate(running=1, waiting=4, max_wait=0.1)
    started, release = threading.Event(), threading.Event()
    outcome: list[object] = []

    def stuck() -> None:
        started.set()
        release.wait(20)

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(gate.run, stuck)
            await anyio.to_thread.run_sync(started.wait, 20)  # it holds the only turn
            try:
                await gate.run(lambda: 2)
            except Overloaded as refused:
                outcome.append(refused)
            release.set()

    anyio.run(main)
    [refused] = outcome
    assert isinstance(refused, Overloaded) and "within 0.1 s" in str(refused)


class StuckLinks(SqliteSpanStore):
    """A store whose dependency links take until released, and that counts computations."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_age=None)
        self.release = threading.Event()
        self.computed: list[tuple[int, int]] = []

    def dependencies(self, end_ts: int, lookback: int) -> list[Any]:
        self.computed.append((end_ts, lookback))
        assert self.release.wait(60)
        return super().dependencies(end_ts, lookback)


def test_clients_asking_for_links_within_a_minute_share_one_computation(tmp_path: Path) -> None:
    # With one query turn and no line at all, the seven that wait for the first one's links
    # must not need a turn of their own.
    store = StuckLinks(tmp_path / "links.db")
    with ServedApp(tmp_path, store=store, max_concurrent_queries=1, max_queued_queries=0) as app:
        span = make_span("ab" * 16, "1" * 16, service="web", remote="db", kind="CLIENT")
        assert post(app, [span]) == 202
        minute = now_us() // 60_000_000 * 60_000 + 60_000
        answers: list[tuple[int, dict[str, str], bytes]] = []

        def ask(offset: int) -> None:  # "the last hour, now", a few milliseconds apart
            answers.append(get(f"{app.url}/api/v2/dependencies?endTs={minute + offset}"))

        askers = [threading.Thread(target=ask, args=(1 + n * 7,)) for n in range(8)]
        for asker in askers:
            asker.start()
        wait_until(lambda: len(app.server.server_state.tasks) >= 8, "all eight are being served")
        store.release.set()
        for asker in askers:
            asker.join(30)
        assert [status for status, _, _ in answers] == [200] * 8
        assert {body for _, _, body in answers} == {
            b'[{"parent": "web", "child": "db", "callCount": 1, "errorCount": 0}]'
        }
        assert len(store.computed) == 1


def test_links_include_every_batch_acknowledged_before_the_request(tmp_path: Path) -> None:
    with ServedApp(tmp_path) as app:
        end = now_us() // 1000 + 1000
        url = f"{app.url}/api/v2/dependencies?endTs={end}"
        first = make_span("ab" * 16, "1" * 16, service="web", remote="db", kind="CLIENT")
        assert post(app, [first]) == 202
        assert json.loads(get(url)[2])[0]["callCount"] == 1
        second = make_span("cd" * 16, "1" * 16, service="web", remote="db", kind="CLIENT")
        assert post(app, [second]) == 202
        assert json.loads(get(url)[2])[0]["callCount"] == 2  # not the links kept from before
