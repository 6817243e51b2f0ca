"""Several collectors on one PostgreSQL database: what sharing it must keep true.

Store objects stand for collector instances (each has its own connections and no shared
Python state); the end-to-end tests start real ``tomograph serve`` processes.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from tests.collector.conftest import StoreFactory
from tests.support.collector import decoded, make_span, now_us
from tests.support.collector import http as request
from tests.support.servers import BackgroundProcess, free_port, wait_for_port
from tests.support.thread_calls import all_at_once

from tomograph.collector import postgres_store
from tomograph.collector.postgres_store import PostgresSpanStore
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import (
    QueryRequest,
    QueryTimeout,
    StoreClosed,
    StoreOpenError,
    StoreUnavailable,
)

T = TypeVar("T")


def run_in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """``work(i)`` on ``count`` threads released together; their results, or the first error."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except BaseException as error:
            errors.append(error)

    all_at_once(count, run, timeout=120)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def instances(postgres_url: str) -> Iterator[StoreFactory]:
    factory = StoreFactory("postgresql", postgres_url)
    yield factory
    factory.close_all()


def client_server_trace(trace_id: str, error: bool = False) -> list[dict[str, Any]]:
    """web calls api (both halves reported, shared id); api calls db (client span only)."""
    start = now_us() - 50_000
    return [
        make_span(trace_id, "1" * 16, name="get", service="web", kind="SERVER", timestamp=start),
        make_span(
            trace_id,
            "2" * 16,
            parent_id="1" * 16,
            service="web",
            remote="api",
            kind="CLIENT",
            timestamp=start + 10,
            tags={"error": "timeout"} if error else None,
        ),
        make_span(
            trace_id, "2" * 16, service="api", kind="SERVER", shared=True, timestamp=start + 20
        ),
        make_span(
            trace_id,
            "3" * 16,
            parent_id="2" * 16,
            service="api",
            remote="db",
            kind="CLIENT",
            timestamp=start + 30,
        ),
    ]


# -- schema ------------------------------------------------------------------------------------


def test_three_instances_starting_together_on_an_empty_database_all_start(
    instances: StoreFactory,
) -> None:
    stores = run_in_threads(3, lambda _: instances())
    for store in stores:
        assert store.service_names() == []
    stores[0].accept(decoded(client_server_trace("a" * 32)))
    assert [s.span_count() for s in stores] == [4, 4, 4]


