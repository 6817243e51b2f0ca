"""tomograph as OpenTelemetry's SDK: spans made through the OpenTelemetry API are tomograph spans.

Needs ``opentelemetry-api`` (the ``opentelemetry`` extra), never the SDK. One call::

    import tomograph.opentelemetry
    tomograph.opentelemetry.install()

or ``OTEL_PYTHON_TRACER_PROVIDER=tomograph`` in the environment, or ``tomograph run``. Then
libraries instrumented with the OpenTelemetry API, and OpenTelemetry's own instrumentations,
report through tomograph's backends, into the same traces as tomograph's integrations:

* :class:`TracerProvider`, its tracers and spans implement the API on tomograph spans
  (attributes are tags, events notes, links and status kept; see docs/opentelemetry.md);
* :class:`RuntimeContext` makes OpenTelemetry's current span and tomograph's one: a span
  started through either API inside a span of the other is its child;
* :class:`Propagator` makes ``opentelemetry.propagate`` read and write tomograph's formats,
  and OpenTelemetry's baggage is tomograph's.

This package root imports nothing from OpenTelemetry until one of its names is used:
``OTEL_PYTHON_CONTEXT=tomograph`` loads the runtime context while OpenTelemetry's context
package is itself being imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tomograph.opentelemetry._context import RuntimeContext
    from tomograph.opentelemetry._install import (
        install,
        patch,
        patched,
        provider_from_environment,
        uninstall,
        unpatch,
    )
    from tomograph.opentelemetry._propagator import Propagator
    from tomograph.opentelemetry._span import Span, SpanLimits
    from tomograph.opentelemetry._tracer import Tracer, TracerProvider

__all__ = [
    "Propagator",
    "RuntimeContext",
    "Span",
    "SpanLimits",
    "Tracer",
    "TracerProvider",
    "install",
    "patch",
    "patched",
    "provider_from_environment",
    "uninstall",
    "unpatch",
]

_LAZY = {
    "RuntimeContext": "_context",
    "Propagator": "_propagator",
    "Span": "_span",
    "SpanLimits": "_span",
    "Tracer": "_tracer",
    "TracerProvider": "_tracer",
    "install": "_install",
    "patch": "_install",
    "patched": "_install",
    "provider_from_environment": "_install",
    "uninstall": "_install",
    "unpatch": "_install",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tomograph.opentelemetry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"tomograph.opentelemetry.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
