"""psycopg2 statements become client spans: against a private PostgreSQL cluster."""

from __future__ import annotations

import io
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import psycopg2.sql
import pytest
import sqlalchemy as sa
from tests.support.postgres import postgres_cluster
from tests.support.thread_calls import all_at_once

import tomograph
from tomograph.integrations import psycopg2 as traced_psycopg2
from tomograph.integrations.sqlalchemy import instrument
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sqlalchemy_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url.replace("postgresql+psycopg://", "postgresql+psycopg2://")


@pytest.fixture(scope="module")
def dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg2://", "postgresql://")


@pytest.fixture
def table(dsn: str) -> None:
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    with connection.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS users")
        cur.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
    connection.close()


@pytest.fixture
def conn(dsn: str, table: None) -> Iterator[psycopg2.extensions.connection]:
    traced_psycopg2.patch()
    try:
        connection = psycopg2.connect(dsn)
    finally:
        traced_psycopg2.unpatch()
    connection.autocommit = True
    yield connection
    connection.close()


def sql_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.CLIENT]


def test_statements_of_a_connection_opened_while_patched_are_client_spans(
    memory: MemoryBackend, conn: psycopg2.extensions.connection, dsn: str
) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (1, "secret-name"))
        cur.execute("SELECT id, name FROM users WHERE id = %(id)s", {"id": 1})
        assert cur.fetchall() == [(1, "secret-name")]
    insert, select = sql_spans(memory)
    assert (insert.name, select.name) == ("INSERT users", "SELECT users")
    assert select.tags["db.statement"] == "SELECT id, name FROM users WHERE id = %(id)s"
    assert select.tags["db.system"] == "postgresql"
    assert select.tags["db.name"] == "postgres"
    assert select.tags["db.user"] == "tomograph"
    assert select.tags["server.address"] == "127.0.0.1"
    assert select.tags["db.row_count"] == 1
    port = int(dsn.rsplit(":", 1)[1].split("/", 1)[0])
    assert select.remote_endpoint == tomograph.Endpoint("postgresql", "127.0.0.1", None, port)
    assert "secret" not in repr([(s.tags, s.annotations) for s in (insert, select)])


def test_errors_are_error_spans_without_the_detail_line(
    memory: MemoryBackend, conn: psycopg2.extensions.connection
) -> None:
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.SyntaxError):
            cur.execute("SELEC nonsense")
        cur.execute("INSERT INTO users VALUES (7, 'a')")
        with pytest.raises(psycopg2.errors.UniqueViolation):
            cur.execute("INSERT INTO users VALUES (%s, %s)", (7, "b"))
    syntax, _, unique = sql_spans(memory)
    assert syntax.error and syntax.tags["exception.type"] == "SyntaxError"
    assert unique.error and unique.tags["exception.type"] == "UniqueViolation"
    assert "(id)=(7)" not in repr((unique.tags, unique.annotations))


def test_executemany_copy_and_named_cursors(
    memory: MemoryBackend, conn: psycopg2.extensions.connection
) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO users VALUES (%s, %s)", [(i, "n") for i in range(20)])
        cur.copy_from(io.StringIO("100\tsecret-a\n101\tsecret-b\n"), "users")
        cur.copy_expert("COPY users TO STDOUT", io.StringIO())
    conn.autocommit = False
    with conn.cursor(name="server-side") as named:
        named.itersize = 5
        named.execute("SELECT id FROM users")
        assert sum(1 for _ in named) == 22
    conn.rollback()
    names = [s.name for s in sql_spans(memory)]
    assert names == ["INSERT users", "COPY", "COPY", "SELECT users"]
    assert sql_spans(memory)[0].tags["db.operation.batch.size"] == 20
    assert sql_spans(memory)[1].tags["db.statement"] == "COPY users FROM STDIN"


def test_explicit_cursor_and_connection_factories_are_traced_too(
    memory: MemoryBackend, dsn: str, table: None
) -> None:
    traced_psycopg2.patch()
    try:
        connection = psycopg2.connect(dsn, connection_factory=psycopg2.extras.DictConnection)
    finally:
        traced_psycopg2.unpatch()
    assert isinstance(connection, psycopg2.extras.DictConnection)
    with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone() == {"one": 1}
    with connection.cursor() as cur:
        cur.execute("SELECT 2 AS two")
        assert cur.fetchone()["two"] == 2
    connection.close()
    assert [s.tags["db.statement"] for s in sql_spans(memory)] == [
        "SELECT 1 AS one",
        "SELECT 2 AS two",
    ]


