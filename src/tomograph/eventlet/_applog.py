"""Application log records as notes on the span current when they are logged."""

from __future__ import annotations

import logging

from tomograph.context import CURRENT_SPAN

__all__ = ["SpanNoteHandler"]


class SpanNoteHandler(logging.Handler):
    """A logging handler that adds each record's formatted message to the current span.

    Records of tomograph's own loggers are skipped (a failing reporter must not feed itself).

    >>> import tomograph
    >>> from tomograph.reporting.memory import MemoryBackend
    >>> memory = MemoryBackend()
    >>> log = logging.getLogger('doctest.app')
    >>> log.addHandler(SpanNoteHandler())
    >>> with tomograph.Tracer('svc', backends=[memory]).span('request'):
    ...     log.warning('disk %d%% full', 91)
    >>> [note.value for note in memory.spans[0].annotations]
    ['disk 91% full']
    """

    def emit(self, record: logging.LogRecord) -> None:
        span = CURRENT_SPAN.get()
        if span is None or not span.sampled or span.finished:
            return
        if record.name == "tomograph" or record.name.startswith("tomograph."):
            return
        try:
            span.annotate(self.format(record))
        except Exception:
            self.handleError(record)
