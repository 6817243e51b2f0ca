"""Where finished spans go: backends and the background transport.

Every backend implements :class:`tomograph.backend.Backend`: the core ships
:class:`~tomograph.reporting.memory.MemoryBackend` (for tests) and
:class:`~tomograph.reporting.log.LogBackend`; the network backends
(:mod:`~tomograph.reporting.zipkin`, :mod:`~tomograph.reporting.statsd`,
:mod:`~tomograph.reporting.otlp`) send through the background
:mod:`~tomograph.reporting.transport` and are imported only when used. They encode with the
wire formats of :mod:`tomograph.encoding`.
"""

from __future__ import annotations

from tomograph.reporting.log import LogBackend
from tomograph.reporting.memory import MemoryBackend

__all__ = ["LogBackend", "MemoryBackend"]
