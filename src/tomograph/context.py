"""The current span, on :mod:`contextvars`.

``contextvars`` gives each thread its own current span, gives every asyncio task a copy of its
creator's context (so children inherit, and siblings stay isolated), and, with greenlet >= 1.0,
gives each eventlet/gevent greenlet a context of its own.

A new thread starts with no current span. To continue a trace in another thread, hand over
:func:`tomograph.get_trace_info` (or ``span.context``) and pass it as the parent there, or run the
thread's function in ``contextvars.copy_context()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = [
    "ROOT_EXTRA",
    "SUPPRESS_TRACING",
    "attach",
    "current_span",
    "detach",
    "suppress_tracing",
]

CURRENT_SPAN: ContextVar[Span | None] = ContextVar("tomograph_current_span", default=None)

#: True where instrumented libraries must not trace: tomograph's own delivery of spans sets it,
#: so a patched HTTP client never traces the request that sends spans (each such span would be
#: sent by another traced request, without end).
SUPPRESS_TRACING: ContextVar[bool] = ContextVar("tomograph_suppress_tracing", default=False)


#: The ``extra`` a span that starts a new trace here begins with (``None``: nothing). Set where
#: baggage is current without any span: OpenTelemetry baggage attached while no span was current
#: travels with the traces started under it, as it does in OpenTelemetry (see
#: :mod:`tomograph.opentelemetry`).
ROOT_EXTRA: ContextVar[Mapping[str, Any] | None] = ContextVar("tomograph_root_extra", default=None)


def current_span() -> Span | None:
    """The innermost active span in this thread, task or greenlet, or ``None``.

    >>> current_span() is None
    True
    """
    return CURRENT_SPAN.get()


@contextmanager
def suppress_tracing() -> Iterator[None]:
    """Inside this block, tomograph's integrations trace nothing (e.g. health checks).

    >>> with suppress_tracing():
    ...     pass  # requests made here by patched HTTP clients make no spans
    """
    token = SUPPRESS_TRACING.set(True)
    try:
        yield
    finally:
        SUPPRESS_TRACING.reset(token)


def attach(span: Span | None) -> Token[Span | None]:
    """Make ``span`` current; returns a token for :func:`detach`.

    For frameworks that start a span in one callback and end it in another.
    """
    return CURRENT_SPAN.set(span)


def detach(token: Token[Span | None]) -> None:
    """Restore the current span that was active before :func:`attach` returned ``token``."""
    CURRENT_SPAN.reset(token)
