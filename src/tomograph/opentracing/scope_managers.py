"""Scope managers: which OpenTracing span is active.

:class:`ThreadLocalScopeManager` (OpenTracing's own, the default) keeps one active span per
thread. :class:`ContextVarsScopeManager` keeps it in a context variable, so asyncio tasks,
threads and greenlets each see their own, and also makes the span tomograph's current span:
code instrumented with tomograph's own API (``tomograph.span``, the integrations) nests
under it.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

import opentracing
from opentracing.scope_managers import ThreadLocalScopeManager

from tomograph.context import CURRENT_SPAN
from tomograph.span import Span as TomographSpan

__all__ = ["ContextVarsScopeManager", "ThreadLocalScopeManager"]

_ACTIVE: ContextVar[_ContextVarsScope | None] = ContextVar("tomograph_ot_scope", default=None)


class ContextVarsScopeManager(opentracing.ScopeManager):
    """Keeps the active scope in a :class:`~contextvars.ContextVar` and mirrors its span as
    tomograph's current span.

    >>> import tomograph
    >>> from tomograph.opentracing import Tracer
    >>> ot = Tracer(tomograph.Tracer('svc'), scope_manager=ContextVarsScopeManager())
    >>> with ot.start_active_span('outer') as scope:
    ...     tomograph.current_span() is scope.span.tomograph_span
    True
    """

    def activate(self, span: opentracing.Span, finish_on_close: bool) -> opentracing.Scope:
        """Make ``span`` active until the returned scope is closed."""
        return _ContextVarsScope(self, span, finish_on_close)

    @property
    def active(self) -> opentracing.Scope | None:
        """The active scope in this context, or None."""
        return _ACTIVE.get()


class _ContextVarsScope(opentracing.Scope):
    __slots__ = ("_finish_on_close", "_previous", "_span_token", "_token")

    def __init__(self, manager: ContextVarsScopeManager, span: Any, finish_on_close: bool):
        super().__init__(manager, span)
        self._finish_on_close = finish_on_close
        self._previous = _ACTIVE.get()
        self._token: Token[_ContextVarsScope | None] | None = _ACTIVE.set(self)
        inner = getattr(span, "tomograph_span", None)
        self._span_token = CURRENT_SPAN.set(inner) if isinstance(inner, TomographSpan) else None

    def close(self) -> None:
        """Deactivate the span (only the active scope can be closed) and maybe finish it."""
        if _ACTIVE.get() is not self or self._token is None:
            return
        token, self._token = self._token, None
        try:
            _ACTIVE.reset(token)
        except ValueError:
            _ACTIVE.set(self._previous)  # closed in another context than it was activated in
        if self._span_token is not None:
            span_token, self._span_token = self._span_token, None
            try:
                CURRENT_SPAN.reset(span_token)
            except ValueError:
                pass  # the other context never saw this span as current
        if self._finish_on_close:
            self.span.finish()
