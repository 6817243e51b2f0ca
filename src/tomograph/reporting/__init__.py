"""Where finished spans go: backends, their wire encoders, and the background transport.

Every backend implements :class:`tomograph.backend.Backend`: the core ships
:class:`~tomograph.reporting.memory.MemoryBackend` (for tests) and
:class:`~tomograph.reporting.log.LogBackend`; the network backends
(:mod:`~tomograph.reporting.zipkin`, :mod:`~tomograph.reporting.statsd`,
:mod:`~tomograph.reporting.otlp`) send through the background
:mod:`~tomograph.reporting.transport` and are imported only when used. The wire codecs
(:mod:`~tomograph.reporting.zipkin_json`, :mod:`~tomograph.reporting.zipkin_proto`) encode and
decode side by side.
"""

from __future__ import annotations

from tomograph.reporting.log import LogBackend
from tomograph.reporting.memory import MemoryBackend

__all__ = ["LogBackend", "MemoryBackend"]