def test_a_database_of_a_newer_schema_is_refused(instances: StoreFactory) -> None:
    instances().close()
    with psycopg.connect(instances.location, autocommit=True) as db:
        db.execute("UPDATE tomograph_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreOpenError, match="unknown span schema version 99"):
        instances()


def test_tables_of_another_program_are_left_alone(instances: StoreFactory) -> None:
    with psycopg.connect(instances.location, autocommit=True) as db:
        db.execute("CREATE TABLE tomograph_spans (id int)")
    with pytest.raises(StoreOpenError, match="another program"):
        instances()


def test_an_unreachable_database_is_named_without_its_password() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(StoreOpenError) as raised:
        PostgresSpanStore(f"postgresql://spans:hunter2-secret@127.0.0.1:{port}/traces")
    assert f"postgresql://spans@127.0.0.1:{port}/traces" in str(raised.value)
    assert "hunter2" not in str(raised.value)


# -- writes from several instances ------------------------------------------------------------


def test_a_batch_retried_on_another_instance_is_stored_once(instances: StoreFactory) -> None:
    first, second = instances(), instances()
    spans = decoded(client_server_trace("a" * 32))
    assert first.accept(spans) == 4
    assert second.accept(spans) == 0
    assert len(second.get_trace("a" * 32) or []) == 4


def test_the_same_batch_sent_to_three_instances_at_once_is_stored_once(
    instances: StoreFactory,
) -> None:
    stores = [instances() for _ in range(3)]
    batch = decoded(
        [make_span(f"{t + 1:032x}", f"{s + 1:016x}") for t in range(50) for s in range(4)]
    )
    new = run_in_threads(3, lambda i: stores[i].accept(batch))
    assert sum(new) == 200
    assert stores[0].span_count() == 200


def test_links_of_a_trace_written_by_several_instances_at_once_count_every_span(
    instances: StoreFactory, tmp_path: Path
) -> None:
    # each span of every trace goes to another instance, all at the same moment: the links
    # each instance computes must still come from the whole trace
    stores = [instances() for _ in range(4)]
    traces = [client_server_trace(f"{t + 1:032x}", error=t % 3 == 0) for t in range(40)]
    run_in_threads(4, lambda i: [stores[i].accept(decoded([trace[i]])) for trace in traces])
    reference = SqliteSpanStore(tmp_path / "reference.db", max_age=None)
    try:
        reference.accept(decoded([span for trace in traces for span in trace]))
        end, lookback = now_us() // 1000 + 1000, 3_600_000
        expected = reference.dependencies(end, lookback)
    finally:
        reference.close()
    assert expected == [
        {"parent": "api", "child": "db", "callCount": 40, "errorCount": 0},
        {"parent": "web", "child": "api", "callCount": 40, "errorCount": 14},
    ]
    for store in stores:
        assert store.dependencies(end, lookback) == expected


def test_dependencies_do_not_read_the_spans_of_the_window(
    instances: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = instances()
    store.accept(decoded(client_server_trace("a" * 32)))
    with psycopg.connect(instances.location, autocommit=True) as db:
        db.execute("ALTER TABLE tomograph_spans RENAME TO tomograph_spans_away")
    try:
        links = store.dependencies(now_us() // 1000 + 1000, 3_600_000)
    finally:
        with psycopg.connect(instances.location, autocommit=True) as db:
            db.execute("ALTER TABLE tomograph_spans_away RENAME TO tomograph_spans")
    assert [(link["parent"], link["child"]) for link in links] == [("api", "db"), ("web", "api")]


def test_another_instances_writes_reach_a_cached_answer_within_the_version_period(
    instances: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = instances(), instances()
    seen = reader.data_version()
    writer.accept(decoded(client_server_trace("a" * 32)))
    clock = [time.monotonic()]
    monkeypatch.setattr(postgres_store.time, "monotonic", lambda: clock[0])
    clock[0] += postgres_store.VERSION_PERIOD
    assert reader.data_version() > seen


# -- retention ---------------------------------------------------------------------------------


def test_retention_on_three_instances_at_once_deletes_each_trace_once(
    instances: StoreFactory,
) -> None:
    stores = [instances(max_age=3600) for _ in range(3)]
    for batch in range(10):
        stores[batch % 3].accept(
            decoded([make_span(f"{batch * 100 + t + 1:032x}", "1" * 16) for t in range(100)])
        )
    later = now_us() + 2 * 3600 * 1_000_000
    results = run_in_threads(3, lambda i: stores[i].enforce_retention(later))
    assert sum(r.traces_deleted for r in results) == 1000
    assert sum(r.spans_deleted for r in results) == 1000
    assert stores[0].span_count() == 0


def test_retention_skips_while_another_instance_runs_it(instances: StoreFactory) -> None:
    store = instances(max_age=3600)
    store.accept(decoded([make_span("a" * 32, "1" * 16)]))
    later = now_us() + 2 * 3600 * 1_000_000
    with psycopg.connect(instances.location, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (postgres_store._RETENTION_LOCK,))
        assert store.enforce_retention(later).traces_deleted == 0
        assert store.span_count() == 1
        other.execute("SELECT pg_advisory_unlock(%s)", (postgres_store._RETENTION_LOCK,))
    assert store.enforce_retention(later).traces_deleted == 1


def test_retention_does_not_delete_a_trace_that_just_received_a_span(
    instances: StoreFactory,
) -> None:
    store = instances(max_age=3600)
    store.accept(decoded([make_span("a" * 32, "1" * 16)]))
    instances.backdate("a" * 32, 7200)
    store.accept(decoded([make_span("a" * 32, "2" * 16)]))  # arrives now: the trace is young
    assert store.enforce_retention().traces_deleted == 0
    assert store.span_count() == 2


# -- real collectors ---------------------------------------------------------------------------


class Collector:
    """One ``tomograph serve`` process on the shared database."""

    def __init__(self, url: str, workdir: Path, name: str, *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "tomograph", "serve", "--port", str(self.port)]
        self.process = BackgroundProcess([*argv, "--db", url, *args], workdir / f"{name}.log")

    def __enter__(self) -> Collector:
        self.process.__enter__()
        try:
            wait_for_port(self.port)
        except TimeoutError:
            raise AssertionError(f"collector did not start:\n{self.process.output()}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.__exit__(*exc_info)

    def kill(self) -> None:
        assert self.process.process is not None
        self.process.process.send_signal(signal.SIGKILL)
        self.process.process.wait(10)


def zipkin_batch(trace_id: str, spans: int) -> tuple[bytes, str]:
    body = [
        make_span(trace_id, f"{s + 1:016x}", parent_id=None if s == 0 else "1".zfill(16))
        for s in range(spans)
    ]
    return json.dumps(body).encode(), "application/json"


def otlp_batch(trace_id: str, spans: int) -> tuple[bytes, str]:
    start = time.time_ns() - 10_000_000
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "otlp-app"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": f"{s + 1:016x}",
                                "name": "work",
                                "kind": 2,
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": str(start + 1000),
                            }
                            for s in range(spans)
                        ]
                    }
                ],
            }
        ]
    }
    return json.dumps(document).encode(), "application/json"


