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

``span()`` and ``start_span()`` use the default tracer of the moment (see :func:`get_tracer`):

>>> import tomograph
>>> with tomograph.span('resize image', tags={'width': 640}) as s:
...     s.annotate('decoded')
>>> tomograph.start_span('nightly job', timestamp_us=1_700_000_000_000_000).finish()
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
from tomograph.span import CURRENT, Span, make_span
from tomograph.tracer import Tracer, get_tracer, on_default_tracer

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


# Written out, not made with on_default_tracer like start_span: a wrapper's *args/**kwargs cost
# about 7% more per span (0.9k of 13k instructions) on the most used call of the package.
# tests/test_default_tracer.py checks that its parameters stay those of Span.
def span(
    name: str,
    kind: SpanKind | str | None = None,
    tags: Mapping[str, TagValue] | None = None,
    parent: Span | TraceContext | None = CURRENT,
    local_endpoint: Endpoint | None = None,
    remote_endpoint: Endpoint | None = None,
) -> Span:
    """A span of the default tracer, as a context manager or decorator (see :class:`Span`)."""
    return make_span(get_tracer(), name, kind, tags, parent, local_endpoint, remote_endpoint)


#: ``start_span(name, kind=None, tags=None, parent=CURRENT, local_endpoint=None,
#: remote_endpoint=None, timestamp_us=None)``: :meth:`Tracer.start_span` on the default tracer.
start_span = on_default_tracer(Tracer.start_span)
start_span.__name__ = start_span.__qualname__ = "start_span"
start_span.__module__ = __name__
start_span.__doc__ = """Start a span of the default tracer without making it current; finish it
yourself. Takes the parameters of :meth:`Tracer.start_span`."""


def flush(timeout: float | None = 5.0) -> bool:
    """Wait up to ``timeout`` seconds for the default tracer's backends to send what they hold.

    Returns True if everything was delivered (or handed to its backend's final destination).
    """
    return get_tracer().flush(timeout)
