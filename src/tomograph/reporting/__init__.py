"""Where finished spans go: backends, their wire encoders, and the background transport.

Every backend implements :class:`tomograph.backend.Backend`. The core ships
:class:`~tomograph.reporting.memory.MemoryBackend` (for tests) and
:class:`~tomograph.reporting.log.LogBackend`.
"""

from __future__ import annotations

from tomograph.reporting.log import LogBackend
from tomograph.reporting.memory import MemoryBackend

__all__ = ["LogBackend", "MemoryBackend"]
