"""eventlet.zipkin's ``api`` module: notes and tags on the span of the current green thread.

>>> import tomograph
>>> from tomograph.reporting.memory import MemoryBackend
>>> memory = MemoryBackend()
>>> with tomograph.Tracer('svc', backends=[memory]).span('request'):
...     put_annotation('Cache miss for /users')
...     put_key_value('key', 'value')
>>> memory.spans[0].tags, [note.value for note in memory.spans[0].annotations]
({'key': 'value'}, ['Cache miss for /users'])

Outside a traced request (no current span) both do nothing.
"""

from __future__ import annotations

from typing import Any

from tomograph.context import CURRENT_SPAN
from tomograph.model import TagValue

__all__ = ["put_annotation", "put_key_value"]


def put_annotation(msg: str, endpoint: Any = None) -> None:
    """Add a timestamped note to the current span.

    ``endpoint`` is accepted for compatibility and ignored: a Zipkin v2 annotation belongs to
    its span's local endpoint.
    """
    span = CURRENT_SPAN.get()
    if span is not None and not span.finished:
        span.annotate(str(msg))


def put_key_value(key: str, value: Any, endpoint: Any = None) -> None:
    """Tag the current span with ``key=value`` (non-scalar values are written as text).

    ``endpoint`` is accepted for compatibility and ignored.
    """
    span = CURRENT_SPAN.get()
    if span is not None and not span.finished:
        tag_value: TagValue = value if isinstance(value, str | int | float | bool) else str(value)
        span.tag(str(key), tag_value)
