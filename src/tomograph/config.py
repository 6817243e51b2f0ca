"""``tomograph.configure()``, environment variables and backend URLs, parsed in one place.

Environment variables (read by :func:`configure` for anything not passed explicitly):

``TOMOGRAPH_SERVICE``
    The service name spans are reported under.
``TOMOGRAPH_BACKENDS``
    A comma-separated list of backend URLs, e.g. ``zipkin+http://127.0.0.1:9411,statsd://:8125``.
``TOMOGRAPH_SAMPLE_RATE``
    The fraction (0.0 to 1.0) of new traces to record; upstream decisions are obeyed.
``TOMOGRAPH_PROPAGATION``
    A comma-separated list of trace-context formats to write and read, e.g. ``w3c,baggage,b3``
    (names: ``w3c``, ``baggage``, ``b3``, ``b3single``, ``xtraceinfo``, ``jaeger``; see
    :mod:`tomograph.propagation.composite`). Unset: write W3C, baggage, B3 and X-Trace-Info, and
    read any of them or Jaeger's ``uber-trace-id``.

A bad value raises :class:`~tomograph.ConfigurationError` from :func:`configure`, naming the
variable. If the application never calls :func:`configure`, the first span configures tomograph
from the environment; a bad value then is logged as an error and tomograph runs with no backends
rather than breaking the application.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from tomograph.backend import Backend
from tomograph.errors import ConfigurationError
from tomograph.sampling import Sampler, parent_based, probabilistic
from tomograph.tracer import DEFAULT_SERVICE_NAME, Tracer

if TYPE_CHECKING:
    from tomograph.propagation.composite import Propagator

__all__ = [
    "BACKEND_SCHEMES",
    "backend_from_url",
    "configure",
    "get_tracer",
    "parse_backend_urls",
    "url_query",
]

ENV_SERVICE = "TOMOGRAPH_SERVICE"
ENV_BACKENDS = "TOMOGRAPH_BACKENDS"
ENV_SAMPLE_RATE = "TOMOGRAPH_SAMPLE_RATE"

#: URL scheme -> "module:factory". Factories take the whole URL and raise ValueError if it is bad.
#: Modules are imported only when their scheme is used, so unused extras are never imported.
BACKEND_SCHEMES: dict[str, str] = {
    "memory": "tomograph.reporting.memory:MemoryBackend.from_url",
    "log": "tomograph.reporting.log:LogBackend.from_url",
    "zipkin+http": "tomograph.reporting.zipkin:ZipkinBackend.from_url",
    "zipkin+https": "tomograph.reporting.zipkin:ZipkinBackend.from_url",
    "statsd": "tomograph.reporting.statsd:StatsdBackend.from_url",
    "otlp+http": "tomograph.reporting.otlp:OtlpBackend.from_url",
    "otlp+https": "tomograph.reporting.otlp:OtlpBackend.from_url",
    "scribe": "tomograph.reporting.scribe:ScribeBackend.from_url",
}

#: How long the exit hook waits for backends to deliver what they hold.
EXIT_FLUSH_SECONDS = 2.0

_log = logging.getLogger("tomograph")
_lock = threading.Lock()
_default_tracer: Tracer | None = None
_exit_hook_installed = False


def url_query(url: str, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters of a backend URL; ValueError names any parameter not in ``allowed``.

    >>> url_query('statsd://host:8125?prefix=app', {'prefix'})
    {'prefix': 'app'}
    """
    allowed = set(allowed)
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(allowed)) or 'none'})"
        )
    return query


def backend_from_url(url: str) -> Backend:
    """Make the backend a URL names, e.g. ``memory://`` or ``zipkin+http://127.0.0.1:9411``.

    >>> backend_from_url('memory://')
    MemoryBackend(max_spans=100000)
    """
    scheme = urlsplit(url.strip()).scheme.lower() if "://" in url else ""
    target = BACKEND_SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(BACKEND_SCHEMES))
        raise ConfigurationError(f"unknown backend URL {url!r}: use one of {known}")
    module_name, _, attribute = target.partition(":")
    try:
        factory: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"backend {url!r} needs an optional dependency that is not installed: {error}"
        ) from error
    for part in attribute.split("."):
        factory = getattr(factory, part)
    try:
        backend: Backend = factory(url.strip())
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"bad backend URL {url!r}: {error}") from error
    return backend


def parse_backend_urls(text: str) -> list[Backend]:
    """Backends from a comma-separated list of URLs (empty items are ignored)."""
    return [backend_from_url(item) for item in text.split(",") if item.strip()]


def _sample_rate_from(value: Any, source: str) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{source} must be a number from 0.0 to 1.0, not {value!r}"
        ) from None
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError(f"{source} must be a number from 0.0 to 1.0, not {value!r}")
    return rate