def test_execute_values_names_the_span_but_never_records_the_merged_values(
    memory: MemoryBackend, conn: psycopg2.extensions.connection
) -> None:
    with conn.cursor() as cur:
        psycopg2.extras.execute_values(
            cur, "INSERT INTO users VALUES %s", [(1, "secret-a"), (2, "secret-b")]
        )
    (span,) = sql_spans(memory)
    assert span.name == "INSERT users"
    assert "db.statement" not in span.tags
    assert "secret" not in repr(span.tags)


def test_composed_statements_show_literals_as_placeholders(
    memory: MemoryBackend, conn: psycopg2.extensions.connection
) -> None:
    query = psycopg2.sql.SQL("SELECT id FROM {} WHERE name = {}").format(
        psycopg2.sql.Identifier("users"), psycopg2.sql.Literal("secret")
    )
    with conn.cursor() as cur:
        cur.execute(query)
    assert sql_spans(memory)[0].tags["db.statement"] == 'SELECT id FROM "users" WHERE name = ?'


def test_instrument_connection_traces_an_existing_connection(
    memory: MemoryBackend, dsn: str, table: None
) -> None:
    connection = psycopg2.connect(dsn)
    traced_psycopg2.instrument_connection(connection, record_parameters=True)
    with connection.cursor() as cur:
        cur.execute("SELECT %s", ("visible",))
    connection.close()
    span = sql_spans(memory)[0]
    assert span.name == "SELECT"
    assert "visible" in str(span.tags["db.parameters"])


def test_first_statements_from_32_threads_at_once_each_get_their_span(
    memory: MemoryBackend, dsn: str, table: None
) -> None:
    traced_psycopg2.patch()
    try:
        connections = [psycopg2.connect(dsn) for _ in range(32)]
    finally:
        traced_psycopg2.unpatch()
    tracer = tomograph.get_tracer()
    parents: list[int] = []
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with tracer.span(f"job {index}") as parent, connections[index].cursor() as cur:
                parents.append(parent.span_id)
                cur.execute("SELECT id FROM users WHERE id = %s", (index,))
        except BaseException as error:
            failures.append(error)

    try:
        all_at_once(32, work)
    finally:
        for connection in connections:
            connection.close()
    assert failures == []
    assert sorted(s.parent_id for s in sql_spans(memory)) == sorted(parents)


def test_under_sqlalchemy_each_statement_is_one_span(
    memory: MemoryBackend, sqlalchemy_url: str, table: None
) -> None:
    traced_psycopg2.patch()
    engine = sa.create_engine(sqlalchemy_url)
    instrument(engine)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO users VALUES (:id, 'a')"), {"id": 1})
            connection.execute(
                sa.text("UPDATE users SET name = :name WHERE id = :id"),
                [{"id": 1, "name": "b"}, {"id": 1, "name": "c"}],
            )
            connection.execute(sa.text("SELECT id FROM users")).all()
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO users VALUES (1, 'x')"))
    finally:
        engine.dispose()
        traced_psycopg2.unpatch()
    statements = [s for s in sql_spans(memory) if s.tags.get("db.sql.table") == "users"]
    assert [s.name for s in statements] == [
        "INSERT users",
        "UPDATE users",
        "SELECT users",
        "INSERT users",
    ]
    assert statements[0].tags["db.statement"] == "INSERT INTO users VALUES (%(id)s, 'a')"
    assert statements[3].error


def test_patch_twice_is_a_no_op_and_unpatch_restores_connect() -> None:
    original = psycopg2.connect
    assert traced_psycopg2.patch()
    assert not traced_psycopg2.patch()
    assert traced_psycopg2.patched()
    assert traced_psycopg2.unpatch()
    assert not traced_psycopg2.unpatch()
    assert psycopg2.connect is original
    assert "connect" in vars(psycopg2)


def test_the_password_is_never_recorded(memory: MemoryBackend, dsn: str, table: None) -> None:
    connection = psycopg2.connect(dsn + "?password=hunter2-secret")
    traced_psycopg2.instrument_connection(connection)
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    connection.close()
    span = sql_spans(memory)[0]
    assert "hunter2" not in repr((span.tags, span.remote_endpoint, span.annotations))
