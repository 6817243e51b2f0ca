"""The interface between the tracer and wherever finished spans go.

A backend receives each finished, sampled span on the thread that finished it. ``report`` must be
cheap and must not block or do I/O: backends that send over the network put the span on a bounded
queue and let a background worker encode and send it (see :mod:`tomograph.reporting`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """Where finished spans go."""

    def report(self, span: Span) -> None:
        """Accept one finished, sampled span. O(1), no I/O, never raises."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver what is pending; True if everything was handed on within ``timeout`` s."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Flush, then release threads, sockets and files. Later reports are dropped."""
        ...
