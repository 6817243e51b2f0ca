"""psycopg 3 statements become client spans: against a private PostgreSQL cluster."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import errors, sql
from sqlalchemy.ext.asyncio import create_async_engine
from tests.support.postgres import postgres_cluster
from tests.support.thread_calls import all_at_once

import tomograph
from tomograph.encoding.zipkin_json import encode_spans
from tomograph.integrations import psycopg as traced_psycopg
from tomograph.integrations.sqlalchemy import instrument
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sqlalchemy_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture(scope="module")
def dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS users")
        connection.execute("CREATE TABLE users (id int PRIMARY KEY, name text)")
        yield connection


@pytest.fixture
def patched() -> Iterator[None]:
    assert traced_psycopg.patch()
    yield
    traced_psycopg.unpatch()


def sql_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.CLIENT]


def port_of(dsn: str) -> int:
    return int(dsn.rsplit(":", 1)[1].split("/", 1)[0])


# -- statements ----------------------------------------------------------------------------------


def test_each_statement_is_a_client_span_like_sqlalchemys(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None, dsn: str
) -> None:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO users (id, name) VALUES (%s, %s)", (1, "secret-name"))
        cur.execute("SELECT id, name FROM users WHERE id = %s", (1,))
        assert cur.fetchall() == [(1, "secret-name")]
    insert, select = sql_spans(memory)
    assert (insert.name, select.name) == ("INSERT users", "SELECT users")
    assert insert.tags["db.statement"] == "INSERT INTO users (id, name) VALUES (%s, %s)"
    assert select.tags["db.operation"] == "SELECT"
    assert select.tags["db.sql.table"] == "users"
    assert select.tags["db.system"] == "postgresql"
    assert select.tags["db.name"] == "postgres"
    assert select.tags["db.user"] == "tomograph"
    assert select.tags["server.address"] == "127.0.0.1"
    assert select.tags["server.port"] == port_of(dsn)
    assert select.tags["db.row_count"] == 1
    assert select.remote_endpoint == tomograph.Endpoint(
        "postgresql", "127.0.0.1", None, port_of(dsn)
    )
    assert "secret" not in repr([(s.tags, s.annotations) for s in (insert, select)])
    assert "db.parameters" not in insert.tags


def test_connection_execute_and_child_of_current_span(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    with tomograph.get_tracer().span("request") as parent:
        conn.execute("SELECT 1")
    span = memory.find("SELECT")
    assert (span.trace_id, span.parent_id) == (parent.trace_id, parent.span_id)


def test_connections_opened_before_patch_are_traced_until_unpatch(
    memory: MemoryBackend, conn: psycopg.Connection
) -> None:
    conn.execute("SELECT 1 FROM users")
    traced_psycopg.patch()
    try:
        conn.execute("SELECT 2 FROM users")
    finally:
        traced_psycopg.unpatch()
    conn.execute("SELECT 3 FROM users")
    assert [s.tags["db.statement"] for s in sql_spans(memory)] == ["SELECT 2 FROM users"]


def test_a_syntax_error_is_an_error_span_and_reaches_the_caller(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    with pytest.raises(errors.SyntaxError):
        conn.execute("SELEC nonsense")
    span = sql_spans(memory)[-1]
    assert span.error
    assert span.tags["exception.type"] == "SyntaxError"


def test_a_unique_violation_keeps_the_values_on_the_detail_line_out(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    conn.execute("INSERT INTO users VALUES (%s, %s)", (7, "a"))
    with pytest.raises(errors.UniqueViolation):
        conn.execute("INSERT INTO users VALUES (%s, %s)", (7, "b"))
    span = sql_spans(memory)[-1]
    assert span.error and span.tags["exception.type"] == "UniqueViolation"
    assert "duplicate key" in str(span.tags["error"])
    assert "(id)=(7)" not in repr((span.tags, span.annotations))  # PostgreSQL's DETAIL line


def test_the_request_span_a_unique_violation_reaches_keeps_its_values_out_too(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    # A view that lets the database error through: the WSGI layer records it on its span.
    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        conn.execute("INSERT INTO users VALUES (%s, %s)", (8, "secret-name"))
        return [b"never"]

    conn.execute("INSERT INTO users VALUES (%s, %s)", (8, "secret-name"))
    with pytest.raises(errors.UniqueViolation):
        tomograph.Middleware(app)({"REQUEST_METHOD": "POST", "PATH_INFO": "/signup"}, print)
    (server,) = [s for s in memory.spans if s.kind is SpanKind.SERVER]
    assert server.error and server.tags["exception.type"] == "UniqueViolation"
    assert "duplicate key" in str(server.tags["error"])
    recorded = repr((server.tags, server.annotations, json.loads(encode_spans([server]))))
    assert "(id)=(8)" not in recorded


def test_with_record_parameters_the_request_span_keeps_the_whole_message(
    memory: MemoryBackend, conn: psycopg.Connection
) -> None:
    traced = traced_psycopg.instrument_connection(conn, record_parameters=True)
    traced.execute("INSERT INTO users VALUES (%s, %s)", (9, "a"))
    with tomograph.get_tracer().span("request") as request:
        with pytest.raises(errors.UniqueViolation):
            try:
                traced.execute("INSERT INTO users VALUES (%s, %s)", (9, "b"))
            except errors.UniqueViolation as error:
                request.record_exception(error)
                raise
    assert "(id)=(9)" in str(memory.find("request").tags["error"])


def test_a_server_that_went_away_gives_an_error_span(
    memory: MemoryBackend, dsn: str, conn: psycopg.Connection, patched: None
) -> None:
    with psycopg.connect(dsn, autocommit=True) as doomed:
        pid = doomed.info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            doomed.execute("SELECT 1 FROM users")
    span = sql_spans(memory)[-1]
    assert span.name == "SELECT users" and span.error
    assert span.tags["exception.type"] in ("OperationalError", "AdminShutdown")


def test_record_parameters_opt_in_records_values_and_whole_messages(
    memory: MemoryBackend, dsn: str, conn: psycopg.Connection
) -> None:
    with traced_psycopg.instrument_connection(
        psycopg.connect(dsn, autocommit=True), record_parameters=True, service_name="users-db"
    ) as traced:
        traced.execute("INSERT INTO users VALUES (%s, %s)", (8, "visible-name"))
        with pytest.raises(errors.UniqueViolation):
            traced.execute("INSERT INTO users VALUES (%s, %s)", (8, "again"))
    first, failed = sql_spans(memory)
    assert "visible-name" in str(first.tags["db.parameters"])
    assert "(id)=(8)" in str(failed.tags["error"])
    assert first.remote_endpoint is not None
    assert first.remote_endpoint.service_name == "users-db"


def test_executemany_is_one_span_with_the_batch_size(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO users VALUES (%s, %s)", [(i, f"n{i}") for i in range(50)])
    (span,) = sql_spans(memory)
    assert span.name == "INSERT users"
    assert span.tags["db.operation.batch.size"] == 50


def test_copy_is_one_span_for_the_whole_block(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    with conn.cursor() as cur:
        with cur.copy("COPY users (id, name) FROM STDIN") as copy:
            for index in range(10):
                copy.write_row((index, "secret-row"))
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (10,)
    copy_span = sql_spans(memory)[0]
    assert copy_span.name == "COPY"
    assert copy_span.tags["db.row_count"] == 10
    assert "secret" not in repr(copy_span.tags)


def test_a_failed_copy_is_an_error_span(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    with pytest.raises(errors.UniqueViolation):
        with conn.cursor() as cur, cur.copy("COPY users (id, name) FROM STDIN") as copy:
            copy.write_row((1, "a"))
            copy.write_row((1, "b"))
    span = sql_spans(memory)[0]
    assert span.name == "COPY" and span.error


def test_server_side_cursor_is_one_span_for_its_query_not_one_per_fetch(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    conn.execute("INSERT INTO users SELECT g, 'n' FROM generate_series(1, 100) g")
    memory.clear()
    with conn.transaction(), conn.cursor(name="big") as cur:
        cur.itersize = 10
        cur.execute("SELECT id FROM users ORDER BY id")
        assert sum(1 for _ in cur) == 100
    assert [s.name for s in sql_spans(memory)] == ["SELECT users"]


def test_stream_is_one_span_until_the_rows_are_read_or_the_loop_stops(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    conn.execute("INSERT INTO users SELECT g, 'n' FROM generate_series(1, 30) g")
    memory.clear()
    with conn.cursor() as cur:
        assert sum(1 for _ in cur.stream("SELECT id FROM users")) == 30
        for index, _ in enumerate(cur.stream("SELECT name FROM users")):
            if index == 4:
                break
        with pytest.raises(errors.UndefinedColumn):
            list(cur.stream("SELECT nope FROM users"))
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable
    whole, early, failed, _ = sql_spans(memory)
    assert (whole.name, whole.tags["db.row_count"]) == ("SELECT users", 30)
    assert (early.tags["db.row_count"], early.error) == (5, False)
    assert failed.error and failed.tags["exception.type"] == "UndefinedColumn"


def test_asyncio_stream_left_early_frees_the_connection(
    memory: MemoryBackend, dsn: str, conn: psycopg.Connection, patched: None
) -> None:
    conn.execute("INSERT INTO users SELECT g, 'n' FROM generate_series(1, 30) g")
    memory.clear()

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            cur = aconn.cursor()
            async for row in cur.stream("SELECT id FROM users"):
                if row[0] >= 3:
                    break
            await cur.execute("SELECT 1")
            assert await cur.fetchone() == (1,)

    asyncio.run(main())
    stream_span = sql_spans(memory)[0]
    assert (stream_span.name, stream_span.tags["db.row_count"]) == ("SELECT users", 3)


def test_composed_statements_show_literals_as_placeholders(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    query = sql.SQL("SELECT {} FROM {} WHERE name = {}").format(
        sql.Identifier("id"), sql.Identifier("users"), sql.Literal("secret-literal")
    )
    conn.execute(query)
    span = sql_spans(memory)[0]
    assert span.tags["db.statement"] == 'SELECT "id" FROM "users" WHERE name = ?'
    assert span.name == "SELECT users"


def test_a_10_mb_statement_is_cut(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    huge = "SELECT 1 FROM users /* " + "x" * 10_000_000 + " */"
    conn.execute(huge)
    conn.execute(huge.encode())
    for span in sql_spans(memory):
        assert span.name == "SELECT users"
        assert len(str(span.tags["db.statement"])) == 4096


def test_lone_surrogates_in_identifiers_fail_the_statement_not_the_tracer(
    memory: MemoryBackend, conn: psycopg.Connection, patched: None
) -> None:
    with pytest.raises(UnicodeEncodeError):
        conn.execute('SELECT 1 AS "\ud800"')
    with pytest.raises(UnicodeEncodeError):
        conn.execute(sql.SQL("SELECT 1 AS {}").format(sql.Identifier("\udfff")))
    spans = sql_spans(memory)
    assert [s.error for s in spans] == [True, True]
    assert spans[1].name == "SQL"  # the identifier cannot be written: no statement text
    json.loads(encode_spans(spans))  # and the spans can still be sent


def test_first_statements_from_32_threads_at_once_each_get_their_span(
    memory: MemoryBackend, dsn: str, conn: psycopg.Connection, patched: None
) -> None:
    connections = [psycopg.connect(dsn, autocommit=True) for _ in range(32)]
    tracer = tomograph.get_tracer()
    parents: list[int] = []
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            with tracer.span(f"job {index}") as parent:
                parents.append(parent.span_id)
                connections[index].execute("SELECT id FROM users WHERE id = %s", (index,))
        except BaseException as error:
            failures.append(error)

    try:
        all_at_once(32, work)
    finally:
        for connection in connections:
            connection.close()
    assert failures == []
    selects = [s for s in sql_spans(memory) if s.name == "SELECT users"]
    assert sorted(s.parent_id for s in selects) == sorted(parents)


def test_instrument_connection_traces_that_connection_only(
    memory: MemoryBackend, dsn: str, conn: psycopg.Connection
) -> None:
    with traced_psycopg.instrument_connection(psycopg.connect(dsn)) as traced:
        traced.execute("SELECT 1 FROM users")
        with traced.cursor(name="server-side") as cur:
            cur.execute("SELECT 2 FROM users")
            cur.fetchall()
    conn.execute("SELECT 3 FROM users")
    assert [s.tags["db.statement"] for s in sql_spans(memory)] == [
        "SELECT 1 FROM users",
        "SELECT 2 FROM users",
    ]


def test_instrument_connection_and_patch_together_give_one_span(
    memory: MemoryBackend, dsn: str, patched: None
) -> None:
    connection = psycopg.connect(dsn)
    with traced_psycopg.instrument_connection(connection, service_name="pg") as traced:
        traced.execute("SELECT 1")
    assert len(sql_spans(memory)) == 1


def test_patch_twice_is_a_no_op_and_unpatch_restores_exactly() -> None:
    originals = (psycopg.Cursor.execute, psycopg.AsyncCursor.copy, psycopg.ServerCursor.execute)
    assert traced_psycopg.patch()
    assert not traced_psycopg.patch()
    assert traced_psycopg.patched()
    assert traced_psycopg.unpatch()
    assert not traced_psycopg.unpatch()
    assert not traced_psycopg.patched()
    assert (
        psycopg.Cursor.execute,
        psycopg.AsyncCursor.copy,
        psycopg.ServerCursor.execute,
    ) == originals


# -- asyncio -------------------------------------------------------------------------------------


def test_asyncio_statements_executemany_copy_errors_and_server_cursors(
    memory: MemoryBackend, dsn: str, conn: psycopg.Connection, patched: None
) -> None:
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            with tomograph.get_tracer().span("request"):
                async with aconn.cursor() as cur:
                    await cur.execute("INSERT INTO users VALUES (%s, %s)", (1, "secret-a"))
                    await cur.executemany(
                        "INSERT INTO users VALUES (%s, %s)", [(2, "secret-b"), (3, "secret-c")]
                    )
                    async with cur.copy("COPY users (id, name) FROM STDIN") as copy:
                        await copy.write_row((4, "secret-d"))
                    with pytest.raises(errors.UniqueViolation):
                        await cur.execute("INSERT INTO users VALUES (%s, %s)", (1, "again"))
                async with aconn.transaction(), aconn.cursor(name="c") as server_cursor:
                    await server_cursor.execute("SELECT id FROM users")
                    assert len(await server_cursor.fetchall()) == 4

    asyncio.run(main())
    spans = sql_spans(memory)
    assert [s.name for s in spans] == [
        "INSERT users",
        "INSERT users",
        "COPY",
        "INSERT users",
        "SELECT users",
    ]
    parent = memory.find("request")
    assert {s.parent_id for s in spans} == {parent.span_id}
    assert spans[1].tags["db.operation.batch.size"] == 2
    assert spans[3].error and spans[3].tags["exception.type"] == "UniqueViolation"
    assert "secret" not in repr([s.tags for s in spans])


# -- stacked under SQLAlchemy --------------------------------------------------------------------


def test_under_sqlalchemy_each_statement_is_one_span(
    memory: MemoryBackend, sqlalchemy_url: str, conn: psycopg.Connection, patched: None
) -> None:
    engine = sa.create_engine(sqlalchemy_url)
    instrument(engine)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO users VALUES (:id, :name)"), {"id": 1, "name": "a"}
            )
            connection.execute(
                sa.text("INSERT INTO users VALUES (:id, :name)"),
                [{"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
            )
            connection.execute(sa.text("SELECT id FROM users")).all()
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO users VALUES (1, 'x')"))
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT name FROM users").all()
    finally:
        engine.dispose()
    # (the dialect's own queries on first connect, version and settings, are psycopg's alone)
    statements = [s for s in sql_spans(memory) if s.tags.get("db.sql.table") == "users"]
    names = [s.name for s in statements]
    assert names == ["INSERT users", "INSERT users", "SELECT users", "INSERT users", "SELECT users"]
    # the spans are SQLAlchemy's: its statement text, with its placeholders
    assert statements[0].tags["db.statement"] == "INSERT INTO users VALUES (%(id)s, %(name)s)"
    assert statements[3].error
    # and psycopg's own statements outside SQLAlchemy are still traced afterwards
    memory.clear()
    conn.execute("SELECT 1 FROM users")
    assert [s.name for s in sql_spans(memory)] == ["SELECT users"]


def test_under_sqlalchemy_async_each_statement_is_one_span(
    memory: MemoryBackend, sqlalchemy_url: str, conn: psycopg.Connection, patched: None
) -> None:
    async def main() -> None:
        engine = create_async_engine(sqlalchemy_url)
        instrument(engine)
        try:
            async with engine.begin() as connection:
                await connection.execute(sa.text("INSERT INTO users VALUES (1, 'a')"))
                await connection.execute(sa.text("SELECT id FROM users"))
        finally:
            await engine.dispose()

    asyncio.run(main())
    names = [s.name for s in sql_spans(memory)]
    assert names.count("INSERT users") == 1
    assert names.count("SELECT users") == 1


def test_patch_before_configure_reports_to_the_tracer_configured_later(
    dsn: str, conn: psycopg.Connection
) -> None:
    from tomograph import config

    assert traced_psycopg.patch()  # at import time, before the application configures tomograph
    try:
        backend = MemoryBackend()
        tomograph.configure(service="late", backends=[backend], environ={})
        conn.execute("SELECT 1 FROM users")
        assert [s.name for s in backend.spans] == ["SELECT users"]
    finally:
        traced_psycopg.unpatch()
        config.reset()


def test_the_password_is_never_recorded(memory: MemoryBackend, dsn: str, patched: None) -> None:
    with psycopg.connect(dsn + "?password=hunter2-secret&application_name=app") as connection:
        connection.execute("SELECT 1")
    span = sql_spans(memory)[0]
    assert "hunter2" not in repr((span.tags, span.remote_endpoint, span.annotations))
    assert span.tags["db.user"] == "tomograph"


def test_under_sqlalchemys_classic_listeners_each_statement_is_one_span(
    memory: MemoryBackend, sqlalchemy_url: str, conn: psycopg.Connection, patched: None
) -> None:
    engine = sa.create_engine(sqlalchemy_url)
    engine.connect().close()  # the dialect's first-connect queries, before the listeners
    memory.clear()
    sa.event.listen(engine, "before_execute", tomograph.before_execute("app"))
    sa.event.listen(engine, "after_execute", tomograph.after_execute("app"))
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO users VALUES (1, 'a')"))
            connection.execute(sa.text("SELECT id FROM users")).all()
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO users VALUES (1, 'x')"))
    finally:
        engine.dispose()
    assert [s.name for s in sql_spans(memory)] == ["INSERT users", "SELECT users", "INSERT users"]
    memory.clear()
    conn.execute("SELECT 1 FROM users")  # nothing left hiding the driver's own statements
    assert [s.name for s in sql_spans(memory)] == ["SELECT users"]
