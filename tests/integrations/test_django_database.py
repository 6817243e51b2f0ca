"""Django's SQL statements as client spans, on real SQLite and PostgreSQL connections, in every
thread, never with parameter values."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

from django.db import connections
from django.test import AsyncClient, Client
from tests.integrations.django_site import in_process
from tests.support.postgres import postgres_cluster
from tests.support.thread_calls import all_at_once

from tomograph.integrations import django as traced_django
from tomograph.integrations.django import StatementTracer
from tomograph.integrations.django.database import database_traced
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

in_process.configure()


@pytest.fixture(scope="module")
def postgres_port() -> Iterator[str]:
    with postgres_cluster() as url:
        port = url.rsplit(":", 1)[1].split("/", 1)[0]
        connections.settings["postgres"]["PORT"] = port
        yield port
        connections.close_all()


@pytest.fixture(params=["default", "postgres"])
def alias(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("postgres_port")
    return str(request.param)


@pytest.fixture(autouse=True)
def _traced_database() -> Iterator[None]:
    traced_django.trace_database()
    yield
    traced_django.untrace_database()
    traced_django.unpatch()


def sql_spans(memory: MemoryBackend) -> list[Span]:
    return [span for span in memory.spans if span.kind is SpanKind.CLIENT]


def ours(connection: Any) -> list[Any]:
    return [w for w in connection.execute_wrappers if isinstance(w, StatementTracer)]


def client() -> Client:
    return Client(raise_request_exception=False)


def test_statements_are_client_spans_under_the_request_span(
    memory: MemoryBackend, alias: str
) -> None:
    assert client().get(f"/sql/{alias}").json() == {"rows": 1}
    request_span = next(span for span in memory.spans if span.kind is SpanKind.SERVER)
    names = [span.name for span in sql_spans(memory)]
    assert names[-3:] == ["DELETE items", "INSERT items", "SELECT items"]
    assert all(span.parent_id == request_span.span_id for span in sql_spans(memory))
    assert all(span.trace_id == request_span.trace_id for span in sql_spans(memory))


def test_statements_are_recorded_without_parameter_values(
    memory: MemoryBackend, alias: str
) -> None:
    client().get(f"/sql/{alias}")
    insert = memory.find("INSERT items")
    assert insert.tags["db.statement"] == "INSERT INTO items (name) VALUES (%s)"
    assert insert.tags["db.operation"] == "INSERT"
    assert insert.tags["db.sql.table"] == "items"
    assert "db.parameters" not in insert.tags
    assert "secret-name" not in repr([(s.tags, s.annotations) for s in memory.spans])


def test_the_database_is_described_by_vendor_name_and_address(
    memory: MemoryBackend, alias: str
) -> None:
    client().get(f"/sql/{alias}")
    span = memory.find("INSERT items")
    assert span.tags["django.db.alias"] == alias
    assert span.tags["db.row_count"] == 1
    assert span.remote_endpoint is not None
    if alias == "postgres":
        assert span.tags["db.system"] == "postgresql"
        assert span.tags["db.name"] == "postgres"
        assert span.tags["server.address"] == "127.0.0.1"
        assert span.tags["server.port"] == int(connections.settings["postgres"]["PORT"])
        assert span.remote_endpoint.service_name == "postgresql"
        assert span.remote_endpoint.ipv4 == "127.0.0.1"
    else:
        assert span.tags["db.system"] == "sqlite"
        assert str(span.tags["db.name"]).endswith("site.db")
        assert "server.address" not in span.tags
        assert span.remote_endpoint.service_name == "sqlite"


def test_executemany_is_one_span_with_the_batch_size_and_no_values(
    memory: MemoryBackend, alias: str
) -> None:
    client().get(f"/sql-many/{alias}")
    inserts = [span for span in sql_spans(memory) if span.name == "INSERT items"]
    assert len(inserts) == 1
    assert inserts[0].tags["db.batch.size"] == 3
    assert "secret-a" not in repr(inserts[0].tags)


def test_a_failing_statement_is_an_error_span_and_the_request_a_500(
    memory: MemoryBackend, alias: str
) -> None:
    assert client().get(f"/sql-error/{alias}").status_code == 500
    failed = memory.find("SELECT no_such_table")
    assert failed.error
    assert failed.tags["exception.type"] in ("OperationalError", "ProgrammingError")
    assert "no_such_table" in str(failed.tags["error"])
    assert "\n" not in str(failed.tags["error"])  # PostgreSQL's DETAIL lines may hold values
    request_span = next(span for span in memory.spans if span.kind is SpanKind.SERVER)
    assert request_span.error
    assert request_span.tags["exception.type"] == failed.tags["exception.type"]


def test_values_in_a_database_errors_message_reach_no_span(
    memory: MemoryBackend, alias: str
) -> None:
    assert client().get(f"/sql-detail/{alias}").status_code == 500
    request_span = next(span for span in memory.spans if span.kind is SpanKind.SERVER)
    assert request_span.tags["exception.type"] == "IntegrityError"
    assert memory.find("INSERT strict_items").error
    recorded = repr(
        [(span.tags, [str(note) for note in span.annotations]) for span in memory.spans]
    )
    assert "secret-row" not in recorded


def test_parameters_are_recorded_only_when_asked_for(memory: MemoryBackend, alias: str) -> None:
    traced_django.untrace_database()
    assert traced_django.trace_database(record_parameters=True) is True
    client().get(f"/sql/{alias}")
    assert "secret-name" in str(memory.find("INSERT items").tags["db.parameters"])


def test_patch_then_unpatch_keeps_the_applications_own_statement_tracing(
    memory: MemoryBackend,
) -> None:
    # trace_database() in the settings, then tomograph run's patch(), then unpatch().
    assert database_traced()
    assert traced_django.patch() is True
    assert traced_django.unpatch() is True
    assert database_traced()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    assert [span.name for span in sql_spans(memory)] == ["SELECT"]


def test_each_connection_holds_the_wrapper_once_across_reconnects_and_retracing(
    memory: MemoryBackend, alias: str
) -> None:
    assert traced_django.trace_database() is False
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close()
    with connection.cursor() as cursor:  # connects again: connection_created once more
        cursor.execute("SELECT 2")
    traced_django.untrace_database()
    traced_django.trace_database()
    assert len(ours(connection)) == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT 3")
    assert [span.tags["db.statement"] for span in sql_spans(memory)] == [
        "SELECT 1",
        "SELECT 2",
        "SELECT 3",
    ]


def test_the_applications_own_execute_wrappers_keep_working(
    memory: MemoryBackend, alias: str
) -> None:
    connection = connections[alias]
    connection.close()  # the wrapper goes on when the connection is made, inside the block
    seen: list[str] = []

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert count not in connection.execute_wrappers  # Django popped its own, not ours
    assert len(ours(connection)) == 1
    assert seen == ["SELECT 1"]
    assert [span.name for span in sql_spans(memory)] == ["SELECT"]


def test_untraced_connections_record_nothing(memory: MemoryBackend, alias: str) -> None:
    traced_django.untrace_database()
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")
    assert sql_spans(memory) == []


def test_statements_in_32_threads_each_on_their_own_connection(
    memory: MemoryBackend, alias: str
) -> None:
    wrappers: list[int] = []
    lock = threading.Lock()

    def query(index: int) -> None:
        connection = connections[alias]  # a new connection object in each thread
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {index}")
            with lock:
                wrappers.append(len(ours(connection)))
        finally:
            connection.close()

    all_at_once(32, query)
    assert wrappers == [1] * 32
    statements = sorted(str(span.tags["db.statement"]) for span in sql_spans(memory))
    assert statements == sorted(f"SELECT {index}" for index in range(32))


def test_statements_of_an_async_view_are_children_of_its_span(memory: MemoryBackend) -> None:
    asyncio.run(AsyncClient().get("/async-sql"))
    request_span = next(span for span in memory.spans if span.kind is SpanKind.SERVER)
    assert request_span.name == "GET /async-sql"
    assert memory.find("INSERT items").parent_id == request_span.span_id


def test_patch_traces_the_database_too(memory: MemoryBackend) -> None:
    traced_django.untrace_database()
    traced_django.patch()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    traced_django.unpatch()
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 2")
    assert [span.tags["db.statement"] for span in sql_spans(memory)] == ["SELECT 1"]


def test_with_psycopg_patched_too_a_postgresql_statement_is_one_span(
    memory: MemoryBackend, postgres_port: str
) -> None:
    # `tomograph run` patches both Django and the driver under it: the driver stays quiet for
    # the statements Django records, and still records those sent to it directly.
    from tomograph.integrations import psycopg as traced_psycopg

    traced_psycopg.patch()
    try:
        client().get("/sql/postgres")
        django_spans = sql_spans(memory)
        with connections["postgres"].cursor() as cursor:
            raw = cursor.cursor if hasattr(cursor, "cursor") else cursor
            raw.execute("SELECT 42")
    finally:
        traced_psycopg.unpatch()
    statements = [span.tags["db.statement"] for span in sql_spans(memory)]
    assert statements[-3:-1] == [span.tags["db.statement"] for span in django_spans][-2:]
    assert len(statements) == len(set(statements)), statements
    assert statements[-1] == "SELECT 42"
    assert sql_spans(memory)[-1].tags["db.system"] == "postgresql"
