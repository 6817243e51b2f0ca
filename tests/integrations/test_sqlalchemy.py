"""SQLAlchemy statements become client spans or notes: on real SQLite and PostgreSQL engines."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from tests.support.postgres import postgres_cluster

import tomograph
from tomograph.integrations.sqlalchemy import instrument, uninstrument
from tomograph.model import SpanKind
from tomograph.reporting.memory import MemoryBackend

metadata = sa.MetaData()
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50)),
)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def sql_spans(memory: MemoryBackend) -> list[tomograph.Span]:
    return [s for s in memory.spans if s.kind is SpanKind.CLIENT]


# -- instrument() on SQLite ---------------------------------------------------------------------


def test_each_statement_is_a_client_span_named_after_operation_and_table(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 1, "name": "ada"})
        conn.execute(sa.select(users).where(users.c.id == 1)).all()
    names = [s.name for s in sql_spans(memory)]
    assert names == ["INSERT users", "SELECT users"]


def test_statement_is_recorded_without_parameter_values(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 7, "name": "secret-name"})
    span = memory.find("INSERT users")
    assert span.tags["db.statement"] == "INSERT INTO users (id, name) VALUES (?, ?)"
    assert "secret-name" not in repr(span.tags)
    assert "db.parameters" not in span.tags


def test_record_parameters_opt_in_records_bound_values(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine, record_parameters=True)
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 7, "name": "visible-name"})
    assert "visible-name" in str(memory.find("INSERT users").tags["db.parameters"])


def test_span_carries_database_tags_row_count_and_remote_endpoint(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine, service_name="users-db")
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        conn.execute(sa.update(users).values(name="c"))
    span = memory.find("UPDATE users")
    assert span.kind is SpanKind.CLIENT
    assert span.tags["db.system"] == "sqlite"
    assert str(span.tags["db.name"]).endswith("app.db")
    assert span.tags["db.operation"] == "UPDATE"
    assert span.tags["db.sql.table"] == "users"
    assert span.tags["db.row_count"] == 2
    assert span.remote_endpoint is not None
    assert span.remote_endpoint.service_name == "users-db"
    assert span.local_endpoint == tomograph.get_tracer().local_endpoint


def test_statement_span_is_child_of_current_span(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine)
    with tomograph.span("handle request") as parent, sqlite_engine.connect() as conn:
        conn.execute(sa.select(users)).all()
    span = memory.find("SELECT users")
    assert (span.trace_id, span.parent_id) == (parent.trace_id, parent.span_id)


def test_failing_statement_is_an_error_span_and_the_error_reaches_the_app(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 1, "name": "a"})
    with pytest.raises(sa.exc.IntegrityError), sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 1, "name": "a"})
    failed = [s for s in sql_spans(memory) if s.error]
    assert [s.name for s in failed] == ["INSERT users"]
    assert failed[0].tags["exception.type"] == "IntegrityError"
    assert "UNIQUE constraint failed" in str(failed[0].tags["error"])
    assert failed[0].finished


@pytest.mark.parametrize("as_notes", [False, True], ids=["spans", "notes"])
def test_the_request_span_the_error_reaches_records_no_parameter_values(
    memory: MemoryBackend, sqlite_engine: sa.Engine, as_notes: bool
) -> None:
    # SQLAlchemy's message ends with "[parameters: (1, 'secret-name')]": a view that lets the
    # error through has it recorded by its server span, which must keep no more than the
    # statement's span.
    instrument(sqlite_engine, as_notes=as_notes)
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 1, "name": "secret-name"})

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        with sqlite_engine.begin() as conn:
            conn.execute(users.insert(), {"id": 1, "name": "secret-name"})
        return [b"never"]

    with pytest.raises(sa.exc.IntegrityError) as raised:
        tomograph.Middleware(app)({"REQUEST_METHOD": "POST", "PATH_INFO": "/users"}, print)
    assert "secret-name" in str(raised.value)  # the application still sees all of it
    (server,) = [s for s in memory.spans if s.kind is SpanKind.SERVER]
    assert server.tags["exception.type"] == "IntegrityError"
    assert "UNIQUE constraint failed" in str(server.tags["error"])
    assert "secret" not in repr((server.tags, server.annotations))


def test_as_notes_puts_statements_on_the_current_span(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine, as_notes=True)
    with tomograph.span("request"), sqlite_engine.connect() as conn:
        conn.execute(sa.select(users.c.id)).all()
    assert memory.names() == ["request"]
    notes = memory.find("request").annotations
    assert [n.value for n in notes] == ["SELECT users.id \nFROM users"]
    assert notes[0].duration is not None and notes[0].duration >= 1


def test_as_notes_outside_any_span_records_nothing(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine, as_notes=True)
    with sqlite_engine.connect() as conn:
        conn.execute(sa.select(users)).all()
    assert memory.spans == []


def test_uninstrument_stops_recording(memory: MemoryBackend, sqlite_engine: sa.Engine) -> None:
    instrument(sqlite_engine)
    uninstrument(sqlite_engine)
    with sqlite_engine.connect() as conn:
        conn.execute(sa.select(users)).all()
    assert sql_spans(memory) == []


def test_instrumenting_twice_replaces_the_settings(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine)
    instrument(sqlite_engine, service_name="second")
    with sqlite_engine.connect() as conn:
        conn.execute(sa.select(users)).all()
    spans = sql_spans(memory)
    assert len(spans) == 1
    assert spans[0].remote_endpoint is not None
    assert spans[0].remote_endpoint.service_name == "second"


def test_async_engine_is_instrumented(memory: MemoryBackend, tmp_path: Path) -> None:
    pytest.importorskip("aiosqlite", reason="aiosqlite driver for the async engine")
    from sqlalchemy.ext.asyncio import create_async_engine

    async def run() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
        instrument(engine)
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            with tomograph.span("task"):
                await conn.execute(sa.select(users))
        await engine.dispose()

    asyncio.run(run())
    span = memory.find("SELECT users")
    assert span.parent_id == memory.find("task").span_id


def test_unsampled_trace_records_no_statement(tmp_path: Path) -> None:
    memory = MemoryBackend()
    tomograph.configure(service="svc", backends=[memory], sample_rate=0.0, environ={})
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'u.db'}")
    try:
        instrument(engine)
        metadata.create_all(engine)
        with engine.connect() as conn:
            conn.execute(sa.select(users)).all()
        assert memory.spans == []
    finally:
        engine.dispose()
        tomograph.config.reset()


# -- the classic listeners -------------------------------------------------------------------


def test_classic_listeners_on_statement_events(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    event.listen(sqlite_engine, "before_execute", tomograph.before_execute("my app"))
    event.listen(sqlite_engine, "after_execute", tomograph.after_execute("my app"))
    event.listen(sqlite_engine, "handle_error", tomograph.dbapi_error("my app"))
    with sqlite_engine.begin() as conn:
        conn.execute(users.insert(), {"id": 1, "name": "a"})
        conn.execute(sa.select(users)).all()
    spans = sql_spans(memory)
    assert [s.name for s in spans] == ["INSERT users", "SELECT users"]
    assert {s.service_name for s in spans} == {"my app"}
    assert spans[0].tags["db.statement"] == "INSERT INTO users (id, name) VALUES (?, ?)"
    assert spans[0].tags["db.row_count"] == 1


def test_classic_listeners_on_cursor_events(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    event.listen(sqlite_engine, "before_cursor_execute", tomograph.before_execute("my app"))
    event.listen(sqlite_engine, "after_cursor_execute", tomograph.after_execute("my app"))
    with sqlite_engine.connect() as conn:
        conn.exec_driver_sql("SELECT count(*) FROM users").all()
    assert [s.name for s in sql_spans(memory)] == ["SELECT users"]


def test_classic_error_listener_on_handle_error_ends_the_span_as_error(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    event.listen(sqlite_engine, "before_execute", tomograph.before_execute("my app"))
    event.listen(sqlite_engine, "after_execute", tomograph.after_execute("my app"))
    event.listen(sqlite_engine, "handle_error", tomograph.dbapi_error("my app"))
    with pytest.raises(sa.exc.OperationalError), sqlite_engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    (span,) = sql_spans(memory)
    assert span.error
    assert span.name == "SELECT no_such_table"
    assert "no such table" in str(span.tags["error"])


def test_classic_start_and_finish_alone_still_end_failed_statements(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    # Code written for SQLAlchemy < 2 listened to dbapi_error, which 2.x no longer has.
    event.listen(sqlite_engine, "before_execute", tomograph.before_execute("my app"))
    event.listen(sqlite_engine, "after_execute", tomograph.after_execute("my app"))
    with pytest.raises(sa.exc.OperationalError), sqlite_engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM missing"))
    with sqlite_engine.connect() as conn:
        conn.execute(sa.select(users)).all()
    spans = sql_spans(memory)
    assert [(s.name, s.error) for s in spans] == [("SELECT missing", True), ("SELECT users", False)]


def test_dbapi_error_event_does_not_exist_in_sqlalchemy_2(sqlite_engine: sa.Engine) -> None:
    # What docs/sqlalchemy.md tells classic users: attach dbapi_error to handle_error instead.
    with pytest.raises(sa.exc.InvalidRequestError):
        event.listen(sqlite_engine, "dbapi_error", tomograph.dbapi_error("my app"))


# -- a real PostgreSQL server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.mark.integration
def test_postgresql_statements_and_failure(memory: MemoryBackend, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            metadata.drop_all(conn)
            metadata.create_all(conn)
        instrument(engine)
        with tomograph.span("request") as request:
            with engine.begin() as conn:
                conn.execute(users.insert(), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
                rows = conn.execute(sa.select(users).order_by(users.c.id)).all()
            with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
                conn.execute(users.insert(), {"id": 1, "name": "private-value"})
        assert len(rows) == 2
        spans = [s for s in sql_spans(memory) if s.parent_id == request.span_id]
        names = [s.name for s in spans]
        assert names == ["INSERT users", "SELECT users", "INSERT users"]
        select = spans[1]
        port = sa.make_url(postgres_url).port
        assert select.tags["db.system"] == "postgresql"
        assert select.tags["db.name"] == "postgres"
        assert select.tags["db.row_count"] == 2
        assert select.remote_endpoint == tomograph.Endpoint("postgresql", "127.0.0.1", None, port)
        assert "%(" in str(spans[0].tags["db.statement"])  # placeholders, never values
        failed = spans[2]
        assert failed.error
        assert failed.tags["exception.type"] == "UniqueViolation"
        assert "users_pkey" in str(failed.tags["error"])
        assert "private-value" not in repr(failed.tags) + repr(failed.annotations)
    finally:
        engine.dispose()


def test_parameter_with_a_broken_repr_does_not_break_the_query(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    import sqlite3

    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    sqlite3.register_adapter(Unprintable, lambda value: 5)
    instrument(sqlite_engine, record_parameters=True)
    with sqlite_engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT ? + 1", (Unprintable(),)).all()
    assert rows == [(6,)]
    span = memory.find("SELECT")
    assert "cannot be shown" in str(span.tags["db.parameters"])


# -- patch(): every engine -------------------------------------------------------------------


@pytest.fixture
def patched_sqlalchemy() -> Iterator[None]:
    from tomograph.integrations import sqlalchemy as integration

    assert integration.patch() is True
    try:
        yield
    finally:
        integration.unpatch()


def test_patch_records_engines_created_after_it(
    memory: MemoryBackend, patched_sqlalchemy: None, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'later.db'}")
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    [span] = sql_spans(memory)
    assert span.name == "SELECT"
    assert span.tags["db.system"] == "sqlite"
    engine.dispose()


def test_patch_records_engines_that_existed_before(
    memory: MemoryBackend, sqlite_engine: sa.Engine
) -> None:
    from tomograph.integrations import sqlalchemy as integration

    integration.patch()
    try:
        with sqlite_engine.connect() as connection:
            connection.execute(sa.select(users))
    finally:
        integration.unpatch()
    assert [span.name for span in sql_spans(memory)] == ["SELECT users"]


def test_an_instrumented_engine_records_once_with_its_own_settings(
    memory: MemoryBackend, patched_sqlalchemy: None, sqlite_engine: sa.Engine
) -> None:
    instrument(sqlite_engine, record_parameters=True)
    memory.clear()  # the fixture's CREATE TABLE
    with sqlite_engine.connect() as connection:
        connection.execute(sa.select(users).where(users.c.id == 7))
    [span] = sql_spans(memory)
    assert "7" in str(span.tags["db.parameters"])


def test_unpatch_stops_recording_every_engine(memory: MemoryBackend, tmp_path: Path) -> None:
    from tomograph.integrations import sqlalchemy as integration

    assert integration.patch() is True
    assert integration.patch() is False
    assert integration.patched() is True
    assert integration.unpatch() is True
    assert integration.unpatch() is False
    assert integration.patched() is False
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'after.db'}")
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    assert sql_spans(memory) == []
    engine.dispose()


def test_patched_failing_statement_is_an_error_span(
    memory: MemoryBackend, patched_sqlalchemy: None, sqlite_engine: sa.Engine
) -> None:
    memory.clear()  # the fixture's CREATE TABLE
    with sqlite_engine.connect() as connection, pytest.raises(sa.exc.OperationalError):
        connection.execute(sa.text("SELECT * FROM missing_table"))
    [span] = sql_spans(memory)
    assert "error" in span.tags
