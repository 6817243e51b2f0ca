"""The collector's queries at scale: latency per query, idle and while ingesting; mixed load.

Seeds a database through the storage layer (``--spans``, 10-span traces over the last day, 20
services; ``--seeded`` keeps the file for the next run), starts ``tomograph serve`` on it and
measures, over HTTP:

1. the first ``/dependencies`` for the day after the server opened the file (on a file written
   by an older schema this includes building what it needs);
2. p50, p90, p99 and max of each query the Zipkin UI and API clients make (services, span
   names, remote services, searches by service / span name / tag / duration over the last hour
   and day, one trace, ``/dependencies`` for the day, operations), one at a time, interleaved
   round after round, from a process of its own, once per ``--ingest-rate`` while another
   process ingests that many spans/s (0: idle). The ingest is open loop: batches of 100 are
   due on a fixed schedule and go out over ``--ingest-connections`` keep-alive connections
   whether or not earlier answers came back; the rate acknowledged, batches sent late, the
   server's CPU use and the WAL's size are printed with each table;
3. with ``--write-floor BATCHES``, first: how fast plain SQLite inserts the store's rows into a
   copy of the seeded file, and how fast the storage layer writes into another, alone on the
   machine (no HTTP, no decoding, no queries): an ingest rate above the first cannot be kept
   up at that size on that machine, whatever the collector does;
4. with ``--cpu-alone ROUNDS``, first: each query's CPU time and SQLite VM steps, alone, in
   process on the store (load-independent enough to compare code: the VM steps exactly);
5. with ``--mixed SECONDS``: the older stress run, ``--queries`` threads looping over searches,
   ``/dependencies`` and traceMany while ``--ingest`` clients post as fast as they can, RSS,
   open files, WAL size, and how long the server takes to stop on SIGTERM under that load.

    python benchmarks/load_collector.py --seeded /tmp/1m.db --ingest-rate 0,1000,2000,5000
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import random
import re
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
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bench_collector import bare_sqlite, cpu_seconds, insert_bare, json_body, synthetic_trace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.servers import BackgroundProcess, free_port, wait_for_port  # noqa: E402

from tomograph.collector import sqlite_store  # noqa: E402
from tomograph.collector.params import parse_query_request  # noqa: E402
from tomograph.collector.sqlite_store import SqliteSpanStore  # noqa: E402
from tomograph.encoding import zipkin_json  # noqa: E402

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
    # the links of every trace, as a collector running all along would have them
    store.dependencies(now_us // 1000 + DAY_MS, 2 * DAY_MS)
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
    """Per query the Zipkin UI (or a Zipkin client) makes: its path, given a round number.

    The UI's home page asks for the services, then a service's span names and remote services,
    then searches; a click opens a trace; the dependency page asks for a day of links.
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
        # looking for one request: a tag that (here) no span has
        "search tag request.id, day": lambda rng, n: search(
            DAY_MS, f"&annotationQuery=request.id%3D{rng.getrandbits(64):016x}"
        )(rng, n),
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


def measure_queries(port: int, trace_ids: list[str], rounds: int) -> dict[str, list[float]]:
    """Latencies (s) of each query kind, one query at a time, kinds interleaved per round."""
    kinds = query_kinds(trace_ids)
    rng = random.Random(11)
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    for round_no in range(rounds):
        for kind, path in kinds.items():
            seconds, status = timed_get(connection, path(rng, round_no))
            if status != 200:
                raise RuntimeError(f"{kind}: status {status}")
            latencies[kind].append(seconds)
    connection.close()
    return latencies


def query_client(port: int, trace_ids: list[str], rounds: int, results: Any) -> None:
    """:func:`measure_queries` in a process of its own; its latencies go to ``results``.

    A process of its own: preparing the ingest's batches in the measuring process would take
    its GIL and lengthen the latencies it measures.
    """
    results.put(measure_queries(port, trace_ids, rounds))


