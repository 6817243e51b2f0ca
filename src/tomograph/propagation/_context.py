"""What injection reads from: a :class:`~tomograph.model.TraceContext` or a live span."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["ContextLike"]


class ContextLike(Protocol):
    """Anything with a trace context's fields: ``TraceContext`` and ``Span`` both qualify.

    Injecting straight from a span saves building a ``TraceContext`` per request.
    """

    @property
    def trace_id(self) -> int: ...

    @property
    def span_id(self) -> int: ...

    @property
    def parent_id(self) -> int | None: ...

    @property
    def sampled(self) -> bool | None: ...

    @property
    def debug(self) -> bool: ...

    @property
    def extra(self) -> Mapping[str, Any] | None: ...
