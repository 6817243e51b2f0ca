"""eventlet.zipkin's API on tomograph: ``from tomograph.eventlet import patcher, api``.

Install with ``pip install 'tomograph-tracing[eventlet]'``. See ``docs/eventlet.md``.
"""

from __future__ import annotations

from tomograph.eventlet import api, patcher

__all__ = ["api", "patcher"]
