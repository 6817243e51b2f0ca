"""``tomograph.stats()``: what the default tracer's backends have sent, dropped and failed."""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["COUNTERS", "stats"]

COUNTERS = ("queued", "sent", "dropped", "failed", "pending", "batches", "bytes", "retries")


def stats() -> dict[str, Any]:
    """Counters summed over the default tracer's backends, plus each backend's own.

    >>> import tomograph
    >>> tomograph.configure(service='svc', backends=['memory://'], environ={}).service_name
    'svc'
    >>> tomograph.stats()['sent']
    0

    ``queued`` spans handed to the backends, ``sent`` delivered, ``dropped`` refused because a
    queue was full (or the backend closed), ``failed`` given up on after retries or refused by
    the collector, ``pending`` still waiting, ``batches``/``bytes`` payloads and bytes delivered,
    ``retries`` payload retries. ``backends`` maps each backend's repr to its own counters
    (``#2``, ``#3`` appended when several backends look alike: a repr shows no token).
    Backends without a transport (memory, log) are not counted.
    """
    from tomograph.tracer import get_tracer

    totals: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    per_backend: dict[str, dict[str, int]] = {}
    for backend in get_tracer().backends:
        read = getattr(backend, "stats", None)
        if read is None:
            continue
        counters = dict(read())
        name = repr(backend)
        for number in itertools.count(2):
            if name not in per_backend:
                break
            name = f"{backend!r} #{number}"
        per_backend[name] = counters
        for key in COUNTERS:
            totals[key] += counters.get(key, 0)
    totals["backends"] = per_backend
    return totals
