"""The embedded collector (``tomograph serve``): ingest, trace lookup, search, disk use.

Cases:
1. ingest throughput: batches of 100 spans (tomograph's Zipkin JSON, and gzip proto3) POSTed
   from this process over one keep-alive connection on loopback to a real ``tomograph serve``;
   also 4 client threads at once. Besides spans per second (which the client and whatever else
   runs on the machine share), the server's own CPU time per span, read from /proc: its
   inverse is what one core of the collector ingests;
1b. the storage layer against its floor: the same batches of 100 spans written by
   ``SqliteSpanStore.accept`` (from span dicts: rows prepared, bodies encoded and compressed,
   one transaction each), and as the very same rows by plain ``executemany`` into a bare SQLite
   file with the same tables, indexes and settings (one transaction per batch, nothing
   prepared during the timing), alternating, best of three each;
2. ``GET /api/v2/trace/{id}`` of a 1,000-span trace;
3. ``GET /api/v2/traces`` searches over 1,000,000 stored spans (written straight through the
   storage layer, 10 spans a trace, 20 services, spread over the last 24 hours);
4. database bytes per stored span.

``--instructions`` counts instead, with valgrind's callgrind (see ``_callgrind``), the
instructions per span of the ingest pipeline in one process: Zipkin JSON batches of 100 spans
decoded, bounded to the span limits and stored by ``SqliteSpanStore.accept`` (what a worker
thread of the server does with an upload; the HTTP server around it is left out), and the
dependency links of their traces computed (also with each trace's spans split over two
batches, as services reporting their own spans send them); decoding alone, and decoding with
the span limits (the CPU work before the store); and, as its floor, the
instructions per span of inserting the very same rows, prepared beforehand, into a bare SQLite
file (case 1b's floor); and the instructions per span of computing the batches' dependency links
alone, from their prepared rows. Unlike spans per second, the count does not move when the
machine is busy.

``TOMOGRAPH_BENCH_SPANS`` sets the size of the search data set (default 1,000,000).
No peer has an equivalent embedded collector, so there are no ratios here.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _harness import time_per_op

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.servers import BackgroundProcess, free_port, wait_for_port  # noqa: E402

from tomograph.collector import sqlite_store  # noqa: E402
from tomograph.collector.sqlite_store import SqliteSpanStore  # noqa: E402
from tomograph.encoding import zipkin_json, zipkin_proto  # noqa: E402

SERVICES = [f"service-{i:02d}" for i in range(20)]
NAMES = [f"operation-{i:02d}" for i in range(50)]
METHODS = ["GET", "POST", "PUT", "DELETE"]


def synthetic_trace(
    rng: random.Random, trace_no: int, start_us: int, spans: int
) -> list[dict[str, Any]]:
    """A trace of ``spans`` spans: a root server span and nested client/server pairs."""
    trace_id = f"{rng.getrandbits(128):032x}"
    out: list[dict[str, Any]] = []
    parent: str | None = None
    for depth in range(spans):
        span_id = f"{rng.getrandbits(64) | 1:016x}"
        service = SERVICES[(trace_no + depth) % len(SERVICES)]
        tags = {
            "http.method": METHODS[depth % 4],
            "http.status_code": "500" if rng.random() < 0.02 else "200",
            "component": "bench",
        }
        if tags["http.status_code"] == "500":
            tags["error"] = "internal"
        span: dict[str, Any] = {
            "traceId": trace_id,
            "id": span_id,
            "kind": "SERVER" if depth % 2 == 0 else "CLIENT",
            "name": NAMES[(trace_no * 7 + depth) % len(NAMES)],
            "timestamp": start_us + depth * 100,
            "duration": rng.randint(50, 200_000),
            "localEndpoint": {"serviceName": service, "ipv4": "10.0.0.1", "port": 8080},
            "tags": tags,
        }
        if parent:
            span["parentId"] = parent
        if depth % 2 == 1:
            span["remoteEndpoint"] = {"serviceName": SERVICES[(trace_no + depth + 1) % 20]}
        out.append(span)
        parent = span_id
    return out


class Client:
    """One keep-alive HTTP connection to the collector."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        data = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
        return data


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of process ``pid`` so far (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(
    port: int, bodies: list[bytes], headers: dict[str, str], threads: int, server_pid: int
) -> tuple[float, float | None]:
    """Spans per second for posting ``bodies`` (100 spans each) from ``threads`` clients, and
    the server's CPU microseconds per span meanwhile."""
    chunks = [bodies[i::threads] for i in range(threads)]
    cpu_before = cpu_seconds(server_pid)

    def run(chunk: list[bytes]) -> None:
        client = Client(port)
        for body in chunk:
            client.request("POST", "/api/v2/spans", body, headers)

    workers = [threading.Thread(target=run, args=(chunk,)) for chunk in chunks]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    cpu_after = cpu_seconds(server_pid)
    spans = len(bodies) * 100
    cpu_per_span = None
    if cpu_before is not None and cpu_after is not None:
        cpu_per_span = (cpu_after - cpu_before) / spans * 1e6
    return spans / elapsed, cpu_per_span


def bare_sqlite(path: Path) -> sqlite3.Connection:
    """A new SQLite file with the store's schema and pragmas, and nothing of the store."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA cache_size = -32000")
    db.executescript(sqlite_store._SCHEMA)
    db.execute(sqlite_store.LINKS_BY_TS)
    return db


def insert_bare(db: sqlite3.Connection, rows: sqlite_store._Rows) -> None:
    """One batch's prepared rows, inserted by plain executemany in one transaction: the floor
    the store is measured against."""
    db.execute("BEGIN IMMEDIATE")
    db.executemany(sqlite_store._INSERT_SPAN, rows.spans)
    db.executemany(sqlite_store._INSERT_TERM, rows.terms)
    db.executemany(sqlite_store._INSERT_TERM_LIST, rows.term_lists)
    db.executemany(sqlite_store._UPSERT_TRACE, rows.traces)
    db.executemany("INSERT OR IGNORE INTO span_names VALUES (?, ?, ?)", rows.names)
    db.execute("COMMIT")


def storage_against_floor(workdir: Path, batches: list[list[dict[str, Any]]]) -> None:
    """Case 1b: ``SqliteSpanStore.accept`` against plain executemany of the same rows."""
    # the store's own preparation makes the floor's rows: the very rows accept() writes
    decoded = [zipkin_json.decode_spans(json_body(batch)) for batch in batches]
    prepared = [sqlite_store._prepare_rows(batch, 1) for batch in decoded]
    spans = sum(len(batch) for batch in batches)

    def floor(path: Path) -> float:
        db = bare_sqlite(path)
        start = time.perf_counter()
        for rows in prepared:
            insert_bare(db, rows)
        elapsed = time.perf_counter() - start
        db.close()
        return spans / elapsed

    def store(path: Path) -> float:
        store = SqliteSpanStore(path, max_age=None)
        start = time.perf_counter()
        for batch in decoded:
            store.accept(batch)
        elapsed = time.perf_counter() - start
        store.close()
        return spans / elapsed

    floor_rates, store_rates = [], []
    for run in range(3):
        floor_rates.append(floor(workdir / f"floor-{run}.db"))
        store_rates.append(store(workdir / f"store-{run}.db"))
    print(f"\n## storage layer against bare SQLite ({spans:,} spans, batches of 100)\n")
    print("case | spans/s")
    print("-|-")
    print(f"bare SQLite: executemany of the prepared rows | {max(floor_rates):,.0f}")
    print(f"SqliteSpanStore.accept (span dicts in) | {max(store_rates):,.0f}")
    print(f"storage / floor | {max(store_rates) / max(floor_rates):.0%}")


def serve(db: Path, log: Path) -> tuple[BackgroundProcess, int]:
    port = free_port()
    process = BackgroundProcess(
        [
            sys.executable,
            "-m",
            "tomograph",
            "serve",
            "--port",
            str(port),
            "--db",
            str(db),
            "--keep-forever",
        ],
        log,
    )
    process.__enter__()
    wait_for_port(port)
    return process, port


def best(*runs: tuple[float, float | None]) -> tuple[float, float | None]:
    """The fastest of several (spans/s, CPU µs per span) runs."""
    return max(runs, key=lambda run: run[0])


def json_body(spans: list[dict[str, Any]]) -> bytes:
    """Span dicts as a compact Zipkin v2 JSON body."""
    return json.dumps(spans, separators=(",", ":")).encode()


def run_pipeline(batches: int, split: bool = False) -> None:
    """Decode, bound and store ``batches`` batches of 100 spans (after a warm-up), then exit;
    with ``split``, each trace's spans come in two batches (see :func:`pipeline_bodies`)."""
    import gc

    from tomograph.collector.ingest import decode_zipkin_body
    from tomograph.collector.settings import CollectorSettings
    from tomograph.collector.span_limits import limit_spans

    bodies = pipeline_bodies(split)
    limits = CollectorSettings().span_limits
    # The dependency links of the batches' traces are computed after each batch, as the
    # background refresher would: on its timer, that work would land in the count by chance.
    sqlite_store._LINK_INTERVAL = 1e9
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteSpanStore(Path(tmp) / "pipeline.db", max_age=None)
        for number in range(-5, batches):
            if number == 0:
                gc.disable()
            spans = decode_zipkin_body(bodies[number % len(bodies)], "application/json")
            limit_spans(spans, limits)
            store.accept(spans)
            store._refresh_links()
        store.close()


def pipeline_bodies(split: bool = False) -> list[bytes]:
    """The 40 distinct Zipkin JSON batches (100 spans each) the counted pipelines store.

    Each holds 10 whole traces; ``split`` puts the first half of 20 traces' spans in one batch
    and their second half in the next, as when each service of a trace reports its own spans:
    the second batch reaches traces already stored, whose links are computed again.
    """
    rng = random.Random(7)
    traces = [synthetic_trace(rng, n, 10**15, 10) for n in range(400)]
    if not split:
        return [json_body([s for t in traces[b * 10 : b * 10 + 10] for s in t]) for b in range(40)]
    bodies = []
    for pair in range(20):
        group = traces[pair * 20 : pair * 20 + 20]
        bodies.append(json_body([s for t in group for s in t[:5]]))
        bodies.append(json_body([s for t in group for s in t[5:]]))
    return bodies


def run_decode(batches: int, limited: bool = False) -> None:
    """Decode ``batches`` batches of 100 spans (after a warm-up), then exit; with ``limited``,
    also bound them to the span limits: the pipeline's CPU work before the store."""
    import gc

    from tomograph.collector.ingest import decode_zipkin_body
    from tomograph.collector.settings import CollectorSettings
    from tomograph.collector.span_limits import limit_spans

    bodies = pipeline_bodies()
    limits = CollectorSettings().span_limits
    for number in range(-5, batches):
        if number == 0:
            gc.disable()
        spans = decode_zipkin_body(bodies[number % len(bodies)], "application/json")
        if limited:
            limit_spans(spans, limits)


def run_floor(batches: int) -> None:
    """Insert ``batches`` batches of prepared rows into a bare SQLite file (after a warm-up).

    The rows of all 40 batches are prepared whatever ``batches`` is: that work is the same in
    both counted runs, so it drops out of the difference.
    """
    import gc

    from tomograph.collector.ingest import decode_zipkin_body

    prepared = [
        sqlite_store._prepare_rows(decode_zipkin_body(body, "application/json"), 1)
        for body in pipeline_bodies()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        db = bare_sqlite(Path(tmp) / "floor.db")
        for number in range(-5, batches):
            if number == 0:
                gc.disable()
            insert_bare(db, prepared[number % len(prepared)])
        db.close()


def run_links(batches: int) -> None:
    """Compute the dependency links of ``batches`` batches' traces from their prepared rows, as
    the ingest write does for traces it brings all the spans of (after a warm-up)."""
    import gc

    from tomograph.collector.ingest import decode_zipkin_body

    prepared = [
        sqlite_store._prepare_rows(decode_zipkin_body(body, "application/json"), 1)
        for body in pipeline_bodies()
    ]
    for number in range(-5, batches):
        if number == 0:
            gc.disable()
        rows = prepared[number % len(prepared)]
        sqlite_store._batch_links(rows.spans, rows.traces, ())


def count_instructions() -> None:
    import _callgrind

    if not _callgrind.available():
        sys.exit("--instructions needs valgrind")
    per_batch = _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--pipeline", str(n)], small=4, large=24
    )
    per_split_batch = _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--pipeline-split", str(n)], small=4, large=24
    )
    floor = _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--floor", str(n)], small=4, large=24
    )
    links = _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--links", str(n)], small=10, large=110
    )
    decode = _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--decode", str(n)], small=10, large=60
    )
    decode_limits = _callgrind.instructions_per_op(
        lambda n: [sys.executable, __file__, "--decode-limits", str(n)], small=10, large=60
    )
    print("\n## collector ingest pipeline, in one process (decode, span limits, accept)\n")
    print("case | instructions per span\n-|-")
    print(f"Zipkin JSON, batches of 100: decoded, bounded, stored | {per_batch / 100:,.0f}")
    print(
        "the same, each trace's spans in two batches (links computed again)"
        f" | {per_split_batch / 100:,.0f}"
    )
    print(f"bare SQLite: the same rows, prepared beforehand, inserted | {floor / 100:,.0f}")
    print(f"dependency links of the batches' traces, computed alone | {links / 100:,.0f}")
    print(f"decoding alone (Zipkin JSON to span dicts) | {decode / 100:,.0f}")
    print(f"decoding and span limits | {decode_limits / 100:,.0f}")
    print(f"\nthe bare SQLite floor is {floor / per_batch:.0%} of the pipeline's instructions")


