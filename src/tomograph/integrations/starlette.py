"""Starlette and FastAPI: every application traced, and a span per background task.

::

    from tomograph.integrations.starlette import patch
    patch()

:func:`patch` puts :class:`~tomograph.integrations.asgi.TracingMiddleware` around every
Starlette application (FastAPI's included), created before or after the call, outside
Starlette's own error handling so that a 500 page is seen with its exception; an application
that already has the middleware (``app.add_middleware(TracingMiddleware, ...)``) keeps it and
its settings. It also traces background tasks (``BackgroundTask``, FastAPI's
``BackgroundTasks``): each task run is a span named ``background <function>``, a child of the
request's span, that starts after the response has been sent and records the task's exception.
An application whose ``tomograph_untraced`` attribute (:data:`UNTRACED`) is true is left alone.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask

from tomograph.integrations.asgi import Receive, Scope, Send, TracingMiddleware
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.tracer import get_tracer

__all__ = ["UNTRACED", "patch", "patched", "unpatch"]

#: An application (or application class) with this attribute true is left alone by
#: :func:`patch`: tomograph's own collector, whose traced ingest requests would report spans
#: back to the collector, one more for each batch received.
UNTRACED = "tomograph_untraced"

#: The attribute of an application that holds the middleware :func:`patch` traces it with
#: (or False when the application brings its own).
_MIDDLEWARE = "_tomograph_tracing"


def _task_name(func: Any) -> str:
    target = getattr(func, "func", func)  # functools.partial
    name = getattr(target, "__qualname__", None) or type(target).__qualname__
    return f"background {name}"


def _traced_task(call: Callable[[BackgroundTask], Awaitable[None]]) -> Callable[..., Any]:
    @functools.wraps(call)
    async def __call__(self: BackgroundTask) -> None:
        # The span is current while the task runs: spans of a sync task, run in a worker
        # thread with a copy of this context, are its children too.
        with get_tracer().start_span(_task_name(self.func)):
            await call(self)

    return __call__


def _has_tracing_middleware(app: Starlette) -> bool:
    for entry in app.user_middleware:
        cls = getattr(entry, "cls", None)  # a class, or any callable that makes a middleware
        if isinstance(cls, type) and issubclass(cls, TracingMiddleware):
            return True
    return False


def _traced_app(call: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    @functools.wraps(call)
    async def __call__(self: Starlette, scope: Scope, receive: Receive, send: Send) -> None:
        middleware: TracingMiddleware | bool | None = vars(self).get(_MIDDLEWARE)
        if middleware is None:
            # Racing first requests may both build one: either serves.
            middleware = False
            if not getattr(self, UNTRACED, False) and not _has_tracing_middleware(self):
                middleware = TracingMiddleware(functools.partial(call, self))
            setattr(self, _MIDDLEWARE, middleware)
        if isinstance(middleware, TracingMiddleware):
            await middleware(scope, receive, send)
        else:
            await call(self, scope, receive, send)

    return __call__


def patch() -> bool:
    """Trace every Starlette/FastAPI application and background task; False if already done.

    Safe before ``tomograph.configure()``: the tracer is looked up per request.
    """
    if not patch_method(Starlette, "__call__", _traced_app):
        return False
    patch_method(BackgroundTask, "__call__", _traced_task)
    return True


def unpatch() -> bool:
    """Undo :func:`patch`."""
    if not unpatch_method(Starlette, "__call__"):
        return False
    unpatch_method(BackgroundTask, "__call__")
    return True


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(Starlette, "__call__")