def _build_tracer(
    service: str | None,
    backends: Iterable[Backend | str] | None,
    sampler: Sampler | None,
    sample_rate: float | None,
    trace_id_bits: int,
    join_shared_spans: bool,
    environ: Mapping[str, str],
) -> Tracer:
    service = service or environ.get(ENV_SERVICE, "").strip() or DEFAULT_SERVICE_NAME
    if backends is None:
        try:
            built = parse_backend_urls(environ.get(ENV_BACKENDS, ""))
        except ConfigurationError as error:
            raise ConfigurationError(f"{ENV_BACKENDS}: {error}") from error
    else:
        built = []
        for item in backends:
            if isinstance(item, str):
                built.append(backend_from_url(item))
            elif isinstance(item, Backend):
                built.append(item)
            else:
                raise ConfigurationError(
                    f"{item!r} is not a backend: pass a URL or an object with "
                    "report(span), flush(timeout) and close(timeout)"
                )
    if sampler is not None and sample_rate is not None:
        raise ConfigurationError("pass sampler or sample_rate, not both")
    if sampler is None:
        if sample_rate is not None:
            sampler = parent_based(probabilistic(_sample_rate_from(sample_rate, "sample_rate")))
        elif environ.get(ENV_SAMPLE_RATE, "").strip():
            rate = _sample_rate_from(environ[ENV_SAMPLE_RATE].strip(), ENV_SAMPLE_RATE)
            sampler = parent_based(probabilistic(rate))
        else:
            sampler = parent_based()
    elif not callable(sampler):
        raise ConfigurationError(f"sampler {sampler!r} is not callable")
    if trace_id_bits not in (64, 128):
        raise ConfigurationError(f"trace_id_bits must be 64 or 128, not {trace_id_bits!r}")
    return Tracer(
        service,
        built,
        sampler,
        trace_id_bits=trace_id_bits,
        join_shared_spans=join_shared_spans,
    )


def configure(
    service: str | None = None,
    backends: Iterable[Backend | str] | None = None,
    sampler: Sampler | None = None,
    *,
    sample_rate: float | None = None,
    trace_id_bits: int = 128,
    join_shared_spans: bool = False,
    environ: Mapping[str, str] | None = None,
    propagation: Propagator | str | Iterable[str] | None = None,
) -> Tracer:
    """Set up the default tracer that the module-level API and integrations use.

    Arguments not given are read from the environment (``TOMOGRAPH_SERVICE``,
    ``TOMOGRAPH_BACKENDS``, ``TOMOGRAPH_SAMPLE_RATE``, ``TOMOGRAPH_PROPAGATION``).
    ``propagation`` is a list (or comma-separated string) of trace-context format names, or a
    :class:`tomograph.propagation.Propagator`. Returns the new tracer. Backends of the
    previous configuration that the new one does not reuse are flushed and closed.

    >>> import tomograph
    >>> tracer = tomograph.configure(service='billing', backends=['memory://'], sample_rate=1.0)
    >>> tracer.service_name
    'billing'

    Raises :class:`~tomograph.ConfigurationError` for any bad value.
    """
    global _default_tracer
    from tomograph.propagation import composite

    environ = os.environ if environ is None else environ
    try:
        propagator = composite.propagator_from(propagation, environ)
    except ValueError as error:
        source = composite.ENV_PROPAGATION if propagation is None else "propagation"
        raise ConfigurationError(f"{source}: {error}") from None
    tracer = _build_tracer(
        service,
        backends,
        sampler,
        sample_rate,
        trace_id_bits,
        join_shared_spans,
        environ,
    )
    tracer._default_lookup = get_tracer
    with _lock:
        # Both under the lock: concurrent configure() calls leave a matching pair.
        composite.set_default_propagator(propagator)
        previous, _default_tracer = _default_tracer, tracer
        _install_exit_hook()
    if previous is not None:
        # Spans of the previous tracer still open (other threads, long requests) finish after
        # its backends close below: they go to the new tracer's backends instead.
        previous._hand_over(get_tracer)
        kept = {id(backend) for backend in tracer.backends}
        for backend in previous.backends:
            if id(backend) not in kept:
                try:
                    backend.close(EXIT_FLUSH_SECONDS)
                except Exception:
                    _log.exception("closing tomograph backend %r failed", backend)
    return tracer


def get_tracer() -> Tracer:
    """The default tracer; configured from the environment on first use if needed."""
    tracer = _default_tracer
    if tracer is not None:
        return tracer
    return _configure_implicitly()


def _configure_implicitly() -> Tracer:
    global _default_tracer
    with _lock:
        if _default_tracer is not None:
            return _default_tracer
        try:
            tracer = _build_tracer(None, None, None, None, 128, False, os.environ)
        except ConfigurationError as error:
            # The application never asked for tracing explicitly: do not break it.
            _log.error("tomograph: %s; tracing without backends", error)
            tracer = Tracer(os.environ.get(ENV_SERVICE, "").strip() or DEFAULT_SERVICE_NAME)
        tracer._default_lookup = get_tracer
        _default_tracer = tracer
        _install_exit_hook()
        return tracer


def _install_exit_hook() -> None:
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    tracer = _default_tracer
    if tracer is not None:
        tracer.close(EXIT_FLUSH_SECONDS)


def reset() -> None:
    """Forget the default tracer (closing its backends). For tests."""
    global _default_tracer
    with _lock:
        previous, _default_tracer = _default_tracer, None
    from tomograph.propagation import composite

    composite.set_default_propagator(None)
    if previous is not None:
        previous.close(EXIT_FLUSH_SECONDS)
