"""Installing tomograph as OpenTelemetry's SDK: in one call, from the environment, or by
``tomograph run``."""

from __future__ import annotations

import logging
import threading

from opentelemetry import propagate
from opentelemetry import trace as trace_api
from opentelemetry.propagators.textmap import TextMapPropagator

from tomograph.config import opentelemetry_variable
from tomograph.errors import ConfigurationError
from tomograph.opentelemetry._context import install_context, installed_context, uninstall_context
from tomograph.opentelemetry._propagator import Propagator
from tomograph.opentelemetry._tracer import TracerProvider

__all__ = [
    "install",
    "patch",
    "patched",
    "provider_from_environment",
    "uninstall",
    "unpatch",
]

log = logging.getLogger("tomograph.opentelemetry")

_lock = threading.Lock()
#: The global propagator :func:`install` replaced, for :func:`uninstall`.
_replaced_propagator: TextMapPropagator | None = None


def _current_provider() -> trace_api.TracerProvider | None:
    # The API's own getter makes a proxy when none is set; only a set provider matters here.
    return trace_api._TRACER_PROVIDER


def install(provider: TracerProvider | None = None, *, propagator: bool = True) -> TracerProvider:
    """Make tomograph OpenTelemetry's SDK: spans made through the OpenTelemetry API (by
    libraries, by OpenTelemetry's instrumentations) are tomograph spans from now on.

    Installs the context bridge (one current span for both APIs), sets ``provider`` (a new
    :class:`TracerProvider` by default) as OpenTelemetry's tracer provider and, with
    ``propagator``, tomograph's propagator as OpenTelemetry's global one, so
    ``opentelemetry.propagate`` and tomograph's middlewares read and write the same headers.
    Calling it again returns the provider already installed.

    Raises :class:`~tomograph.ConfigurationError` if another tracer provider (the SDK's) is
    already set: OpenTelemetry's API sets it once per process.
    """
    with _lock:
        install_context()
        current = _current_provider()
        if isinstance(current, TracerProvider):
            installed = current
        elif current is not None:
            raise ConfigurationError(
                f"OpenTelemetry already has a tracer provider ({type(current).__module__}."
                f"{type(current).__qualname__}); it can be set once per process: install "
                "tomograph before anything sets one, or remove the other SDK's setup"
            )
        else:
            installed = provider if provider is not None else TracerProvider()
            trace_api.set_tracer_provider(installed)
            if _current_provider() is not installed:  # lost a race with another setter
                raise ConfigurationError("another OpenTelemetry tracer provider was set meanwhile")
        if propagator:
            _use_tomograph_propagator()
        return installed


def _use_tomograph_propagator() -> None:
    """Make tomograph's propagator OpenTelemetry's global one (once), keeping the one it replaces
    for :func:`uninstall`. Called under ``_lock``."""
    global _replaced_propagator
    current_propagator = propagate.get_global_textmap()
    if not isinstance(current_propagator, Propagator):
        _replaced_propagator = current_propagator
        propagate.set_global_textmap(Propagator())


def uninstall() -> None:
    """Give OpenTelemetry back its own runtime context and the propagator :func:`install`
    replaced. The tracer provider stays: OpenTelemetry's API sets it once per process; its
    spans still go to tomograph, but OpenTelemetry's current span and tomograph's are
    separate again."""
    global _replaced_propagator
    with _lock:
        uninstall_context()
        if _replaced_propagator is not None:
            propagate.set_global_textmap(_replaced_propagator)
            _replaced_propagator = None


def provider_from_environment() -> TracerProvider:
    """The provider ``OTEL_PYTHON_TRACER_PROVIDER=tomograph`` makes: a :class:`TracerProvider`,
    with tomograph's propagator as the global one unless ``OTEL_PROPAGATORS`` chooses."""
    provider = TracerProvider()
    if not opentelemetry_variable("OTEL_PROPAGATORS"):
        with _lock:
            _use_tomograph_propagator()
    return provider


# -- the integration interface of ``tomograph run`` (tomograph.integrations.INTEGRATIONS) ----


def patch() -> bool:
    """:func:`install`, for ``tomograph run``; False (logged) if another SDK's provider is set."""
    try:
        install()
    except ConfigurationError as error:
        log.warning("tomograph is not OpenTelemetry's SDK here: %s", error)
        return False
    return True


def unpatch() -> None:
    """:func:`uninstall`."""
    uninstall()


def patched() -> bool:
    """Whether the context bridge is installed."""
    return installed_context() is not None
