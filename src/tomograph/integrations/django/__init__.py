"""Django (4.2 and later): a server span per request, named after the route, and a client span
per SQL statement.

Explicit, in ``settings.py`` (either line is enough)::

    INSTALLED_APPS = ["tomograph.integrations.django", ...]   # installs both, at startup
    MIDDLEWARE = ["tomograph.integrations.django.TracingMiddleware", ...]   # requests only

or without touching the settings (what ``tomograph run`` does)::

    from tomograph.integrations import django
    django.patch()

A request's span is named ``"GET /users/<int:id>"`` (the route as Django's resolver wrote it,
include() prefixes too), tagged ``http.route``, ``django.view``, the status, and is an error for
5xx responses and unhandled exceptions (Django turns those into 500 pages: the exception's type
and traceback are on the span). Under tomograph's WSGI or ASGI middleware no second span is
made: the route and the exception go on theirs. SQL statements become ``CLIENT`` spans without
parameter values, on every connection and thread. See ``docs/django.md``.
"""

from __future__ import annotations

from tomograph.integrations.django._patch import patch, patched, unpatch
from tomograph.integrations.django.database import (
    StatementTracer,
    trace_database,
    untrace_database,
)
from tomograph.integrations.django.middleware import TracingMiddleware

__all__ = [
    "StatementTracer",
    "TracingMiddleware",
    "patch",
    "patched",
    "trace_database",
    "unpatch",
    "untrace_database",
]
