"""Overriding a span's sampling decision after it started (before anything was recorded).

For APIs where the decision arrives with or just after the span: OpenTracing's
``sampling.priority`` tag, a B3 ``X-B3-Flags: 1`` debug request without ids.
"""

from __future__ import annotations

from tomograph.span import Span

__all__ = ["record_anyway"]


def record_anyway(span: Span, debug: bool = True) -> None:
    """Make an unfinished span record and be reported even if the sampler said no.

    >>> import tomograph
    >>> from tomograph.sampling import never
    >>> span = tomograph.Tracer('svc', sampler=never()).start_span('op')
    >>> record_anyway(span)
    >>> span.sampled, span.debug
    (True, True)
    """
    if span.finished:
        return
    if not span.sampled:
        # An unsampled span holds read-only tags and no note list: give it real ones.
        span.tags = dict(span.tags)
        span.notes_raw = []
        span.sampled = True
    if debug:
        span.debug = True
