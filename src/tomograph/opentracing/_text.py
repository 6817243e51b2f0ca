"""``Format.TEXT_MAP`` / ``Format.HTTP_HEADERS``: tomograph's own propagators do the work.

Ids travel in every header format the propagator writes (by default W3C ``traceparent`` and
``tracestate``, and B3) and baggage as a W3C ``baggage`` header; extraction accepts every
format the propagator reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tomograph.model import TraceContext
from tomograph.propagation import Propagator, default_propagator
from tomograph.propagation import baggage as w3c_baggage

__all__ = ["extract_text", "inject_text", "with_baggage_extra"]


def with_baggage_extra(context: TraceContext, baggage: Mapping[str, str] | None) -> TraceContext:
    """``context`` with exactly ``baggage`` in its ``extra`` (W3C baggage entries)."""
    entries = [w3c_baggage.BaggageEntry(key, value) for key, value in (baggage or {}).items()]
    if not entries and not w3c_baggage.entries_of(context.extra):
        return context
    return w3c_baggage.with_baggage(context, entries)


def inject_text(
    context: TraceContext,
    baggage: Mapping[str, str] | None,
    carrier: Any,
    propagator: Propagator | None = None,
) -> None:
    """Write ids (and ``baggage``, if given) as headers into ``carrier``."""
    (propagator or default_propagator()).inject(with_baggage_extra(context, baggage), carrier)


def extract_text(
    carrier: Any, propagator: Propagator | None = None
) -> tuple[TraceContext, dict[str, str]] | None:
    """The context and baggage in ``carrier``'s headers, or None if it carries no trace."""
    context = (propagator or default_propagator()).extract(carrier)
    if context is None:
        return None
    entries = w3c_baggage.entries_of(context.extra)
    return context, {entry.key: entry.value for entry in entries}
