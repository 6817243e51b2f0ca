"""A backend that writes one log line per finished span through :mod:`logging`."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from tomograph.encoding.values import safe_text, tag_text
from tomograph.ids import format_span_id, format_trace_id

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["LogBackend", "span_to_dict"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def span_to_dict(span: Span) -> dict[str, Any]:
    """A finished span as a JSON-ready dict in Zipkin v2 field names."""
    record: dict[str, Any] = {
        "traceId": format_trace_id(span.trace_id),
        "id": format_span_id(span.span_id),
        "name": safe_text(span.name),
        "timestamp": span.timestamp,
        "duration": span.duration,
    }
    if span.parent_id:
        record["parentId"] = format_span_id(span.parent_id)
    if span.kind is not None:
        record["kind"] = span.kind.value
    if span.local_endpoint is not None and span.local_endpoint.service_name:
        record["localEndpoint"] = {"serviceName": safe_text(span.local_endpoint.service_name)}
    if span.annotations:
        record["annotations"] = [
            {"timestamp": note.timestamp, "value": safe_text(note.value)}
            for note in span.annotations
        ]
    if span.tags:
        record["tags"] = {safe_text(key): tag_text(value) for key, value in span.tags.items()}
    return record


class _LazySpanLine:
    """Formats the span only if the log record is actually emitted."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __str__(self) -> str:
        return json.dumps(span_to_dict(self.span), separators=(",", ":"), sort_keys=True)


class LogBackend:
    """Logs each finished span as one JSON line on the ``tomograph.spans`` logger.

    >>> import tomograph
    >>> tracer = tomograph.Tracer('svc', backends=[LogBackend(level='debug')])

    Formatting happens only when the logger is enabled for ``level``. While the application
    has not set up :mod:`logging` at all (no handler on the logger or any of its parents),
    the lines go to ``sys.stderr``: Python would show only warnings and above then, and a
    backend asked to log spans that printed nothing would look like tracing that lost them.
    """

    def __init__(self, logger: str | logging.Logger = "tomograph.spans", level: str = "info"):
        if level not in _LEVELS:
            raise ValueError(f"log level must be one of {sorted(_LEVELS)}, not {level!r}")
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = _LEVELS[level]

    @classmethod
    def from_url(cls, url: str) -> LogBackend:
        """``log://`` or ``log://?logger=my.spans&level=debug``."""
        from tomograph.urls import url_query

        query = url_query(url, {"logger", "level"})
        return cls(query.get("logger", "tomograph.spans"), query.get("level", "info"))

    def report(self, span: Span) -> None:
        """Log ``span`` (formatted lazily); to stderr while logging is not set up."""
        logger = self.logger
        if logger.hasHandlers():
            logger.log(self.level, "%s", _LazySpanLine(span))
        elif not logger.disabled and logger.manager.disable < self.level:
            # What logging.lastResort does for warnings, for the level this backend logs at.
            sys.stderr.write(f"{_LazySpanLine(span)}\n")

    def flush(self, timeout: float | None = None) -> bool:
        """Logging is synchronous: always True."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"LogBackend(logger={self.logger.name!r})"
