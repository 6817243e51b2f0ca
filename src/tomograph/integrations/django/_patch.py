"""Tracing every Django project in the process without touching its settings.

Django builds its middleware chain in ``BaseHandler.load_middleware`` (once per WSGI/ASGI
handler, and per test client): the patched one puts :class:`TracingMiddleware` around the whole
chain, unless the settings already list it. The settings are never changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.core.handlers.base import BaseHandler

from tomograph.integrations.django.database import trace_database, untrace_database
from tomograph.integrations.django.middleware import TracingMiddleware
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method

__all__ = ["patch", "patched", "unpatch"]

_LISTED_AS = frozenset(
    {
        "tomograph.integrations.django.TracingMiddleware",
        "tomograph.integrations.django.middleware.TracingMiddleware",
    }
)


#: Whether :func:`patch` started the statement tracing (so :func:`unpatch` stops it).
_traces_database = False


class _PatchedMiddleware(TracingMiddleware):
    """The middleware ``patch()`` adds: it stops tracing once ``unpatch()`` ran, because
    handlers built before keep their chain."""

    def _enabled(self) -> bool:
        return patched()


def _with_tracing(load_middleware: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(load_middleware)
    def traced_load_middleware(self: BaseHandler, *args: Any, **kwargs: Any) -> None:
        load_middleware(self, *args, **kwargs)
        from django.conf import settings

        chain = self._middleware_chain
        if chain is not None and not _LISTED_AS.intersection(settings.MIDDLEWARE):
            self._middleware_chain = _PatchedMiddleware(chain)

    return traced_load_middleware


def patch() -> bool:
    """Trace the requests and SQL statements of every Django project from now on.

    Handlers built afterwards (the WSGI/ASGI application, each test client) get the
    middleware around their chain; every database connection gets the statement wrapper.
    Safe before settings are configured. False if already patched.
    """
    global _traces_database
    if not patch_method(BaseHandler, "load_middleware", _with_tracing):
        return False
    # An application's own trace_database() (its settings) is kept, and left by unpatch().
    _traces_database = trace_database()
    return True


def unpatch() -> bool:
    """Undo :func:`patch`; False if it was not in effect."""
    global _traces_database
    if not unpatch_method(BaseHandler, "load_middleware"):
        return False
    if _traces_database:
        _traces_database = False
        untrace_database()
    return True


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(BaseHandler, "load_middleware")
