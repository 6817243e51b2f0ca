"""An in-memory backend for tests: finished spans kept in a bounded list."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Keeps the last ``max_spans`` finished spans, oldest first.

    For the application's own tests: configure it, run the code, assert on ``spans``.

    >>> import tomograph
    >>> memory = MemoryBackend()
    >>> tracer = tomograph.Tracer('svc', backends=[memory])
    >>> with tracer.span('work'):
    ...     pass
    >>> memory.names()
    ['work']

    When full, the oldest span is evicted, so memory stays bounded.
    """

    #: ``report`` is a C-level deque append: the tracer may call it without a guard.
    report_never_raises = True

    def __init__(self, max_spans: int = 100_000) -> None:
        if max_spans < 1:
            raise ValueError(f"max_spans must be at least 1, not {max_spans!r}")
        self.max_spans = max_spans
        self._spans: deque[Span] = deque(maxlen=max_spans)
        #: Keep ``span`` (the deque's own append: no Python frame on the hot path).
        self.report: Callable[[Span], None] = self._spans.append
        # deque.append is atomic; the lock only guards readers that want a consistent view.
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        """``memory://`` or ``memory://?max_spans=1000``."""
        from tomograph.urls import url_query

        query = url_query(url, {"max_spans"})
        return cls(int(query.get("max_spans", 100_000)))

    @property
    def spans(self) -> list[Span]:
        """A snapshot of the kept spans, in the order they finished."""
        with self._lock:
            while True:
                try:
                    return list(self._spans)
                except RuntimeError:
                    continue  # another thread appended while we copied: copy again

    def names(self) -> list[str]:
        """The names of the kept spans, in the order they finished."""
        return [span.name for span in self.spans]

    def find(self, name: str) -> Span:
        """The last finished span called ``name``; KeyError if there is none."""
        for span in reversed(self.spans):
            if span.name == name:
                return span
        raise KeyError(name)

    def traces(self) -> dict[int, list[Span]]:
        """Kept spans grouped by trace id."""
        grouped: dict[int, list[Span]] = {}
        for span in self.spans:
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    def clear(self) -> None:
        """Forget every kept span."""
        with self._lock:
            self._spans.clear()

    def flush(self, timeout: float | None = None) -> bool:
        """Nothing is pending in memory: always True."""
        return True

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self._spans)

    def __repr__(self) -> str:
        return f"MemoryBackend(max_spans={self.max_spans})"
