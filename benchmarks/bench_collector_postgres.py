"""Collectors sharing one PostgreSQL database: ingest with 1 and 3 ``tomograph serve`` instances.

Each case starts the instances on a fresh database of a private PostgreSQL cluster (initdb in a
temporary folder, ``fsync=off`` as in the tests: this measures the collector, not the disk)
and posts the same batches of 100 spans (Zipkin v2 JSON) from ``CLIENTS`` keep-alive
connections spread over the instances, as a load balancer would. The SQLite store with one
instance runs the same load for reference. ``dependencies()`` over what was ingested is timed
after each case, through the storage layer (PostgreSQL sums links kept per trace; SQLite
rebuilds the window's traces).

On a machine with few cores the instances compete with the clients and the database for the
same CPUs: the ratio says how much of the work spreads, not what more machines would give.
CPU time per span (collector processes, and PostgreSQL's server processes for the case's
database) is less sensitive to load than the rate. ``TOMOGRAPH_BENCH_BATCHES`` sets the number
of batches per case (default 400).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import fresh_database, postgres_cluster  # noqa: E402
from tests.support.servers import BackgroundProcess, free_port, wait_for_port  # noqa: E402

from bench_collector import Client, json_body, synthetic_trace  # noqa: E402
from tomograph.collector.postgres_store import PostgresSpanStore  # noqa: E402
from tomograph.collector.sqlite_store import SqliteSpanStore  # noqa: E402
from tomograph.collector.storage import SpanStore  # noqa: E402

CLIENTS = 6


def start(db: str, log: Path) -> tuple[BackgroundProcess, int]:
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port), "--db", db]
    process = BackgroundProcess([*argv, "--keep-forever"], log)
    process.__enter__()
    wait_for_port(port)
    return process, port


def ingest(ports: list[int], bodies: list[bytes]) -> float:
    """Spans per second for posting ``bodies`` over ``CLIENTS`` connections, round robin."""
    chunks = [bodies[i::CLIENTS] for i in range(CLIENTS)]
    headers = {"Content-Type": "application/json"}

    def run(number: int) -> None:
        client = Client(ports[number % len(ports)])
        for body in chunks[number]:
            client.request("POST", "/api/v2/spans", body, headers)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS)]
    begin = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(bodies) * 100 / (time.perf_counter() - begin)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def backends_of(database: str) -> list[int]:
    """The PostgreSQL server processes serving ``database`` (their title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                pids.append(int(entry.name))
    return pids


def dependencies_ms(db: str) -> float:
    """Best of five ``dependencies()`` over the last hour, straight from a store on ``db``."""
    store: SpanStore = (
        PostgresSpanStore(db, max_age=None) if "://" in db else SqliteSpanStore(db, max_age=None)
    )
    try:
        end = time.time_ns() // 1_000_000 + 1000
        best = float("inf")
        for _ in range(5):
            begin = time.perf_counter()
            store.dependencies(end, 3_600_000)
            best = min(best, time.perf_counter() - begin)
        return best * 1000
    finally:
        store.close()


class Case:
    """One load on ``instances`` collectors: rate, CPU per 1,000 spans, /dependencies time."""

    def __init__(self, db: str, instances: int, bodies: list[bytes], workdir: Path) -> None:
        database = db.rsplit("/", 1)[-1] if "://" in db else ""
        with ExitStack() as stack:
            ports, pids = [], []
            for number in range(instances):
                log = workdir / f"{instances}-{number}-{time.monotonic()}.log"
                process, port = start(db, log)
                stack.callback(process.__exit__, None, None, None)
                ports.append(port)
                assert process.process is not None
                pids.append(process.process.pid)
            backends = backends_of(database) if database else []
            collector_cpu, database_cpu = cpu_seconds(pids), cpu_seconds(backends)
            self.rate = ingest(ports, bodies)
            backends = backends_of(database) if database else []  # ingest opened more
            spans = len(bodies) * 100
            self.collector_ms = (cpu_seconds(pids) - collector_cpu) * 1e6 / spans
            self.database_ms = (cpu_seconds(backends) - database_cpu) * 1e6 / spans
        self.dependencies_ms = dependencies_ms(db)


def main() -> None:
    rng = random.Random(7)
    batches = int(os.environ.get("TOMOGRAPH_BENCH_BATCHES", "400"))
    now_us = time.time_ns() // 1000

    def bodies(offset: int) -> list[bytes]:
        return [
            json_body(
                [
                    s
                    for t in range(10)
                    for s in synthetic_trace(rng, offset + b * 10 + t, now_us, 10)
                ]
            )
            for b in range(batches)
        ]

    rows: list[tuple[str, int, Case]] = []
    with tempfile.TemporaryDirectory() as tmp, postgres_cluster() as cluster:
        workdir = Path(tmp)
        admin = cluster.replace("postgresql+psycopg://", "postgresql://")
        rows.append(("SQLite", 1, Case(str(workdir / "traces.db"), 1, bodies(0), workdir)))
        for instances in (1, 3):
            with fresh_database(admin) as url:
                case = Case(url, instances, bodies(instances * 100_000), workdir)
            rows.append(("PostgreSQL", instances, case))
    load = os.getloadavg()[0]
    print(f"\n## collectors on one PostgreSQL ({CLIENTS} connections, batches of 100 spans)\n")
    print(f"{os.cpu_count()} CPUs, load average {load:.1f} at the end\n")
    print(
        "store | instances | spans/s | vs 1 PostgreSQL instance | collector CPU µs/span"
        " | database CPU µs/span | dependencies() ms (1 h)"
    )
    print("-|-|-|-|-|-|-")
    single = next(case.rate for store, n, case in rows if store == "PostgreSQL" and n == 1)
    for store, instances, case in rows:
        database = f"{case.database_ms:.0f}" if store == "PostgreSQL" else "(in process)"
        print(
            f"{store} | {instances} | {case.rate:,.0f} | {case.rate / single:.2f}x"
            f" | {case.collector_ms:.0f} | {database} | {case.dependencies_ms:.1f}"
        )


if __name__ == "__main__":
    main()