class BatchTemplate:
    """A batch of 100 spans (10 traces of 10) as JSON, with fresh trace ids and times per copy.

    Encoding a batch anew cost ~3 ms of the load generator's CPU, which at thousands of spans/s
    would take a good part of a core from the server it measures: a copy is a join.
    """

    def __init__(self, rng: random.Random, first_trace: int) -> None:
        spans = []
        for trace in range(10):
            for depth, span in enumerate(synthetic_trace(rng, first_trace + trace, 0, 10)):
                span["traceId"] = f"@T{trace}@"
                span["timestamp"] = f"@S{depth}@"
                spans.append(span)
        self.parts = re.split(rb'"@([TS])(\d)@"', json_body(spans))

    def copy(self, rng: random.Random, now_us: int) -> bytes:
        """The batch with 10 new trace ids, its spans starting at ``now_us``."""
        trace_ids = [b'"%032x"' % rng.getrandbits(128) for _ in range(10)]
        times = [b"%d" % (now_us + depth * 100) for depth in range(10)]
        parts = self.parts
        out = [parts[0]]
        for at in range(1, len(parts), 3):
            number = int(parts[at + 1])
            out.append(trace_ids[number] if parts[at] == b"T" else times[number])
            out.append(parts[at + 2])
        return b"".join(out)