def main() -> None:
    if "--pipeline" in sys.argv:
        run_pipeline(int(sys.argv[sys.argv.index("--pipeline") + 1]))
        return
    if "--pipeline-split" in sys.argv:
        run_pipeline(int(sys.argv[sys.argv.index("--pipeline-split") + 1]), split=True)
        return
    if "--links" in sys.argv:
        run_links(int(sys.argv[sys.argv.index("--links") + 1]))
        return
    if "--decode" in sys.argv:
        run_decode(int(sys.argv[sys.argv.index("--decode") + 1]))
        return
    if "--decode-limits" in sys.argv:
        run_decode(int(sys.argv[sys.argv.index("--decode-limits") + 1]), limited=True)
        return
    if "--floor" in sys.argv:
        run_floor(int(sys.argv[sys.argv.index("--floor") + 1]))
        return
    if "--instructions" in sys.argv:
        count_instructions()
        return
    rng = random.Random(7)
    total_spans = int(os.environ.get("TOMOGRAPH_BENCH_SPANS", "1000000"))
    now_us = time.time_ns() // 1000
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)

        # -- 1 and 2: ingest and trace lookup against a fresh database ---------------------
        process, port = serve(workdir / "ingest.db", workdir / "ingest.log")
        try:
            batches = [
                [span for t in range(10) for span in synthetic_trace(rng, b * 10 + t, now_us, 10)]
                for b in range(300)
            ]
            json_bodies = [json_body(batch) for batch in batches]
            more = [
                json_body(
                    [
                        s
                        for t in range(10)
                        for s in synthetic_trace(rng, 5000 + b * 10 + t, now_us, 10)
                    ]
                )
                for b in range(300)
            ]
            pid = process.process.pid
            json_headers = {"Content-Type": "application/json"}
            # 1 and 4 connections alternate, on different batches of the same shape
            json_1 = ingest(port, json_bodies[:150], json_headers, 1, pid)
            json_4 = ingest(port, more[:150], json_headers, 4, pid)
            json_1b = ingest(port, json_bodies[150:], json_headers, 1, pid)
            json_4b = ingest(port, more[150:], json_headers, 4, pid)
            proto_rate = ingest(
                port,
                [gzip.compress(zipkin_proto.encode_dicts(batch)) for batch in batches[:150]],
                {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
                1,
                pid,
            )

            big = synthetic_trace(rng, 1, now_us, 1000)
            big_body = json_body(big)
            client = Client(port)
            client.request("POST", "/api/v2/spans", big_body, {"Content-Type": "application/json"})
            path = f"/api/v2/trace/{big[0]['traceId']}"
            trace_us = time_per_op(lambda: client.request("GET", path), min_time=0.5, repeats=3)
        finally:
            process.__exit__(None, None, None)

        print("\n## collector ingest (batches of 100 spans, one client process, loopback)\n")
        print("case | spans/s | server CPU µs/span | spans/s on one server core")
        print("-|-|-|-")
        cases = (
            ("Zipkin JSON, 1 connection", best(json_1, json_1b)),
            ("Zipkin JSON, 4 connections", best(json_4, json_4b)),
            ("Zipkin proto3 + gzip, 1 connection", proto_rate),
        )
        for label, (rate, cpu) in cases:
            one_core = f"{1e6 / cpu:,.0f}" if cpu else "-"
            print(f"{label} | {rate:,.0f} | {cpu or 0:.1f} | {one_core}")
        scaling = best(json_4, json_4b)[0] / best(json_1, json_1b)[0]
        print(f"\n4 connections / 1 connection: {scaling:.2f}x")
        print(f"\nGET /api/v2/trace/{{id}} of a 1,000-span trace: {trace_us / 1000:.2f} ms")

        storage_against_floor(workdir, batches[:200])

        # -- 3 and 4: search over a large store, written through the storage layer ---------
        db_path = workdir / "search.db"
        store = SqliteSpanStore(db_path, max_age=None, max_bytes=None)
        start = time.perf_counter()
        trace_count = total_spans // 10
        batch: list[dict[str, Any]] = []
        for trace_no in range(trace_count):
            trace_start = now_us - rng.randint(0, 86_400_000_000)
            batch.extend(synthetic_trace(rng, trace_no, trace_start, 10))
            if len(batch) >= 10_000:
                store.accept(batch)
                batch = []
        if batch:
            store.accept(batch)
        load_s = time.perf_counter() - start
        stored = store.span_count()
        store.close()
        size = db_path.stat().st_size + sum(p.stat().st_size for p in workdir.glob("search.db-*"))
        print(f"\n## collector search over {stored:,} stored spans\n")
        print(
            f"written through the storage layer in {load_s:.1f} s "
            f"({stored / load_s:,.0f} spans/s); database {size / 1e6:.0f} MB, "
            f"{size / stored:.0f} bytes per span"
        )

        process, port = serve(db_path, workdir / "search.log")
        try:
            client = Client(port)
            end = now_us // 1000 + 1000
            queries = {
                "newest 10 traces (no filter)": f"endTs={end}&lookback=86400000",
                "serviceName": f"serviceName=service-03&endTs={end}&lookback=86400000",
                "serviceName + spanName": (
                    f"serviceName=service-03&spanName=operation-21&endTs={end}&lookback=86400000"
                ),
                "serviceName + spanName, no such pair": (
                    f"serviceName=service-03&spanName=operation-10&endTs={end}&lookback=86400000"
                ),
                "annotationQuery error and http.method=GET": (
                    f"annotationQuery=error%20and%20http.method%3DGET&endTs={end}&lookback=86400000"
                ),
                "serviceName + minDuration 190ms": (
                    f"serviceName=service-07&minDuration=190000&endTs={end}&lookback=86400000"
                ),
                "last hour, limit 100": f"endTs={end}&lookback=3600000&limit=100",
                "rare: no match in 24h": (
                    f"serviceName=service-03&annotationQuery=nothing%3Dhere&endTs={end}"
                    "&lookback=86400000"
                ),
            }
            print("\nquery | ms per request | traces returned")
            print("-|-|-")
            for label, query in queries.items():
                found = client.request("GET", f"/api/v2/traces?{query}")
                count = len(json.loads(found))
                ms = (
                    time_per_op(
                        lambda q=query: client.request("GET", f"/api/v2/traces?{q}"),
                        min_time=0.3,
                        repeats=3,
                    )
                    / 1000
                )
                print(f"{label} | {ms:.1f} | {count}")
            for path in ("/api/v2/services", f"/api/v2/dependencies?endTs={end}&lookback=3600000"):
                ms = time_per_op(lambda p=path: client.request("GET", p), min_time=0.3, repeats=3)
                print(f"GET {path.split('?')[0]} | {ms / 1000:.1f} | -")
        finally:
            process.__exit__(None, None, None)


if __name__ == "__main__":
    main()
