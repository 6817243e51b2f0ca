"""tomograph: distributed tracing for Python services.

Quick start::

    import tomograph
    tomograph.configure(service='checkout', backends=['zipkin+http://127.0.0.1:9411'])

    with tomograph.span('charge card', kind='client') as span:
        span.tag('amount', 12.5)

The classic API (``start``/``stop``/``annotate``/``tag``/``get_trace_info``/``traced``) works
on the same default tracer, and so do the classic integrations, imported on first use:
``tomograph.Middleware`` (WSGI, and a Paste filter factory) and the SQLAlchemy listeners
``tomograph.before_execute``/``after_execute``/``dbapi_error`` (they need SQLAlchemy, so they are
not part of ``from tomograph import *``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from tomograph import sampling
from tomograph._version import __version__
from tomograph.classic import annotate, get_trace_info, start, stop, tag, traced
from tomograph.config import configure
from tomograph.context import current_span
from tomograph.errors import ConfigurationError, TracingError
from tomograph.model import Endpoint, Note, SpanKind, TagValue, TraceContext
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer

__all__ = [
    "ConfigurationError",
    "Endpoint",
    "Middleware",
    "Note",
    "Span",
    "SpanKind",
    "TraceContext",
    "Tracer",
    "TracingError",
    "__version__",
    "add_trace_info_header",
    "annotate",
    "configure",
    "current_span",
    "flush",
    "get_trace_info",
    "get_tracer",
    "sampling",
    "span",
    "start",
    "start_http",
    "start_span",
    "stats",
    "stop",
    "tag",
    "traced",
]

# Names whose modules are imported on first use, so `import tomograph` stays cheap and never
# imports an integration's optional dependency.
_LAZY: dict[str, str] = {
    "before_execute": "tomograph.integrations.sqlalchemy:before_execute",
    "after_execute": "tomograph.integrations.sqlalchemy:after_execute",
    "dbapi_error": "tomograph.integrations.sqlalchemy:dbapi_error",
    "Middleware": "tomograph.integrations.wsgi:Middleware",
    "add_trace_info_header": "tomograph.propagation.http:add_trace_info_header",
    "start_http": "tomograph.propagation.http:start_http",
    "stats": "tomograph.reporting.stats:stats",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'tomograph' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def span(
    name: str,
    kind: SpanKind | str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    parent: Span | TraceContext | None = CURRENT,
    local_endpoint: Endpoint | None = None,
    remote_endpoint: Endpoint | None = None,
) -> Span:
    """A span of the default tracer, as a context manager or decorator.

    >>> import tomograph
    >>> with tomograph.span('resize image', tags={'width': 640}) as s:
    ...     s.annotate('decoded')
    """
    return Span(get_tracer(), name, kind, tags, parent, local_endpoint, remote_endpoint)


def start_span(
    name: str,
    kind: SpanKind | str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    parent: Span | TraceContext | None = CURRENT,
    timestamp_us: int | None = None,
) -> Span:
    """Start a span of the default tracer without making it current; finish it yourself."""
    return get_tracer().start_span(name, kind, tags, parent, timestamp_us=timestamp_us)


def flush(timeout: float | None = 5.0) -> bool:
    """Wait up to ``timeout`` seconds for the default tracer's backends to send what they hold.

    Returns True if everything was delivered (or handed to its backend's final destination).
    """
    return get_tracer().flush(timeout)
