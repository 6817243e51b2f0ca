"""Logging: trace ids in every log line, and error logs as notes on the current span.

One line puts ``trace_id`` and ``span_id`` on every ``LogRecord`` (hex; empty strings outside
spans), so ``%(trace_id)s`` works in any format::

    from tomograph.integrations.logging import install
    install()
    logging.basicConfig(format='%(levelname)s [%(trace_id)s/%(span_id)s] %(message)s')

:class:`TraceIdFilter` does the same for one handler; :class:`SpanNoteHandler` turns records at
ERROR and above into notes on the current span; :func:`structlog_processor` adds the ids to
structlog events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from typing import Any

from tomograph.context import CURRENT_SPAN
from tomograph.ids import format_span_id, format_trace_id

__all__ = [
    "SpanNoteHandler",
    "TraceIdFilter",
    "install",
    "install_note_handler",
    "installed",
    "patch",
    "patched",
    "structlog_processor",
    "uninstall",
    "unpatch",
]

#: Longest note a log record becomes; longer messages are cut and end with "...".
MAX_NOTE_LENGTH = 1024

_lock = threading.Lock()
_installed_factory: Callable[..., logging.LogRecord] | None = None
_previous_factory: Callable[..., logging.LogRecord] | None = None


def _ids() -> tuple[str, str]:
    span = CURRENT_SPAN.get()
    if span is None:
        return "", ""
    return format_trace_id(span.trace_id), format_span_id(span.span_id)


class TraceIdFilter(logging.Filter):
    """A filter that sets ``record.trace_id`` and ``record.span_id``; it lets every record through.

    Attach it to a handler (then every record that handler formats has the ids) or a logger.
    A value the application already put on the record (``extra={'trace_id': ...}``) is kept.

    >>> import logging
    >>> handler = logging.StreamHandler()
    >>> handler.addFilter(TraceIdFilter())
    >>> handler.setFormatter(logging.Formatter('%(trace_id)s %(message)s'))
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Add ``trace_id``/``span_id`` to ``record`` unless it has them; always keeps it."""
        attributes = record.__dict__
        if "trace_id" not in attributes or "span_id" not in attributes:
            trace_id, span_id = _ids()
            attributes.setdefault("trace_id", trace_id)
            attributes.setdefault("span_id", span_id)
        return True


def install() -> None:
    """Put ``trace_id`` and ``span_id`` on every log record, from every logger and handler.

    It wraps the log record factory (:func:`logging.setLogRecordFactory`), so handlers added
    later are covered too. Calling it again does nothing; :func:`uninstall` undoes it. (Because
    the ids are set when the record is made, ``extra={'trace_id': ...}`` then clashes: the
    :mod:`logging` module refuses to overwrite record attributes. Use :class:`TraceIdFilter`
    if the application passes such extras.)

    >>> install()
    >>> logging.getLogger('demo').makeRecord('demo', 20, 'f', 1, 'hi', (), None).trace_id
    ''
    >>> uninstall()
    """
    global _installed_factory, _previous_factory
    with _lock:
        if _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            span = CURRENT_SPAN.get()
            if span is None:
                record.trace_id = record.span_id = ""
            else:
                record.trace_id = format_trace_id(span.trace_id)
                record.span_id = format_span_id(span.span_id)
            return record

        _previous_factory, _installed_factory = previous, factory
        logging.setLogRecordFactory(factory)


def installed() -> bool:
    """True while the record factory of :func:`install` makes the log records.

    >>> installed()
    False
    """
    return _installed_factory is not None and logging.getLogRecordFactory() is _installed_factory


def uninstall() -> None:
    """Undo :func:`install` (if another factory was installed on top since, it is kept)."""
    global _installed_factory, _previous_factory
    with _lock:
        if _installed_factory is None or _previous_factory is None:
            return
        if logging.getLogRecordFactory() is _installed_factory:
            logging.setLogRecordFactory(_previous_factory)
        _installed_factory = _previous_factory = None


class SpanNoteHandler(logging.Handler):
    """A handler that adds each record at ``level`` or above as a note on the current span.

    The note is the formatted record (``LEVEL: message`` unless a formatter is set), plus the
    exception type and message when the record carries one. Outside a span, or in an unsampled
    trace, it does nothing. The span is not marked as an error: an error log is not a failure
    of the operation.

    >>> import logging
    >>> handler = SpanNoteHandler()  # ERROR and above
    >>> logging.getLogger().addHandler(handler)
    >>> logging.getLogger().removeHandler(handler)
    """

    def __init__(self, level: int | str = logging.ERROR, max_length: int = MAX_NOTE_LENGTH) -> None:
        super().__init__(level)
        self.max_length = max_length

    def emit(self, record: logging.LogRecord) -> None:
        """Add ``record``'s message as a note on the current span (if one is recording)."""
        span = CURRENT_SPAN.get()
        if span is None or not span.sampled or span.end_ns:
            return
        try:
            if self.formatter is not None:
                text = self.format(record)
            else:
                text = f"{record.levelname}: {record.getMessage()}"
                if record.exc_info and record.exc_info[1] is not None:
                    error = record.exc_info[1]
                    text += f" ({type(error).__qualname__}: {error})"
        except Exception:
            self.handleError(record)
            return
        if len(text) > self.max_length:
            text = text[: self.max_length - 3] + "..."
        span.annotate(text)


def install_note_handler(
    level: int | str = logging.ERROR, logger: logging.Logger | None = None
) -> SpanNoteHandler:
    """Add a :class:`SpanNoteHandler` to ``logger`` (the root logger by default); returns it.

    >>> handler = install_note_handler()
    >>> logging.getLogger().removeHandler(handler)
    """
    handler = SpanNoteHandler(level)
    (logger or logging.getLogger()).addHandler(handler)
    return handler


def structlog_processor(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that adds ``trace_id`` and ``span_id`` to each event.

    Empty strings outside spans, like the log record attributes; values already in the event
    are kept.

    >>> import structlog
    >>> structlog.configure(processors=[structlog_processor, structlog.processors.JSONRenderer()])
    >>> structlog.reset_defaults()
    """
    if "trace_id" not in event_dict:
        trace_id, span_id = _ids()
        event_dict["trace_id"] = trace_id
        event_dict.setdefault("span_id", span_id)
    return event_dict


def patch() -> bool:
    """:func:`install`, as the registry of patching integrations calls it; False if installed."""
    if installed():
        return False
    install()
    return True


def unpatch() -> bool:
    """:func:`uninstall`; False if it was not installed."""
    if not installed():
        return False
    uninstall()
    return True


def patched() -> bool:
    """:func:`installed`."""
    return installed()
