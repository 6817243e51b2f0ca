"""A backend that appends finished spans as JSON lines to a file: for traced subprocesses."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tomograph.reporting.log import span_to_dict
from tomograph.span import Span


class FileBackend:
    """Writes each span (Zipkin v2 field names) as one JSON line, at once."""

    report_never_raises = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def report(self, span: Span) -> None:
        record = span_to_dict(span)
        if span.remote_endpoint is not None:
            record["remoteEndpoint"] = span.remote_endpoint._asdict()
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock, self.path.open("a") as file:
            file.write(line)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        pass


def read_spans(path: str | Path) -> list[dict[str, Any]]:
    """The spans written so far to ``path`` by a :class:`FileBackend`."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text()
    # a line the writer is still appending (a long span is written in more than one piece) is
    # not read until its newline is there
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
