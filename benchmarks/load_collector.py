"""Mixed load on a real ``tomograph serve``: query threads and ingest clients at once.

Seeds a database through the storage layer (10-span traces spread over the last day), starts
``tomograph serve`` on it, then for ``--seconds``:

* ``--ingest`` clients each post batches of 100 spans over one keep-alive connection;
* ``--queries`` threads each loop over searches, ``/dependencies`` for the day, trace lookups
  and ``traceMany``, with a 60 s client timeout.

It samples the server's RSS and open file descriptors every second, then sends SIGTERM while the
load still runs and measures how long the server takes to exit. Last, ``/dependencies`` for the
day alone, then from 8 clients at once. Prints one table of the numbers.

    python benchmarks/load_collector.py --seconds 60 --queries 24 --ingest 2 --spans 200000
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench_collector import json_body, synthetic_trace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.servers import BackgroundProcess, free_port, wait_for_port  # noqa: E402

from tomograph.collector.sqlite_store import SqliteSpanStore  # noqa: E402

DAY_MS = 86_400_000
CLIENT_TIMEOUT = 60.0


def seed_ids(path: Path) -> list[str]:
    """Some trace ids of the seeded database."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT trace_id FROM traces LIMIT 2000")]


def seed(path: Path, spans: int, rng: random.Random) -> None:
    """Write ``spans`` spans (10 per trace, over the last day)."""
    store = SqliteSpanStore(path, max_age=None, max_bytes=None)
    now_us = time.time_ns() // 1000
    batch: list[dict[str, object]] = []
    for trace_no in range(spans // 10):
        trace = synthetic_trace(rng, trace_no, now_us - rng.randint(0, DAY_MS * 1000), 10)
        batch.extend(trace)
        if len(batch) >= 10_000:
            store.accept(batch)
            batch = []
    if batch:
        store.accept(batch)
    store.close()


def process_sample(pid: int) -> tuple[int, int]:
    """(RSS in bytes, open file descriptors) of process ``pid``."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(percent / 100 * len(ordered)))]


class Load:
    """The running load: ingest clients, query threads and the sampler."""

    def __init__(
        self, port: int, pid: int, db: Path, trace_ids: list[str], args: argparse.Namespace
    ) -> None:
        self.port = port
        self.wal = db.with_name(db.name + "-wal")
        self.pid = pid
        self.trace_ids = trace_ids
        self.args = args
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked_spans = 0
        self.ingest_errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.samples: list[tuple[float, int, int]] = []
        self.asked_at: dict[int, float] = {}  # per query thread: when its open request was sent
        self.wal_sizes: list[int] = []

    def ingest(self, client_no: int) -> None:
        rng = random.Random(client_no)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
        trace_no = client_no * 10_000_000
        while not self.stop.is_set():
            now_us = time.time_ns() // 1000
            spans = [s for t in range(10) for s in synthetic_trace(rng, trace_no + t, now_us, 10)]
            trace_no += 10
            try:
                connection.request(
                    "POST",
                    "/api/v2/spans",
                    json_body(spans),
                    {"Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
                if response.status == 202:
                    with self.lock:
                        self.acked_spans += len(spans)
                else:
                    self.ingest_errors[str(response.status)] += 1
            except (OSError, http.client.HTTPException) as error:
                self.ingest_errors[type(error).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=CLIENT_TIMEOUT
                )
                if self.stop.wait(0.1):
                    return

    def query_paths(self, rng: random.Random) -> str:
        end = time.time_ns() // 1_000_000
        choice = rng.randrange(5)
        if choice == 0:
            return f"/api/v2/dependencies?endTs={end}&lookback={DAY_MS}"
        if choice == 1:
            service = f"service-{rng.randrange(20):02d}"
            return f"/api/v2/traces?serviceName={service}&endTs={end}&lookback={DAY_MS}&limit=100"
        if choice == 2:
            return f"/api/v2/traces?annotationQuery=error&endTs={end}&lookback={DAY_MS}&limit=50"
        if choice == 3:
            return f"/api/v2/trace/{rng.choice(self.trace_ids)}"
        ids = ",".join(rng.sample(self.trace_ids, 20))
        return f"/api/v2/traceMany?traceIds={ids}"

    def query(self, thread_no: int) -> None:
        rng = random.Random(1000 + thread_no)
        while not self.stop.is_set():
            path = self.query_paths(rng)
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT)
            start = time.monotonic()
            self.asked_at[thread_no] = start
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                status = str(response.status)
                if status == "503":
                    retry = float(response.headers.get("Retry-After") or 1)
                    self.stop.wait(min(retry, 1.0) * rng.random())
            except TimeoutError:
                status = "timeout"
            except (OSError, http.client.HTTPException) as error:
                status = type(error).__name__
                self.stop.wait(0.1)
            finally:
                connection.close()
            with self.lock:
                del self.asked_at[thread_no]
                self.statuses[status] += 1
                if status == "200":
                    self.latencies.append(time.monotonic() - start)

    def sample(self) -> None:
        start = time.monotonic()
        while not self.stop.wait(1.0):
            try:
                rss, fds = process_sample(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.samples.append((time.monotonic() - start, rss, fds))
            self.wal_sizes.append(self.wal.stat().st_size if self.wal.exists() else 0)


def write_one_span(port: int) -> None:
    """Post a span, so that no answer computed before can be reused."""
    span = synthetic_trace(random.Random(), 0, time.time_ns() // 1000, 1)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/api/v2/spans", json_body(span))
    connection.getresponse().read()
    connection.close()


def dependencies_seconds(port: int, clients: int, distinct: bool = False) -> list[float]:
    """Seconds each of ``clients`` simultaneous ``/dependencies`` calls for the day took.

    NaN for a call not answered 200; ``distinct`` gives each client its own window (a few
    milliseconds apart, like web pages opened at the same time). A span is written first.
    """
    write_one_span(port)
    results: list[float] = []
    barrier = threading.Barrier(clients)
    end = time.time_ns() // 1_000_000

    def call(client: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        barrier.wait()
        start = time.monotonic()
        window_end = end - client if distinct else end
        connection.request("GET", f"/api/v2/dependencies?endTs={window_end}&lookback={DAY_MS}")
        response = connection.getresponse()
        response.read()
        results.append(time.monotonic() - start if response.status == 200 else float("nan"))
        connection.close()

    threads = [threading.Thread(target=call, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--queries", type=int, default=24)
    parser.add_argument("--ingest", type=int, default=2)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument(
        "--seeded", type=Path, help="reuse this seeded database (written on the first run)"
    )
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        if args.seeded and args.seeded.exists():
            shutil.copy(args.seeded, workdir / "load.db")
            trace_ids = seed_ids(args.seeded)
        else:
            seed(workdir / "load.db", args.spans, rng)
            trace_ids = seed_ids(workdir / "load.db")
            print(f"seeded {args.spans:,} spans in {time.monotonic() - started:.0f} s", flush=True)
            if args.seeded:
                shutil.copy(workdir / "load.db", args.seeded)

        port = free_port()
        argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port)]
        argv += ["--db", str(workdir / "load.db"), "--keep-forever"]
        with BackgroundProcess(argv, workdir / "alone.log") as server:
            wait_for_port(port)
            assert server.process is not None
            alone = dependencies_seconds(port, 1)
            together = dependencies_seconds(port, 8)
            distinct = dependencies_seconds(port, 8, distinct=True)

        port = free_port()
        argv[argv.index("--port") + 1] = str(port)
        with BackgroundProcess(argv, workdir / "load.log") as server:
            wait_for_port(port)
            assert server.process is not None
            load = Load(port, server.process.pid, workdir / "load.db", trace_ids, args)
            workers = [threading.Thread(target=load.sample, daemon=True)]
            workers += [
                threading.Thread(target=load.ingest, args=(n,), daemon=True)
                for n in range(args.ingest)
            ]
            workers += [
                threading.Thread(target=load.query, args=(n,), daemon=True)
                for n in range(args.queries)
            ]
            for worker in workers:
                worker.start()
            load.stop.wait(args.seconds)
            with load.lock:  # what happened under load, before the stop
                acked = load.acked_spans
                ingest_errors = dict(load.ingest_errors)
                statuses = dict(load.statuses)
                latencies = list(load.latencies)
                samples = list(load.samples)
                waiting = sorted(time.monotonic() - asked for asked in load.asked_at.values())
            sigterm_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(30)
                stop_s = f"{time.monotonic() - sigterm_at:.2f} s"
            except Exception:
                server.process.kill()
                server.process.wait()
                stop_s = "> 30 s (killed)"
            load.stop.set()
            for worker in workers:
                worker.join(CLIENT_TIMEOUT + 5)
            log = server.output()

        rss = [rss for _, rss, _ in samples]
        fds = [fds for _, _, fds in samples]
        print(f"\n## mixed load: {args.queries} query threads, {args.ingest} ingest clients,")
        print(f"## {args.seconds:.0f} s over {args.spans:,} stored spans\n")
        print("measure | value\n-|-")
        print(f"ingest, acknowledged spans/s | {acked / args.seconds:,.0f}")
        print(f"ingest errors | {ingest_errors}")
        print(f"query answers | {statuses}")
        print(
            f"query p50 / p99 (200s) | {percentile(latencies, 50):.2f} s / "
            f"{percentile(latencies, 99):.2f} s"
        )
        if rss:
            print(
                f"RSS first / max / last | {rss[0] / 1e6:.0f} / {max(rss) / 1e6:.0f} / "
                f"{rss[-1] / 1e6:.0f} MB"
            )
            print(f"open fds first / max / last | {fds[0]} / {max(fds)} / {fds[-1]}")
            print(
                f"WAL file max / last | {max(load.wal_sizes) / 1e6:.0f} / "
                f"{load.wal_sizes[-1] / 1e6:.0f} MB"
            )
            half = [r for t, r, _ in samples if t > args.seconds / 2]
            if len(half) > 2:
                print(f"RSS mean, second half | {statistics.mean(half) / 1e6:.0f} MB")
        oldest = f", the longest for {waiting[-1]:.0f} s" if waiting else ""
        print(f"queries unanswered at the end | {len(waiting)}{oldest}")
        print(f"stop after SIGTERM under load | {stop_s}")
        print(f"/dependencies for a day, alone | {alone[0]:.2f} s")
        for label, seconds in (("same window", together), ("8 windows", distinct)):
            listed = ", ".join(f"{s:.1f}" for s in sorted(seconds))
            print(f"/dependencies for a day, 8 at once, {label} | {listed} s (nan: not 200)")
        tail = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
        if tail:
            print(f"\nserver log: {len(tail)} error lines, first: {tail[0]}")


if __name__ == "__main__":
    main()
