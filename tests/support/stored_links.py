"""The dependency links of a SQLite span file computed afresh: every trace of a window read from
its spans and linked by the reference rules (:mod:`tests.support.zipkin_dependency_rules`),
independent of the store's linker and of the links it keeps."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support import zipkin_dependency_rules as zipkin_rules

from tomograph.collector.storage import DependencyLink


def full_computation(path: Path, end_ts: int, lookback: int) -> list[DependencyLink]:
    """The links of the traces whose timestamp is in the window (epoch ms), as
    ``/dependencies`` answers them, the spans of each trace in the store's order."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT s.trace_low, s.span_id, s.parent_id, s.kind, s.shared, s.service,"
            " s.remote_service, s.error FROM spans s WHERE s.trace_low IN"
            " (SELECT trace_low FROM traces WHERE ts BETWEEN ? AND ?)"
            " ORDER BY s.trace_low, s.digest",
            ((end_ts - lookback) * 1000, end_ts * 1000),
        ).fetchall()
    finally:
        db.close()
    traces: dict[int, list[zipkin_rules.LinkSpan]] = {}
    for low, span_id, parent_id, kind, shared, service, remote, error in rows:
        span = zipkin_rules.LinkSpan(
            span_id, parent_id, kind, bool(shared), service or None, remote or None, bool(error)
        )
        traces.setdefault(low, []).append(span)
    total: dict[tuple[str, str], list[int]] = {}
    for spans in traces.values():
        for pair, (calls, errors) in zipkin_rules.trace_links(spans).items():
            counts = total.setdefault(pair, [0, 0])
            counts[0] += calls
            counts[1] += errors
    return [
        DependencyLink(parent=parent, child=child, callCount=calls, errorCount=errors)
        for (parent, child), (calls, errors) in sorted(total.items())
    ]
