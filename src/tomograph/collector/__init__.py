"""The embedded Zipkin-compatible collector and web UI (``tomograph serve``).

It speaks Zipkin's v2 HTTP API (JSON and proto3 ingest, the query API the Zipkin UI uses) and
OTLP/HTTP trace ingest, keeps spans in SQLite (or PostgreSQL, shared by several collectors:
:mod:`tomograph.collector.postgres_store`), and serves a web UI at ``/``. Needs the
``collector`` extra: ``pip install 'tomograph-tracing[collector]'``.

>>> from tomograph.collector import CollectorSettings, create_app
>>> settings = CollectorSettings(port=9411)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tomograph.collector.settings import CollectorSettings, default_db_path
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import QueryRequest, SpanStore

if TYPE_CHECKING:
    from tomograph.collector.app import create_app
    from tomograph.collector.server import serve

__all__ = [
    "CollectorSettings",
    "QueryRequest",
    "SpanStore",
    "SqliteSpanStore",
    "create_app",
    "default_db_path",
    "serve",
]


def __getattr__(name: str) -> Any:
    # Starlette and uvicorn are imported only when the server is wanted.
    if name == "create_app":
        from tomograph.collector.app import create_app

        return create_app
    if name == "serve":
        from tomograph.collector.server import serve

        return serve
    raise AttributeError(f"module 'tomograph.collector' has no attribute {name!r}")
