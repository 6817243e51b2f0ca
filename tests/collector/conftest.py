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

    def __init__(self, tmp_path: Path, store: SpanStore | None = None, **settings: Any) -> None:
        self.port = free_port()
        self.settings = CollectorSettings(
            port=self.port, db_path=tmp_path / f"app-{self.port}.db", **settings
        )
        self.app = create_app(self.settings, store)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

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
