"""Trace context across process boundaries: one module per wire format, and a composite.

- :mod:`~tomograph.propagation.w3c`: ``traceparent`` / ``tracestate``
- :mod:`~tomograph.propagation.baggage`: W3C ``baggage``, and the baggage API
- :mod:`~tomograph.propagation.b3`: ``X-B3-*`` and ``b3``
- :mod:`~tomograph.propagation.xtraceinfo`: tomograph's ``X-Trace-Info``
- :mod:`~tomograph.propagation.jaeger`: ``uber-trace-id``
- :mod:`~tomograph.propagation.composite`: several formats at once (what :func:`inject` and
  :func:`extract` here use, configured by ``tomograph.configure(propagation=...)`` or
  ``TOMOGRAPH_PROPAGATION``); it also documents the keys of ``TraceContext.extra``
- :mod:`~tomograph.propagation.carriers`: header access on dicts, WSGI environs and requests
- :mod:`~tomograph.propagation.http`: ``tomograph.start_http`` and
  ``tomograph.add_trace_info_header``

Every format module has ``inject(context, carrier)`` and ``extract(carrier)``, with the pure
``parse_*``/``format_*`` functions they use beside them. Extraction never raises: a malformed,
oversized or hostile header gives None (a new trace starts) and a debug message on the
``tomograph.propagation`` logger.

>>> import tomograph
>>> from tomograph import propagation
>>> with tomograph.Tracer('web').span('call', kind='client') as span:
...     headers = {}
...     propagation.inject(span, headers)
>>> propagation.extract(headers).span_id == span.span_id
True
"""

from __future__ import annotations

from tomograph.propagation.composite import (
    Propagator,
    default_propagator,
    extract,
    inject,
    set_default_propagator,
)

__all__ = ["Propagator", "default_propagator", "extract", "inject", "set_default_propagator"]
