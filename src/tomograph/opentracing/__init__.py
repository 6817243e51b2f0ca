"""OpenTracing 2.4 on tomograph: ``from tomograph.opentracing import Tracer``.

Install with ``pip install 'tomograph-tracing[opentracing]'``.

>>> import opentracing, tomograph
>>> from tomograph.opentracing import Tracer
>>> opentracing.tracer = Tracer(tomograph.Tracer('shop'))
>>> with opentracing.tracer.start_active_span('checkout') as scope:
...     scope.span.set_tag('items', 3) is scope.span
True

See ``docs/opentracing.md`` for the mapping of tags, logs, references and formats.
"""

from __future__ import annotations

from tomograph.opentracing._span import Span, SpanContext
from tomograph.opentracing._tracer import Tracer
from tomograph.opentracing.scope_managers import ContextVarsScopeManager, ThreadLocalScopeManager

__all__ = ["ContextVarsScopeManager", "Span", "SpanContext", "ThreadLocalScopeManager", "Tracer"]
