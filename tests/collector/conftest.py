"""Fixtures for the collector tests: a store on a temporary file, and the app served by uvicorn."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")

import uvicorn
from tests.support.servers import free_port

from tomograph.collector.app import create_app
from tomograph.collector.settings import CollectorSettings
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import SpanStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteSpanStore]:
    store = SqliteSpanStore(tmp_path / "traces.db", max_age=None)
    yield store
    store.close()


class ServedApp:
    """The collector app served by a real uvicorn server on a thread (loopback, free port)."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        host: str = "127.0.0.1",
        store: SpanStore | None = None,
        **settings: Any,
    ) -> None:
        self.port = free_port()
        self.settings = CollectorSettings(
            host=host, port=self.port, db_path=tmp_path / f"app-{self.port}.db", **settings
        )
        self.app = create_app(self.settings, store)
        config = uvicorn.Config(
            self.app, host=host, port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{host}:{self.port}"

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedApp]:
    with ServedApp(tmp_path) as app:
        yield app


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster for the whole run; yields a libpq URL of its admin database."""
    from tests.support.postgres import postgres_cluster

    with postgres_cluster() as url:
        yield url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database of the private cluster for one test; dropped after it."""
    from tests.support.postgres import fresh_database

    with fresh_database(postgres_server) as url:
        yield url


class StoreFactory:
    """Opens span stores of one engine on one location for a test; closes them at the end.

    ``engine`` is ``sqlite`` or ``postgresql``; every call opens a new store object on the
    same file or database (so a test can reopen what an earlier store wrote).
    """

    def __init__(self, engine: str, location: str) -> None:
        self.engine = engine
        self.location = location
        self.opened: list[Any] = []

    def __call__(self, **options: Any) -> Any:
        options.setdefault("max_age", None)
        if self.engine == "sqlite":
            store: Any = SqliteSpanStore(self.location, **options)
        else:
            from tomograph.collector.postgres_store import PostgresSpanStore

            store = PostgresSpanStore(self.location, **options)
        self.opened.append(store)
        return store

    def backdate(self, trace_id: str, seconds: float) -> None:
        """Make the trace look as if its last span arrived ``seconds`` earlier."""
        shift = int(seconds * 1_000_000)
        if self.engine == "sqlite":
            import sqlite3

            with sqlite3.connect(self.location) as db:
                db.execute(
                    "UPDATE traces SET received = received - ? WHERE trace_id = ?",
                    (shift, trace_id),
                )
            return
        import psycopg

        with psycopg.connect(self.location, autocommit=True) as db:
            db.execute(
                "UPDATE tomograph_traces SET received = received - %s WHERE trace_id = %s",
                (shift, trace_id),
            )

    def close_all(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A :class:`StoreFactory` for SQLite, then for PostgreSQL (the contract both keep)."""
    if request.param == "sqlite":
        factory = StoreFactory("sqlite", str(tmp_path / "traces.db"))
    else:
        factory = StoreFactory("postgresql", request.getfixturevalue("postgres_url"))
    yield factory
    factory.close_all()