def post_until_stored(
    collectors: list[Collector], first: int, path: str, body: bytes, kind: str
) -> None:
    """Post to one collector, moving on to the next when it is down (as a load balancer does)."""
    for attempt in range(3 * len(collectors)):
        target = collectors[(first + attempt) % len(collectors)]
        try:
            status, answer = request("POST", target.base + path, body, {"Content-Type": kind})
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError):
            continue  # that instance is down: a retried batch is stored once
        if status in (200, 202):  # Zipkin answers 202, OTLP 200
            return
        raise AssertionError(f"{target.base} answered {status}: {answer[:300]!r}")
    raise AssertionError("no collector took the batch")


def test_three_collectors_share_one_database(postgres_url: str, tmp_path: Path) -> None:
    spans_per_batch, batches_per_client, clients = 10, 24, 6
    sent: dict[str, int] = {}
    lock = threading.Lock()
    with ExitStack() as stack:
        collectors = [
            stack.enter_context(Collector(postgres_url, tmp_path, f"c{i}")) for i in range(3)
        ]
        halfway = threading.Barrier(clients + 1)

        failures: list[BaseException] = []

        def client(number: int) -> None:
            try:
                send(number)
            except BaseException as error:
                failures.append(error)
                halfway.abort()
                raise

        def send(number: int) -> None:
            rng = random.Random(number)
            for batch in range(batches_per_client):
                if batch == batches_per_client // 2:
                    halfway.wait(60)  # one collector is killed now, while batches go on
                trace_id = f"{number + 1:08x}{batch + 1:08x}{rng.getrandbits(64):016x}"
                if batch % 2:
                    body, kind = otlp_batch(trace_id, spans_per_batch)
                    path = "/v1/traces"
                else:
                    body, kind = zipkin_batch(trace_id, spans_per_batch)
                    path = "/api/v2/spans"
                post_until_stored(collectors, number + batch, path, body, kind)
                with lock:
                    sent[trace_id] = spans_per_batch

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        halfway.wait(60)
        collectors[0].kill()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        assert len(sent) == clients * batches_per_client
        for survivor in collectors[1:]:
            for trace_id, count in sent.items():
                status, body = request("GET", f"{survivor.base}/api/v2/trace/{trace_id}")
                assert status == 200, (survivor.base, trace_id, status)
                assert len(json.loads(body)) == count  # every span, none twice
            services = json.loads(request("GET", f"{survivor.base}/api/v2/services")[1])
            assert services == ["otlp-app", "svc"]

    # retention on three fresh collectors: each trace is deleted by exactly one of them
    with ExitStack() as stack:
        retainers = [
            stack.enter_context(
                Collector(
                    postgres_url,
                    tmp_path,
                    f"r{i}",
                    "--max-age",
                    "1s",
                    "--retention-interval",
                    "1s",
                )
            )
            for i in range(3)
        ]
        deadline = time.monotonic() + 60
        while json.loads(request("GET", f"{retainers[2].base}/api/v2/services")[1]):
            assert time.monotonic() < deadline, "retention did not run"
            time.sleep(0.2)
    removed = [
        int(count)
        for collector in retainers
        for count in re.findall(r"retention removed (\d+) traces", collector.process.output())
    ]
    assert sum(removed) == len(sent)