def open_loop_ingest(port: int, rate: int, connections: int, counters: Any, stop: Any) -> None:
    """Post ``rate`` spans/s in batches of 100, on a fixed schedule, until ``stop`` is set.

    Open loop: batch ``k`` is due ``k * 100 / rate`` s after the start whether or not earlier
    answers came back, and is sent by whichever of the ``connections`` keep-alive connections
    is free. A server that falls behind is seen as batches sent late (``counters``: acked spans,
    failed batches, batches sent more than 100 ms late, the latest any batch was sent in ms),
    not as a lower offered rate hidden in slower answers.
    """
    interval = 100 / rate
    templates = [BatchTemplate(random.Random(n), n * 10) for n in range(20)]
    lock = threading.Lock()
    next_batch = [0]
    start = time.monotonic()
    acked, failed, late, latest_ms = counters

    def send(sender: int) -> None:
        rng = random.Random(sender)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        while not stop.is_set():
            with lock:
                batch = next_batch[0]
                next_batch[0] += 1
            wait = start + batch * interval - time.monotonic()
            if wait > 0:
                if stop.wait(wait):
                    return
            else:
                with late.get_lock():
                    late.value += -wait > 0.1
                    latest_ms.value = max(latest_ms.value, int(-wait * 1000))
            body = templates[batch % len(templates)].copy(rng, time.time_ns() // 1000)
            try:
                connection.request("POST", "/api/v2/spans", body)
                response = connection.getresponse()
                response.read()
                ok = response.status == 202
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
                ok = False
            counter = acked if ok else failed
            with counter.get_lock():
                counter.value += 100 if ok else 1

    threads = [threading.Thread(target=send, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def millis(values: list[float], percent: float) -> str:
    return f"{percentile(values, percent) * 1000:,.1f}"


def load_average() -> str:
    """The machine's 1-minute load average (what ``uptime`` prints first)."""
    return Path("/proc/loadavg").read_text().split()[0]


class Phase:
    """What one ingest rate's run measured."""

    def __init__(self, offered: int) -> None:
        self.offered = offered
        self.latencies: dict[str, list[float]] = {}
        self.achieved = 0.0
        self.failed = 0
        self.late = 0
        self.latest_ms = 0
        self.server_cpu = 0.0  # CPU seconds of the server per second
        self.wal_max = 0
        self.load = ("", "")


def run_phase(
    port: int, server_pid: int, wal: Path, trace_ids: list[str], rate: int, args: Any
) -> Phase:
    """Queries from one process while another ingests ``rate`` spans/s (0: idle)."""
    phase = Phase(rate)
    stop = multiprocessing.Event()
    counters = (
        multiprocessing.Value("q", 0),
        multiprocessing.Value("q", 0),
        multiprocessing.Value("q", 0),
        multiprocessing.Value("q", 0),
    )
    ingest = None
    if rate:
        ingest = multiprocessing.Process(
            target=open_loop_ingest, args=(port, rate, args.ingest_connections, counters, stop)
        )
        ingest.start()
        time.sleep(3.0)  # let it reach its pace
    results: Any = multiprocessing.Queue()
    queries = multiprocessing.Process(
        target=query_client, args=(port, trace_ids, args.rounds, results)
    )
    load_before = load_average()
    acked_before, cpu_before, started = counters[0].value, cpu_seconds(server_pid), time.monotonic()
    queries.start()
    while queries.is_alive() and results.empty():
        phase.wal_max = max(phase.wal_max, wal.stat().st_size if wal.exists() else 0)
        time.sleep(0.2)
    phase.latencies = results.get()
    elapsed = time.monotonic() - started
    phase.achieved = (counters[0].value - acked_before) / elapsed
    phase.server_cpu = ((cpu_seconds(server_pid) or 0.0) - (cpu_before or 0.0)) / elapsed
    phase.failed, phase.late, phase.latest_ms = (c.value for c in counters[1:])
    phase.load = (load_before, load_average())
    queries.join()
    stop.set()
    if ingest is not None:
        ingest.join(CLIENT_TIMEOUT)
    return phase


def print_phase(phase: Phase) -> None:
    offered = f"{phase.offered:,} spans/s offered, {phase.achieved:,.0f} acknowledged"
    print(f"\n### ingesting {offered if phase.offered else 'nothing'}")
    print(
        f"load average {phase.load[0]} -> {phase.load[1]}; server CPU {phase.server_cpu:.2f}"
        f" cores; WAL up to {phase.wal_max / 1e6:.0f} MB"
        + (
            f"; batches failed {phase.failed}, sent >100 ms late {phase.late}"
            f" (latest {phase.latest_ms:,} ms)"
            if phase.offered
            else ""
        )
        + "\n"
    )
    print("query | p50 | p90 | p99 | max\n-|-|-|-|-")
    for kind, values in phase.latencies.items():
        p99 = percentile(values, 99)
        flag = " **>50**" if p99 > 0.050 else ""
        print(
            f"{kind} | {millis(values, 50)} | {millis(values, 90)} | {millis(values, 99)}{flag}"
            f" | {millis(values, 100)}"
        )


def print_summary(phases: list[Phase], spans: int) -> None:
    print(f"\n## query latency at {spans:,} stored spans (ms): p50 / p99 per ingest rate\n")
    header = " | ".join(
        f"{p.offered:,}/s ({p.achieved:,.0f})" if p.offered else "idle" for p in phases
    )
    print(f"query | {header}\n-|" + "-|" * len(phases))
    for kind in phases[0].latencies:
        cells = [
            f"{millis(p.latencies[kind], 50)} / {millis(p.latencies[kind], 99)}" for p in phases
        ]
        print(f"{kind} | " + " | ".join(cells))
    every = [[v for values in p.latencies.values() for v in values] for p in phases]
    print("**all queries** | " + " | ".join(f"{millis(v, 50)} / {millis(v, 99)}" for v in every))


def call_store(store: SqliteSpanStore, path: str) -> object:
    """What the collector does for GET ``path`` (one of :func:`query_kinds`), on ``store``."""
    parts = urlsplit(path)
    params = dict(parse_qsl(parts.query))
    route = parts.path
    if route == "/api/v2/traces":
        request = parse_query_request(params, HOUR_MS)
        return store.get_traces_json(store.find_trace_ids(request))
    if route.startswith("/api/v2/trace/"):
        return store.get_trace_json(route.rsplit("/", 1)[1])
    if route == "/api/v2/dependencies":
        return store.dependencies(int(params["endTs"]), int(params["lookback"]))
    if route == "/api/v2/tomograph/operations":
        return store.operations(
            params["serviceName"], int(params["endTs"]), int(params["lookback"])
        )
    if route == "/api/v2/services":
        return store.service_names()
    if route == "/api/v2/spans":
        return store.span_names(params["serviceName"])
    if route == "/api/v2/remoteServices":
        return store.remote_service_names(params["serviceName"])
    raise ValueError(f"no store call for {path}")


class CountedSteps(SqliteSpanStore):
    """The store, counting the SQLite VM steps of its readers (in thousands): the SQL work of
    a query, whatever else the machine runs."""

    steps = 0

    def _connect_reader(self) -> sqlite3.Connection:
        db = super()._connect_reader()

        def step() -> int:
            CountedSteps.steps += 1
            return 0

        db.set_progress_handler(step, 1000)
        return db


def cpu_alone(db: Path, trace_ids: list[str], rounds: int) -> None:
    """Per query: the CPU time of its thread and its SQLite VM steps, one query at a time in
    this process, straight on the store (no HTTP, no ingest)."""
    store = CountedSteps(db, max_age=None, max_bytes=None)
    kinds = query_kinds(trace_ids)
    rng = random.Random(11)
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    steps: dict[str, list[int]] = {kind: [] for kind in kinds}
    try:
        for round_no in range(rounds):
            for kind, path in kinds.items():
                CountedSteps.steps = 0
                started = time.thread_time()
                call_store(store, path(rng, round_no))
                cpu[kind].append(time.thread_time() - started)
                steps[kind].append(CountedSteps.steps)
    finally:
        store.close()
    print(f"\n## CPU per query alone ({rounds} rounds; load average {load_average()})\n")
    print("query | CPU ms median | max | SQLite VM steps (thousands) median | max\n-|-|-|-|-")
    for kind in kinds:
        print(
            f"{kind} | {millis(cpu[kind], 50)} | {millis(cpu[kind], 100)}"
            f" | {statistics.median(steps[kind]):,.0f} | {max(steps[kind]):,}"
        )


#: Batches written before the floor's clocks start: the copy's pages come into the caches.
FLOOR_WARM_UP = 20


def write_floor(db: Path, workdir: Path, batches: int) -> None:
    """Phase 3 of the module's description: spans/s and CPU per span of each writer, alone.

    Both write the same ``batches`` batches of 100 new spans (10 traces of 10, timestamped now),
    one batch per transaction, into their own copy of the seeded file. Plain SQLite keeps its
    own checkpoints in line; the store checkpoints on a thread of its own, whose CPU counts.
    """
    rng = random.Random(3)
    now_us = time.time_ns() // 1000
    first = 10**9  # trace numbers the seeding never used
    decoded = []
    for batch in range(FLOOR_WARM_UP + batches):
        spans = []
        for trace in range(10):
            spans += synthetic_trace(rng, first + batch * 10 + trace, now_us, 10)
        decoded.append(zipkin_json.decode_spans(json_body(spans)))
    # the store's own preparation makes plain SQLite's rows: the very rows accept() writes
    prepared = [sqlite_store._prepare_rows(batch, now_us) for batch in decoded]
    copy = workdir / "floor.db"

    def timed(write: Callable[[int], object]) -> tuple[float, float]:
        for batch in range(FLOOR_WARM_UP):
            write(batch)
        cpu, start = time.process_time(), time.perf_counter()
        for batch in range(FLOOR_WARM_UP, FLOOR_WARM_UP + batches):
            write(batch)
        spans = batches * 100
        return spans / (time.perf_counter() - start), (time.process_time() - cpu) / spans * 1e6

    shutil.copy(db, copy)
    bare = bare_sqlite(copy)
    bare_rate, bare_cpu = timed(lambda batch: insert_bare(bare, prepared[batch]))
    bare.close()
    for path in copy.parent.glob(copy.name + "*"):
        path.unlink()
    shutil.copy(db, copy)
    store = SqliteSpanStore(copy, max_age=None, max_bytes=None)
    store_rate, store_cpu = timed(lambda batch: store.accept(decoded[batch]))
    store.close()
    for path in copy.parent.glob(copy.name + "*"):
        path.unlink()
    print(f"\n## writing {batches * 100:,} spans into a copy of the seeded file, alone\n")
    print("writer | spans/s | CPU µs/span (process)")
    print("-|-|-")
    print(f"plain SQLite: executemany of the prepared rows | {bare_rate:,.0f} | {bare_cpu:.1f}")
    print(f"SqliteSpanStore.accept (span dicts in) | {store_rate:,.0f} | {store_cpu:.1f}")


def latency_run(db: Path, workdir: Path, trace_ids: list[str], args: argparse.Namespace) -> None:
    """Phases 1 and 2 of the module's description."""
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(port)]
    # a long query timeout: a slow query is measured, not cut
    argv += ["--db", str(db), "--keep-forever", "--query-timeout", "600"]
    opened = time.monotonic()
    with BackgroundProcess(argv, workdir / "latency.log") as server:
        wait_for_port(port, timeout=300)
        assert server.process is not None
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        end = time.time_ns() // 1_000_000
        first, _ = timed_get(connection, f"/api/v2/dependencies?endTs={end}&lookback={DAY_MS}")
        connection.close()
        since_open = time.monotonic() - opened
        print(f"first /dependencies for the day: {first:.2f} s ({since_open:.1f} s after start)")
        wal = db.with_name(db.name + "-wal")
        phases = []
        for rate in args.ingest_rate:
            phase = run_phase(port, server.process.pid, wal, trace_ids, rate, args)
            print_phase(phase)
            phases.append(phase)
        log = server.output()
    print_summary(phases, args.spans)
    errors = [line for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
    if errors:
        print(f"\nserver log: {len(errors)} error lines, first: {errors[0]}")


def mixed_run(db: Path, workdir: Path, trace_ids: list[str], args: argparse.Namespace) -> None:
    """Phase 5 of the module's description."""
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


def rates(text: str) -> list[int]:
    """``0,1000,5000`` -> [0, 1000, 5000] (spans/s)."""
    values = [int(value) for value in text.split(",")]
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("rates are spans/s, 0 or more")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument(
        "--seeded", type=Path, help="reuse this seeded database (written on the first run)"
    )
    parser.add_argument(
        "--ingest-rate",
        type=rates,
        default=[0, 1000, 2000, 5000],
        help="spans/s ingested while the queries run, one run per rate (0: idle), e.g. 0,2000",
    )
    parser.add_argument("--rounds", type=int, default=100, help="queries of each kind per rate")
    parser.add_argument("--mixed", type=float, default=0.0, help="seconds of mixed load")
    parser.add_argument("--queries", type=int, default=24, help="query threads (mixed load)")
    parser.add_argument("--ingest", type=int, default=2, help="ingest clients (mixed load)")
    parser.add_argument(
        "--ingest-connections", type=int, default=4, help="connections of the paced ingest"
    )
    parser.add_argument(
        "--write-floor",
        type=int,
        default=0,
        metavar="BATCHES",
        help="first measure plain SQLite's and the store's write rate at this size, alone",
    )
    parser.add_argument(
        "--cpu-alone",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="first measure each query's CPU and SQLite VM steps alone, in process",
    )
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
        if args.write_floor:
            write_floor(db, workdir, args.write_floor)
        if args.cpu_alone:
            cpu_alone(db, trace_ids, args.cpu_alone)
        latency_run(db, workdir, trace_ids, args)
        if args.mixed:
            mixed_run(db, workdir, trace_ids, args)


if __name__ == "__main__":
    main()
