"""A collector killed with SIGKILL during ingest loses no acknowledged span, and reopens cleanly.

A 202 (or OTLP's 200) is sent only once the batch is committed; SQLite's write-ahead log keeps
a committed transaction through the death of the process (not through a power loss with
``synchronous=NORMAL``, which the docs say). ``TOMOGRAPH_KILL9_ROUNDS`` sets the number of
kills (3 by default; more for a manual run).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from http.client import HTTPConnection, HTTPException
from pathlib import Path

from tests.support.collector import make_span, now_us
from tests.support.servers import free_port, wait_for_port

ROUNDS = int(os.environ.get("TOMOGRAPH_KILL9_ROUNDS", "3"))
CLIENTS = 4
TRACES_PER_BATCH = 5
SPANS_PER_TRACE = 4


def start_collector(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port), "--db", str(db)]
    with log.open("ab") as output:
        process = subprocess.Popen(
            [*argv, "--keep-forever"], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_for_port(port)
    except TimeoutError:
        process.kill()
        raise AssertionError(f"the collector did not start:\n{log.read_text()}") from None
    return process, port


def batch(round_no: int, client: int, number: int) -> list[dict[str, object]]:
    spans = []
    for trace in range(TRACES_PER_BATCH):
        # unique in the low 64 bits too, which the store groups traces by
        trace_id = f"{round_no + 1:016x}{round_no:04x}{client:04x}{number:06x}{trace:02x}"
        for span in range(1, SPANS_PER_TRACE + 1):
            parent = f"{span - 1:016x}" if span > 1 else None
            spans.append(make_span(trace_id, f"{span:016x}", parent_id=parent, service="shop"))
    return spans


class Ingest:
    """Clients posting batches until the collector dies; remembers what was acknowledged."""

    def __init__(self, port: int, round_no: int) -> None:
        self.port = port
        self.round_no = round_no
        self.acknowledged: dict[str, set[str]] = {}
        self.refused: Counter[int] = Counter()
        self.batches = 0
        self.changed = threading.Condition()
        self.threads = [threading.Thread(target=self.post, args=(n,)) for n in range(CLIENTS)]

    def post(self, client: int) -> None:
        connection = HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            self.post_on(connection, client)
        finally:
            connection.close()

    def post_on(self, connection: HTTPConnection, client: int) -> None:
        for number in range(1_000_000):
            spans = batch(self.round_no, client, number)
            try:
                connection.request(
                    "POST",
                    "/api/v2/spans",
                    json.dumps(spans).encode(),
                    {"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
            except (OSError, HTTPException):
                return  # the collector went away: this batch was never acknowledged
            if response.status != 202:
                with self.changed:
                    self.refused[response.status] += 1
                return
            with self.changed:
                for span in spans:
                    self.acknowledged.setdefault(str(span["traceId"]), set()).add(str(span["id"]))
                self.batches += 1
                self.changed.notify_all()

    def run_until(self, batches: int) -> None:
        for thread in self.threads:
            thread.start()
        with self.changed:
            assert self.changed.wait_for(lambda: self.batches >= batches, 60)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(30)


def stored_span_ids(port: int, trace_ids: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    connection = HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for start in range(0, len(trace_ids), 200):
            chunk = trace_ids[start : start + 200]
            query = ",".join(chunk if len(chunk) > 1 else chunk * 2)
            connection.request("GET", f"/api/v2/traceMany?traceIds={query}")
            response = connection.getresponse()
            assert response.status == 200, response.read()
            for trace in json.loads(response.read()):
                for span in trace:
                    found.setdefault(span["traceId"], set()).add(span["id"])
    finally:
        connection.close()
    return found


def lost(port: int, acknowledged: dict[str, set[str]]) -> int:
    stored = stored_span_ids(port, sorted(acknowledged))
    return sum(len(ids - stored.get(trace_id, set())) for trace_id, ids in acknowledged.items())


def test_sigkill_during_ingest_loses_no_acknowledged_span(tmp_path: Path) -> None:
    db, log = tmp_path / "traces.db", tmp_path / "collector.log"
    acknowledged: dict[str, set[str]] = {}
    started = now_us()
    for round_no in range(ROUNDS):
        process, port = start_collector(db, log)
        try:
            assert lost(port, acknowledged) == 0, f"after restart {round_no}"
            ingest = Ingest(port, round_no)
            ingest.run_until(batches=20 + 7 * round_no)  # kill at a different point each time
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
        ingest.join()
        assert not ingest.refused
        acknowledged.update(ingest.acknowledged)
    process, port = start_collector(db, log)
    try:
        assert lost(port, acknowledged) == 0
        spans = sum(len(ids) for ids in acknowledged.values())
        assert spans >= ROUNDS * 20 * TRACES_PER_BATCH * SPANS_PER_TRACE
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "Traceback" not in log.read_text()
    print(f"{ROUNDS} kills, {spans} acknowledged spans, 0 lost, {(now_us() - started) / 1e6:.0f} s")


def test_sigterm_during_ingest_stores_every_acknowledged_batch_and_exits(tmp_path: Path) -> None:
    db, log = tmp_path / "traces.db", tmp_path / "collector.log"
    process, port = start_collector(db, log)
    ingest = Ingest(port, 0)
    try:
        ingest.run_until(batches=20)
    finally:
        sigterm = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        stopped_after = time.monotonic() - sigterm
        ingest.join()
    assert stopped_after < 5.0
    # a batch caught by the stop is answered 503 (send again) or not at all, never 500
    assert set(ingest.refused) <= {503}
    process, port = start_collector(db, log)
    try:
        assert lost(port, ingest.acknowledged) == 0
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert "Traceback" not in log.read_text()
