"""The collector's queries at scale: latency per query, idle and while ingesting; mixed load.

Seeds a database through the storage layer (``--spans``, 10-span traces over the last day, 20
services; ``--seeded`` keeps the file for the next run), starts ``tomograph serve`` on it and
measures, over HTTP from this process:

1. the first ``/dependencies`` for the day after the server opened the file (on a file written
   by an older schema this includes building what it needs);
2. p50 and p99 of each query the web UI and Zipkin's API usually make (services, span names,
   remote services, searches by service / span name / tag / duration over the last hour and
   day, one trace, ``/dependencies`` for the day, operations), interleaved round after round,
   first idle, then while another process ingests ``--rate`` spans/s (batches of 100 over
   keep-alive connections; the rate reached is printed);
3. with ``--mixed SECONDS``: the older stress run, ``--queries`` threads looping over searches,
   ``/dependencies`` and traceMany while ``--ingest`` clients post as fast as they can, RSS,
   open files, WAL size, and how long the server takes to stop on SIGTERM under that load.

    python benchmarks/load_collector.py --spans 1000000 --seeded /tmp/1m.db --rate 10000
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
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
from collections.abc import Callable
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


HOUR_MS = 3_600_000


def query_kinds(trace_ids: list[str]) -> dict[str, Callable[[random.Random, int], str]]:
    """Per query the UI or a Zipkin client usually makes: its path, given a round number.

    ``/dependencies`` moves its window back a minute each round: the collector reuses an answer
    while nothing was written, and the point is to measure the computation.
    """

    def service(rng: random.Random) -> str:
        return f"service-{rng.randrange(20):02d}"

    def search(lookback: int, extra: str = "") -> Callable[[random.Random, int], str]:
        def path(rng: random.Random, round_no: int) -> str:
            end = time.time_ns() // 1_000_000
            return (
                f"/api/v2/traces?serviceName={service(rng)}&endTs={end}&lookback={lookback}"
                f"&limit=20{extra}"
            )

        return path

    def dependencies(rng: random.Random, round_no: int) -> str:
        end = time.time_ns() // 1_000_000 - (round_no + 1) * 60_001
        return f"/api/v2/dependencies?endTs={end}&lookback={DAY_MS}"

    def operations(rng: random.Random, round_no: int) -> str:
        end = time.time_ns() // 1_000_000
        return (
            f"/api/v2/tomograph/operations?serviceName={service(rng)}&endTs={end}"
            f"&lookback={HOUR_MS}"
        )

    return {
        "services": lambda rng, n: "/api/v2/services",
        "span names": lambda rng, n: f"/api/v2/spans?serviceName={service(rng)}",
        "remote services": lambda rng, n: f"/api/v2/remoteServices?serviceName={service(rng)}",
        "search service, hour": search(HOUR_MS),
        "search service, day": search(DAY_MS),
        "search service+name, day": lambda rng, n: search(
            DAY_MS, f"&spanName=operation-{rng.randrange(50):02d}"
        )(rng, n),
        "search tag error, hour": search(HOUR_MS, "&annotationQuery=error"),
        "search tag http.method=PUT, day": search(DAY_MS, "&annotationQuery=http.method%3DPUT"),
        "search minDuration 150ms, day": search(DAY_MS, "&minDuration=150000"),
        "search no service, hour": lambda rng, n: (
            f"/api/v2/traces?endTs={time.time_ns() // 1_000_000}&lookback={HOUR_MS}&limit=20"
        ),
        "trace": lambda rng, n: f"/api/v2/trace/{rng.choice(trace_ids)}",
        "dependencies, day": dependencies,
        "operations, hour": operations,
    }


def timed_get(connection: http.client.HTTPConnection, path: str) -> tuple[float, int]:
    """Seconds to the end of the answer to GET ``path``, and its status."""
    start = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return time.perf_counter() - start, response.status


def measure_queries(
    port: int, trace_ids: list[str], rounds: int, dependency_rounds: int
) -> dict[str, list[float]]:
    """Latencies (s) of each query kind, one query at a time, kinds interleaved per round."""
    kinds = query_kinds(trace_ids)
    rng = random.Random(11)
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for round_no in range(rounds):
        for kind, path in kinds.items():
            if kind.startswith("dependencies") and round_no >= dependency_rounds:
                continue
            seconds, status = timed_get(connection, path(rng, round_no))
            if status != 200:
                raise RuntimeError(f"{kind}: status {status}")
            latencies[kind].append(seconds)
    connection.close()
    return latencies


def paced_ingest(port: int, rate: int, stop: object, acked: object, clients: int) -> None:
    """Post ``rate`` spans/s (batches of 100, from ``clients`` threads) until ``stop`` is set.

    Runs in a process of its own: encoding the batches here would take the measuring
    process's GIL and lengthen the latencies it measures.
    """
    batches_per_client = rate / 100 / clients

    def client(client_no: int) -> None:
        rng = random.Random(client_no)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        trace_no = (client_no + 1) * 10_000_000
        next_at = time.monotonic()
        while not stop.is_set():  # type: ignore[attr-defined]
            now_us = time.time_ns() // 1000
            spans = [s for t in range(10) for s in synthetic_trace(rng, trace_no + t, now_us, 10)]
            trace_no += 10
            connection.request("POST", "/api/v2/spans", json_body(spans))
            response = connection.getresponse()
            response.read()
            if response.status == 202:
                with acked.get_lock():  # type: ignore[attr-defined]
                    acked.value += len(spans)  # type: ignore[attr-defined]
            next_at += 1 / batches_per_client
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def millis(values: list[float], percent: float) -> str:
    return f"{percentile(values, percent) * 1000:,.1f}"


def latency_table(
    idle: dict[str, list[float]], loaded: dict[str, list[float]], rate: float, spans: int
) -> None:
    print(
        f"\n## query latency at {spans:,} stored spans (ms),"
        f" idle and ingesting {rate:,.0f} spans/s\n"
    )
    print("query | idle p50 | idle p99 | ingesting p50 | ingesting p99\n-|-|-|-|-")
    for kind, values in idle.items():
        under = loaded.get(kind, [])
        print(
            f"{kind} | {millis(values, 50)} | {millis(values, 99)} | "
            f"{millis(under, 50)} | {millis(under, 99)}"
        )
    every_idle = [v for values in idle.values() for v in values]
    every_loaded = [v for values in loaded.values() for v in values]
    print(
        f"**all queries** | {millis(every_idle, 50)} | {millis(every_idle, 99)} | "
        f"{millis(every_loaded, 50)} | {millis(every_loaded, 99)}"
    )


def latency_run(db: Path, workdir: Path, trace_ids: list[str], args: argparse.Namespace) -> None:
    """Phases 1 and 2 of the module's description."""
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port)]
    # a long query timeout: a slow query is measured, not cut
    argv += ["--db", str(db), "--keep-forever", "--query-timeout", "600"]
    opened = time.monotonic()
    with BackgroundProcess(argv, workdir / "latency.log") as server:
        wait_for_port(port, timeout=300)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        end = time.time_ns() // 1_000_000
        first, _ = timed_get(connection, f"/api/v2/dependencies?endTs={end}&lookback={DAY_MS}")
        connection.close()
        since_open = time.monotonic() - opened
        print(f"first /dependencies for the day: {first:.2f} s ({since_open:.1f} s after start)")
        idle = measure_queries(port, trace_ids, args.rounds, args.dependency_rounds)
        stop = multiprocessing.Event()
        acked = multiprocessing.Value("q", 0)
        ingest = multiprocessing.Process(
            target=paced_ingest, args=(port, args.rate, stop, acked, args.ingest)
        )
        ingest.start()
        time.sleep(2.0)  # let the ingest reach its pace
        started, acked_before = time.monotonic(), acked.value
        loaded = measure_queries(port, trace_ids, args.rounds, args.dependency_rounds)
        rate = (acked.value - acked_before) / (time.monotonic() - started)
        stop.set()
        ingest.join(CLIENT_TIMEOUT)
        log = server.output()
    latency_table(idle, loaded, rate, args.spans)
    errors = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
    if errors:
        print(f"\nserver log: {len(errors)} error lines, first: {errors[0]}")