def test_a_password_in_the_url_never_reaches_the_log(postgres_url: str, tmp_path: Path) -> None:
    # the private cluster trusts every login: a password is accepted and ignored
    url = postgres_url.replace("://tomograph@", "://tomograph:p4ssw0rd-secret@")
    with Collector(url, tmp_path, "c") as collector:
        status, _ = request(
            "POST",
            collector.base + "/api/v2/spans",
            json.dumps([make_span("a" * 32, "1" * 16)]).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 202
    output = collector.process.output()
    assert "traces in postgresql://tomograph@127.0.0.1" in output
    assert "p4ssw0rd" not in output


def test_a_batch_after_the_database_dropped_the_connections_is_stored(
    instances: StoreFactory,
) -> None:
    # a restart or failover of the server closes every pooled connection; the first batch
    # after it must not be refused for that
    store = instances()
    store.accept(decoded([make_span("a" * 32, "1" * 16)]))
    with psycopg.connect(instances.location, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'tomograph collector'"
        )
    assert store.accept(decoded([make_span("a" * 32, "2" * 16)])) == 1
    assert store.span_count() == 2


def test_a_forked_child_uses_sessions_of_its_own_and_leaves_its_parents_alone(
    instances: StoreFactory,
) -> None:
    # gunicorn --preload opens the store in the master, then forks workers: a worker talking on
    # the master's sessions would share their sockets with it (each process reading the other's
    # results), and closing them would end them for the master too
    store = instances()
    store.accept(decoded([make_span("a" * 32, "1" * 16)]))
    pooled = [*store._writers._idle, *store._readers._idle]
    assert pooled
    sessions = [conn.info.backend_pid for conn in pooled]
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 1
        try:
            store.accept(decoded([make_span("a" * 32, "2" * 16)]))
            own = {conn.info.backend_pid for conn in store._writers._idle}
            status = 0 if store.span_count() == 2 and not own & set(sessions) else 3
            store.close()  # a worker stopping
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # the parent's own connections, still its sessions (closed by the child, this raises)
    assert [conn.execute("SELECT pg_backend_pid()").fetchone()[0] for conn in pooled] == sessions
    assert store.span_count() == 2


# -- reads that must stop, a database that is gone --------------------------------------------


def test_a_query_past_its_timeout_is_stopped(instances: StoreFactory) -> None:
    store = instances(query_timeout=0.5)
    store.accept(decoded([make_span("a" * 32, "1" * 16)]))
    with psycopg.connect(instances.location) as blocker:  # holds the lock until rolled back
        blocker.execute("LOCK TABLE tomograph_traces IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(QueryTimeout):
            store.find_trace_ids(QueryRequest(end_ts=now_us() // 1000, lookback=60_000))
        blocker.rollback()
    assert store.find_trace_ids(QueryRequest(end_ts=now_us() // 1000 + 1000, lookback=60_000))


def test_reads_in_progress_stop_when_the_server_stops(instances: StoreFactory) -> None:
    store = instances()
    outcome: list[BaseException] = []
    with psycopg.connect(instances.location) as blocker:
        blocker.execute("LOCK TABLE tomograph_traces IN ACCESS EXCLUSIVE MODE")

        def read() -> None:
            try:
                store.service_names()
                store.find_trace_ids(QueryRequest(end_ts=now_us() // 1000, lookback=60_000))
            except BaseException as error:
                outcome.append(error)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 10
        with psycopg.connect(instances.location, autocommit=True) as watcher:
            while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'tomograph collector'"
                " AND wait_event_type = 'Lock'"
            ).fetchone():
                assert time.monotonic() < deadline, "the read never waited for the lock"
                time.sleep(0.01)
        store.interrupt_reads()
        reader.join(10)
        blocker.rollback()
    assert [type(error) for error in outcome] == [StoreClosed]
    assert store.accept(decoded([make_span("a" * 32, "1" * 16)])) == 1  # writes go on


def test_a_batch_for_a_database_that_refuses_connections_is_answered_retry_later(
    instances: StoreFactory, postgres_server: str
) -> None:
    store = instances()
    database = instances.location.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        try:
            with pytest.raises(StoreUnavailable) as raised:
                store.accept(decoded([make_span("a" * 32, "1" * 16)]))
        finally:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    assert raised.value.retry_after > 0
    assert database in str(raised.value)
    assert store.accept(decoded([make_span("a" * 32, "1" * 16)])) == 1  # and back
