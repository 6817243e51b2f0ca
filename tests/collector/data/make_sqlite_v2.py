"""Writes sqlite_v2.db and sqlite_v2_answers.json: a span database of schema version 2 and what
that version answered for it, for test_sqlite_store's migration test.

Kept for the record: it must run with tomograph's SQLite store of schema version 2 (the one
that deflated span bodies), from the repository's root:

    python -m tests.collector.data.make_sqlite_v2
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.support.collector import decoded, make_span

from tomograph.collector import sqlite_store
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import QueryRequest

HERE = Path(__file__).parent
#: 2023-11-14T22:13:20Z: the spans' time, fixed so that the answers never change.
START_US = 1_700_000_000_000_000


def uploads() -> list[list[dict[str, Any]]]:
    """Three batches of spans with what a store must keep intact: 64- and 128-bit trace ids
    (also sharing a low half), tags (long ones too), annotations, non-ASCII text, errors."""
    batches: list[list[dict[str, Any]]] = []
    for batch in range(3):
        spans: list[dict[str, Any]] = []
        for trace in range(10):
            number = batch * 10 + trace
            trace_id = (
                f"{number + 1:016x}" if number % 3 == 0 else f"{number + 7:016x}{number + 1:016x}"
            )
            root = f"{number + 1:08x}00000001"
            spans.append(
                make_span(
                    trace_id,
                    root,
                    name=f"get /item/{number % 4}",
                    service=f"web-{number % 3}",
                    kind="SERVER",
                    timestamp=START_US + number * 1_000_000,
                    duration=5_000 + number,
                    tags={
                        "http.method": "GET",
                        "http.status_code": "500" if number % 7 == 0 else "200",
                        **({"error": "boom"} if number % 7 == 0 else {}),
                    },
                    annotations=[(START_US + number * 1_000_000 + 10, "wire.send")],
                )
            )
            for child in range(1, 4):
                spans.append(
                    make_span(
                        trace_id,
                        f"{number + 1:08x}{child + 1:08x}",
                        parent_id=root,
                        name=f"query ünïcödé {child}",
                        service="db" if child == 2 else f"api-{child}",
                        remote="db" if child == 1 else None,
                        kind="CLIENT" if child == 1 else None,
                        timestamp=START_US + number * 1_000_000 + child * 100,
                        duration=100 * child,
                        tags={"sql": "SELECT " + "x" * (300 if child == 3 else 10), "tenant": "🙂"},
                    )
                )
        batches.append(spans)
    return batches


def answers(store: SqliteSpanStore, batches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Every trace as stored, some searches, the span names."""
    trace_ids = sorted({span["traceId"] for batch in batches for span in batch})
    window = {"end_ts": START_US // 1000 + 60_000, "lookback": 120_000, "limit": 100}
    searches = {
        "web-1": QueryRequest(service_name="web-1", **window),
        "error": QueryRequest(annotation_query={"error": ""}, **window),
        "api-1 sql": QueryRequest(service_name="api-1", annotation_query={"sql": ""}, **window),
        "db query": QueryRequest(service_name="db", span_name="query ünïcödé 2", **window),
    }
    return {
        "traces": {
            trace_id: json.loads(store.get_trace_json(trace_id) or b"null")
            for trace_id in trace_ids
        },
        "searches": {label: store.find_trace_ids(request) for label, request in searches.items()},
        "window": window,
        "span_names": {service: store.span_names(service) for service in store.service_names()},
    }


def main() -> None:
    if sqlite_store._SCHEMA_VERSION != 2:
        raise SystemExit("run this with the store of schema version 2")
    path = HERE / "sqlite_v2.db"
    for stale in HERE.glob("sqlite_v2.db*"):
        stale.unlink()
    store = SqliteSpanStore(path, max_age=None)
    batches = uploads()
    for batch in batches:
        store.accept(decoded(batch))
    store.dependencies(START_US // 1000 + 60_000, 120_000)  # links stored too
    found = answers(store, batches)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("VACUUM")
    db.close()
    (HERE / "sqlite_v2_answers.json").write_text(json.dumps(found, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