def mixed_run(db: Path, workdir: Path, trace_ids: list[str], args: argparse.Namespace) -> None:
    """Phase 3 of the module's description."""
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port)]
    argv += ["--db", str(db), "--keep-forever"]
    with BackgroundProcess(argv, workdir / "alone.log") as server:
        wait_for_port(port, timeout=300)
        assert server.process is not None
        alone = dependencies_seconds(port, 1)
        together = dependencies_seconds(port, 8)
        distinct = dependencies_seconds(port, 8, distinct=True)

    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    with BackgroundProcess(argv, workdir / "load.log") as server:
        wait_for_port(port, timeout=300)
        assert server.process is not None
        load = Load(port, server.process.pid, db, trace_ids, args)
        workers = [threading.Thread(target=load.sample, daemon=True)]
        workers += [
            threading.Thread(target=load.ingest, args=(n,), daemon=True) for n in range(args.ingest)
        ]
        workers += [
            threading.Thread(target=load.query, args=(n,), daemon=True) for n in range(args.queries)
        ]
        for worker in workers:
            worker.start()
        load.stop.wait(args.mixed)
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
    print(f"## {args.mixed:.0f} s over {args.spans:,} stored spans\n")
    print("measure | value\n-|-")
    print(f"ingest, acknowledged spans/s | {acked / args.mixed:,.0f}")
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
        half = [r for t, r, _ in samples if t > args.mixed / 2]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument(
        "--seeded", type=Path, help="reuse this seeded database (written on the first run)"
    )
    parser.add_argument("--rate", type=int, default=10_000, help="spans/s ingested meanwhile")
    parser.add_argument("--rounds", type=int, default=100, help="queries of each kind")
    parser.add_argument("--dependency-rounds", type=int, default=20)
    parser.add_argument("--mixed", type=float, default=0.0, help="seconds of mixed load")
    parser.add_argument("--queries", type=int, default=24, help="query threads (mixed load)")
    parser.add_argument("--ingest", type=int, default=2, help="ingest clients")
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        db = workdir / "load.db"
        started = time.monotonic()
        if args.seeded and args.seeded.exists():
            shutil.copy(args.seeded, db)
        else:
            seed(db, args.spans, rng)
            print(f"seeded {args.spans:,} spans in {time.monotonic() - started:.0f} s", flush=True)
            if args.seeded:
                shutil.copy(db, args.seeded)
        trace_ids = seed_ids(db)
        latency_run(db, workdir, trace_ids, args)
        if args.mixed:
            mixed_run(db, workdir, trace_ids, args)


if __name__ == "__main__":
    main()
