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
    :mod:`tomograph.propagation.composite`). Unset: write W3C, baggage and B3, and read any of
    them, X-Trace-Info or Jaeger's ``uber-trace-id``; ``default,xtraceinfo`` writes X-Trace-Info
    too, as earlier versions did.
``TOMOGRAPH_INSTRUMENT``, ``TOMOGRAPH_DISABLE``
    For ``tomograph run``: comma-separated integration names (``flask,redis``) to patch instead
    of every default one, and to leave out. See :func:`integrations_from_environment`.
``TOMOGRAPH_ZIPKIN_TOKEN``, ``TOMOGRAPH_OTLP_TOKEN``
    A bearer token for every ``zipkin+http(s)://`` (``otlp+http(s)://``) backend made from a
    URL, sent as ``Authorization: Bearer <token>``. A URL with its own credentials
    (``user:password@`` or ``token_env=``) does not take it.
``TOMOGRAPH_ZIPKIN_HEADERS``, ``TOMOGRAPH_OTLP_HEADERS``
    Extra request headers for those backends, in the format of OpenTelemetry's
    ``OTEL_EXPORTER_OTLP_HEADERS``: ``name=value,name=value`` with percent-encoded values
    (``Authorization=Bearer%20abc``). A URL with ``headers_env=`` does not take them.
``TOMOGRAPH_NO_EXTENSIONS``
    Set to ``1`` to run the span hot path in pure Python where the compiled one is built.
    The one variable not read here: :mod:`tomograph._accelerator` reads it when tomograph is
    imported, since the choice is made before the first span (see ``docs/performance.md``).

Two backends of the same kind going to two collectors each name their own variables in the
URL: ``zipkin+https://a.example?token_env=A_TOKEN`` reads the token from ``A_TOKEN``, and
``headers_env=NAME`` the headers from ``NAME``. Tokens and header values never appear in
names, reprs, log lines or error messages.

A bad value raises :class:`~tomograph.ConfigurationError` from :func:`configure`, naming the
variable. If the application never calls :func:`configure`, the first span configures tomograph
from the environment; a bad value then is logged as an error and tomograph runs with no backends
rather than breaking the application.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import logging
import math
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from tomograph.backend import Backend
from tomograph.errors import ConfigurationError
from tomograph.sampling import Sampler, parent_based, probabilistic
from tomograph.tracer import (
    DEFAULT_SERVICE_NAME,
    Tracer,
    default_tracer_or_none,
    get_tracer,
    set_default_tracer,
    set_default_tracer_factory,
)
from tomograph.urls import strip_credentials

if TYPE_CHECKING:
    from tomograph.propagation.composite import Propagator
    from tomograph.span import Span

__all__ = [
    "BACKEND_SCHEMES",
    "CREDENTIAL_VARIABLES",
    "backend_from_url",
    "collector_token_from_environment",
    "configure",
    "data_home",
    "integrations_from_environment",
    "parse_backend_urls",
    "parse_headers",
    "run_environment",
    "service_from_environment",
]

ENV_SERVICE = "TOMOGRAPH_SERVICE"
#: OpenTelemetry's service name variable: the service when ``TOMOGRAPH_SERVICE`` is not set.
ENV_OTEL_SERVICE = "OTEL_SERVICE_NAME"
ENV_BACKENDS = "TOMOGRAPH_BACKENDS"
ENV_SAMPLE_RATE = "TOMOGRAPH_SAMPLE_RATE"
ENV_PROPAGATION = "TOMOGRAPH_PROPAGATION"
ENV_COLLECTOR_TOKEN = "TOMOGRAPH_COLLECTOR_TOKEN"
ENV_INSTRUMENT = "TOMOGRAPH_INSTRUMENT"
ENV_DISABLE = "TOMOGRAPH_DISABLE"
#: Set by :func:`configure` to the pid of the process it set backends up in. Inherited by the
#: processes it starts, it lets one that traces without backends (a spawn or forkserver child of
#: multiprocessing starts anew, without the parent's configuration) say so in a warning instead
#: of dropping its spans without a word.
ENV_CONFIGURED_IN = "TOMOGRAPH_CONFIGURED_IN"

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

#: URL scheme -> the variables holding the token and the headers of backends of that kind.
CREDENTIAL_VARIABLES: dict[str, tuple[str, str]] = {
    "zipkin+http": ("TOMOGRAPH_ZIPKIN_TOKEN", "TOMOGRAPH_ZIPKIN_HEADERS"),
    "zipkin+https": ("TOMOGRAPH_ZIPKIN_TOKEN", "TOMOGRAPH_ZIPKIN_HEADERS"),
    "otlp+http": ("TOMOGRAPH_OTLP_TOKEN", "TOMOGRAPH_OTLP_HEADERS"),
    "otlp+https": ("TOMOGRAPH_OTLP_TOKEN", "TOMOGRAPH_OTLP_HEADERS"),
}
#: URL parameters naming the variables that hold one backend's own token and headers.
TOKEN_ENV_PARAMETER = "token_env"
HEADERS_ENV_PARAMETER = "headers_env"

#: How long configure() and reset() wait, in all, for the backends they replace to deliver
#: what they hold.
#: (The exit's budget is tomograph.reporting.transport.EXIT_FLUSH_SECONDS.)
REPLACED_BACKENDS_CLOSE_SECONDS = 2.0

_log = logging.getLogger("tomograph")
#: Held while the default tracer and propagator change: they change together.
_lock = threading.Lock()
_exit_hook_installed = False


def parse_headers(text: str) -> dict[str, str]:
    """Request headers from ``name=value,name=value``, the format of OpenTelemetry's
    ``OTEL_EXPORTER_OTLP_HEADERS``: names and values percent-decoded (a ``+`` stays a plus, as
    in W3C baggage), spaces around them removed, empty entries skipped.

    ValueError names the entry by its position, never by its value.

    >>> parse_headers("Authorization=Bearer%20abc, x-tenant=acme")
    {'Authorization': 'Bearer abc', 'x-tenant': 'acme'}
    """
    headers: dict[str, str] = {}
    for position, item in enumerate(text.split(","), 1):
        if not item.strip():
            continue
        name, equals, value = item.partition("=")
        name = unquote(name).strip()
        if not equals or not name:
            raise ValueError(f"entry {position} is not name=value")
        headers[name] = unquote(value).strip()
    return headers


def _credentials(url: str, scheme: str, environ: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """``url`` without ``token_env``/``headers_env``, and the ``token`` and ``headers``
    arguments that the environment gives its backend."""
    token_variable, headers_variable = CREDENTIAL_VARIABLES[scheme]
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = (TOKEN_ENV_PARAMETER, HEADERS_ENV_PARAMETER)
    own = {key: value for key, value in query if key in named}
    if own:
        rest = [(key, value) for key, value in query if key not in named]
        url = urlunsplit(parts._replace(query=urlencode(rest)))
        for parameter, variable in own.items():
            if not _text_from(environ.get(variable, ""), variable, secret=True):
                raise ValueError(f"{parameter}={variable}, but {variable} is not set")
    # A URL with credentials of its own does not take the ones meant for every backend.
    if parts.username is None:
        token_variable = own.get(TOKEN_ENV_PARAMETER, token_variable)
    else:
        token_variable = own.get(TOKEN_ENV_PARAMETER, "")
    headers_variable = own.get(HEADERS_ENV_PARAMETER, headers_variable)
    options: dict[str, Any] = {}
    token = _text_from(environ.get(token_variable, ""), token_variable, secret=True)
    if token:
        options["token"] = token
    headers = _text_from(environ.get(headers_variable, ""), headers_variable, secret=True)
    if headers:
        try:
            options["headers"] = parse_headers(headers)
        except ValueError as error:
            raise ValueError(f"{headers_variable}: {error}") from None
    return url, options


def backend_from_url(url: str, environ: Mapping[str, str] | None = None) -> Backend:
    """Make the backend a URL names, e.g. ``memory://`` or ``zipkin+http://127.0.0.1:9411``.

    Zipkin and OTLP backends take their token and headers from ``environ`` (default
    ``os.environ``): see the module documentation.

    >>> backend_from_url('memory://')
    MemoryBackend(max_spans=100000)
    """
    url = url.strip()
    # Neither user:password@ nor the query (a "?token=..." someone hoped would work) in messages.
    shown = strip_credentials(url).partition("?")[0].partition("#")[0]
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    target = BACKEND_SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(BACKEND_SCHEMES))
        raise ConfigurationError(f"unknown backend URL {shown!r}: use one of {known}")
    module_name, _, attribute = target.partition(":")
    try:
        factory: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"backend {shown!r} needs an optional dependency that is not installed: {error}"
        ) from error
    for part in attribute.split("."):
        factory = getattr(factory, part)
    try:
        options: dict[str, Any] = {}
        if scheme in CREDENTIAL_VARIABLES:
            url, options = _credentials(url, scheme, os.environ if environ is None else environ)
        backend: Backend = factory(url, **options)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"bad backend URL {shown!r}: {error}") from error
    return backend


def parse_backend_urls(text: str, environ: Mapping[str, str] | None = None) -> list[Backend]:
    """Backends from a comma-separated list of URLs (empty items are ignored)."""
    return [backend_from_url(item, environ) for item in text.split(",") if item.strip()]


#: A decimal number as people write it: no underscores, no "nan"/"inf", ASCII digits only.
_DECIMAL = re.compile(r"[+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def _sample_rate_from(value: object, source: str) -> float:
    """A sample rate from the argument (a real number) or the variable (decimal text)."""
    if isinstance(value, str) and source == ENV_SAMPLE_RATE:
        rate = float(value) if _DECIMAL.fullmatch(value) else math.nan
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        rate = float(value)
    else:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:  # "not" also refuses NaN
        raise ConfigurationError(f"{source} must be a number from 0.0 to 1.0, not {value!r}")
    return rate


def _text_from(value: object, source: str, *, secret: bool = False) -> str:
    """``value`` stripped, if it is text that can be encoded (no lone surrogates).

    The message shows the value unless it may hold a secret (``secret``: a token, headers, or
    backend URLs, which may carry ``user:password@``); it never shows text that is not valid.
    """
    if not isinstance(value, str):
        shown = type(value).__name__ if secret else repr(value)
        raise ConfigurationError(f"{source} must be a string, not {shown}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        # An environment variable holding bytes that are not UTF-8 reads as lone surrogates.
        raise ConfigurationError(
            f"{source} is not valid text: character {error.start + 1} is not UTF-8"
        ) from None
    return value.strip()


def _service_from(service: object, environ: Mapping[str, str]) -> str:
    if service is not None:
        text = _text_from(service, "service")
        if text:
            return text
    return (
        _text_from(environ.get(ENV_SERVICE, ""), ENV_SERVICE)
        # What services moving from OpenTelemetry's SDK already set.
        or _text_from(environ.get(ENV_OTEL_SERVICE, ""), ENV_OTEL_SERVICE)
        or DEFAULT_SERVICE_NAME
    )


def _backends_from(backends: object, environ: Mapping[str, str]) -> list[Backend]:
    if isinstance(backends, str):  # one URL, or several separated by commas, as in the variable
        return parse_backend_urls(backends, environ)
    try:
        items = list(backends)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigurationError(
            f"backends must be a list of backends or URLs, not {backends!r}"
        ) from None
    built = []
    for item in items:
        if isinstance(item, str):
            built.append(backend_from_url(item, environ))
        elif isinstance(item, Backend) and not isinstance(item, type):
            built.append(item)
        else:
            raise ConfigurationError(
                f"{item!r} is not a backend: pass a URL or an object with "
                "report(span), flush(timeout) and close(timeout)"
            )
    return built


def _check_environ(environ: object, *names: str) -> None:
    """A test-supplied ``environ`` must be a mapping of strings, like ``os.environ``."""
    if not isinstance(environ, Mapping):
        raise ConfigurationError(f"environ must be a mapping, not {environ!r}")
    for name in names:
        value = environ.get(name)
        if value is not None:
            _text_from(value, name, secret=name == ENV_BACKENDS)


def _build_tracer(
    service: str | None,
    backends: Iterable[Backend | str] | None,
    sampler: Sampler | None,
    sample_rate: float | None,
    trace_id_bits: int,
    join_shared_spans: bool,
    environ: Mapping[str, str],
) -> Tracer:
    # Every value is checked here, at configure() time: a wrong type accepted now would only
    # fail later, on the span hot path or in an encoder.
    service = _service_from(service, environ)
    if backends is None:
        urls = _text_from(environ.get(ENV_BACKENDS, ""), ENV_BACKENDS, secret=True)
        try:
            built = parse_backend_urls(urls, environ)
        except ConfigurationError as error:
            raise ConfigurationError(f"{ENV_BACKENDS}: {error}") from error
    else:
        built = _backends_from(backends, environ)
    if sampler is not None and sample_rate is not None:
        raise ConfigurationError("pass sampler or sample_rate, not both")
    if sampler is None:
        rate_text = _text_from(environ.get(ENV_SAMPLE_RATE, ""), ENV_SAMPLE_RATE)
        if sample_rate is not None:
            sampler = parent_based(probabilistic(_sample_rate_from(sample_rate, "sample_rate")))
        elif rate_text:
            sampler = parent_based(probabilistic(_sample_rate_from(rate_text, ENV_SAMPLE_RATE)))
        else:
            sampler = parent_based()
    elif isinstance(sampler, type) or not callable(sampler):
        raise ConfigurationError(
            f"sampler must be a sampler such as sampling.always(), not {sampler!r}"
        )
    if trace_id_bits.__class__ is not int or trace_id_bits not in (64, 128):
        raise ConfigurationError(f"trace_id_bits must be 64 or 128, not {trace_id_bits!r}")
    if join_shared_spans.__class__ is not bool:
        raise ConfigurationError(
            f"join_shared_spans must be True or False, not {join_shared_spans!r}"
        )
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
    ``TOMOGRAPH_BACKENDS``, ``TOMOGRAPH_SAMPLE_RATE``, ``TOMOGRAPH_PROPAGATION``); Zipkin and
    OTLP backends given as URLs take their token and headers from it too (see the module).
    ``backends`` is a list of backends or backend URLs (or one string of comma-separated URLs,
    as in the variable). ``propagation`` is a list (or comma-separated string) of trace-context
    format names, or a :class:`tomograph.propagation.Propagator`. Returns the new tracer.
    Backends of the previous configuration that the new one does not reuse are flushed and
    closed; spans still open on the previous tracer are reported through the new one.

    >>> import tomograph
    >>> tracer = tomograph.configure(service='billing', backends=['memory://'], sample_rate=1.0)
    >>> tracer.service_name
    'billing'

    Raises :class:`~tomograph.ConfigurationError` for any bad value.
    """
    composite = _propagation()
    own_environ = environ is None
    environ = os.environ if environ is None else environ
    _check_environ(environ, ENV_SERVICE, ENV_BACKENDS, ENV_SAMPLE_RATE, ENV_PROPAGATION)
    try:
        propagator = composite.propagator_from(
            environ.get(ENV_PROPAGATION, "") if propagation is None else propagation
        )
    except (ValueError, TypeError) as error:
        source = ENV_PROPAGATION if propagation is None else "propagation"
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
    if own_environ:  # a mapping given instead (tests) leaves the process's own alone
        _mark_for_children(bool(tracer.backends))
    with _lock:
        # Both under the lock: concurrent configure() and reset() calls leave a matching pair.
        composite.set_default_propagator(propagator)
        previous = set_default_tracer(tracer)
        _install_exit_hook()
    if previous is not None:
        unreported = previous._report
        # Spans of the previous tracer still open (other threads, long requests) finish after
        # its backends close below: they go to the new tracer's backends instead.
        previous._hand_over(get_tracer)
        if isinstance(unreported, _UnreportedSpans):
            unreported.log_count()
        kept = {id(backend) for backend in tracer.backends}
        replaced = [backend for backend in previous.backends if id(backend) not in kept]
        previous._close_backends(replaced, REPLACED_BACKENDS_CLOSE_SECONDS)
    return tracer


def _configure_implicitly() -> Tracer:
    """The default tracer made from the environment on first use (the application never
    called :func:`configure`)."""
    # The default propagator reads the same environment when it is first made. The propagation
    # package is set up only if loaded: importing it here would put a third of `import
    # tomograph` on the first span. Its own first use comes here through get_tracer() too.
    if "tomograph.propagation.composite" in sys.modules:
        _propagation()
    with _lock:
        tracer = default_tracer_or_none()
        if tracer is not None:
            return tracer
        try:
            tracer = _build_tracer(None, None, None, None, 128, False, os.environ)
        except ConfigurationError as error:
            # The application never asked for tracing explicitly: do not break it.
            _log.error("tomograph: %s; tracing without backends", error)
            try:
                service = _service_from(None, os.environ)
            except ConfigurationError:
                service = DEFAULT_SERVICE_NAME
            tracer = Tracer(service)
        tracer._default_lookup = get_tracer
        if not tracer.backends:
            tracer._report = _UnreportedSpans()
        set_default_tracer(tracer)
        _install_exit_hook()
        return tracer


class _UnreportedSpans:
    """Where the spans of a default tracer made without backends go: nowhere, but counted.

    That tracer is made by the first span when the environment names no backend. An
    application that calls :func:`configure` later (after a span traced at import, at start-up)
    learns from a warning how many spans were finished before it and could not be reported.
    """

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = itertools.count()  # advanced atomically in C, from any thread

    def __call__(self, span: Span) -> None:
        if not next(self._count):
            _warn_if_started_by_a_configured_process()

    def log_count(self) -> None:
        """Log how many spans came here (once: reading the count advances it)."""
        count = next(self._count)
        if count:
            _log.warning(
                "tomograph: %d spans finished before configure(), with no backend set up (by "
                "%s or otherwise), and were not reported; configure tomograph before the "
                "first span",
                count,
                ENV_BACKENDS,
            )


def _forget_the_parents_unreported_spans() -> None:
    """In a forked child: the spans its parent finished unreported are the parent's to count
    (every worker of a prefork server would warn of them again)."""
    tracer = default_tracer_or_none()
    if tracer is not None and isinstance(tracer._report, _UnreportedSpans):
        tracer._report = _UnreportedSpans()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_the_parents_unreported_spans)


def _mark_for_children(configured: bool) -> None:
    """Set :data:`ENV_CONFIGURED_IN` while this process reports spans, for its children."""
    pid = str(os.getpid())
    if configured:
        if os.environ.get(ENV_CONFIGURED_IN) != pid:  # setenv only when it changes
            os.environ[ENV_CONFIGURED_IN] = pid
    elif ENV_CONFIGURED_IN in os.environ:  # tracing turned off: children are not missing it
        del os.environ[ENV_CONFIGURED_IN]


def _warn_if_started_by_a_configured_process() -> None:
    """At the first span traced without backends: warn if this is a multiprocessing child of a
    process that configured tomograph (see :data:`ENV_CONFIGURED_IN`), which it then lacks.

    Only a multiprocessing child: another program the configured process runs (a tool whose
    libraries trace) inherits the variable too, and may well not mean to report.
    """
    configured_in = os.environ.get(ENV_CONFIGURED_IN, "")
    if not configured_in or configured_in == str(os.getpid()):
        return
    import multiprocessing  # only here: a process that never traces unconfigured never pays

    parent = multiprocessing.parent_process()
    if parent is not None and str(parent.pid) == configured_in:
        _log.warning(
            "tomograph: process %d traces spans with no backend set up, but the process that "
            "started it (pid %s) configured tomograph: its spans are discarded. A spawn or "
            "forkserver child of multiprocessing starts anew: call configure() in it too (in "
            "the pool's initializer, or where the target's module is imported), or set %s",
            os.getpid(),
            configured_in,
            ENV_BACKENDS,
        )


def _propagator_from_environment() -> Propagator:
    """The default propagator made on first use: ``TOMOGRAPH_PROPAGATION``, or the defaults."""
    from tomograph.propagation import composite

    try:
        text = _text_from(os.environ.get(ENV_PROPAGATION, ""), ENV_PROPAGATION)
        return composite.propagator_from(text)
    except (ValueError, TypeError, ConfigurationError) as error:
        # Tracing was not configured explicitly: a bad variable must not break the application.
        logging.getLogger("tomograph.propagation").error(
            "tomograph: %s: %s; using the default propagation formats", ENV_PROPAGATION, error
        )
        return composite.Propagator()


def _propagation() -> ModuleType:
    """The default propagator's module, set up to read the environment on first use.

    Imported when tracing is first configured or used, not by ``import tomograph``: the
    propagation formats take a third of its import time.
    """
    from tomograph.propagation import composite

    composite.set_default_propagator_factory(_propagator_from_environment)
    return composite


set_default_tracer_factory(_configure_implicitly)


def service_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """``TOMOGRAPH_SERVICE`` from ``environ`` (default ``os.environ``), or None when unset.

    >>> service_from_environment({'TOMOGRAPH_SERVICE': ' billing '})
    'billing'
    """
    environ = os.environ if environ is None else environ
    return _text_from(environ.get(ENV_SERVICE, ""), ENV_SERVICE) or None


def opentelemetry_variable(name: str, environ: Mapping[str, str] | None = None) -> str:
    """An ``OTEL_*`` variable of OpenTelemetry's SDK that ``tomograph.opentelemetry`` honours
    (the span limits, ``OTEL_PROPAGATORS``), stripped; empty when unset.

    >>> opentelemetry_variable('OTEL_PROPAGATORS', {'OTEL_PROPAGATORS': ' b3 '})
    'b3'
    """
    if not name.startswith("OTEL_"):
        raise ValueError(f"{name!r} is not an OpenTelemetry variable")
    environ = os.environ if environ is None else environ
    return environ.get(name, "").strip()


def collector_token_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """``TOMOGRAPH_COLLECTOR_TOKEN`` (the collector's token, for ``tomograph serve`` and the
    demo), or None when unset or empty.

    >>> collector_token_from_environment({'TOMOGRAPH_COLLECTOR_TOKEN': 's3cret'})
    's3cret'
    """
    environ = os.environ if environ is None else environ
    return environ.get(ENV_COLLECTOR_TOKEN) or None


def _names(text: str) -> list[str]:
    return [name.strip().lower() for name in text.split(",") if name.strip()]


def integrations_from_environment(
    environ: Mapping[str, str] | None = None,
) -> tuple[list[str] | None, list[str]]:
    """The integrations ``TOMOGRAPH_INSTRUMENT`` chooses (None when unset or empty: every
    default one) and those ``TOMOGRAPH_DISABLE`` leaves out: comma-separated names, spaces and
    case ignored. Raises :class:`~tomograph.ConfigurationError` for text that is not valid.

    >>> integrations_from_environment({'TOMOGRAPH_INSTRUMENT': 'Flask, redis'})
    (['flask', 'redis'], [])
    """
    environ = os.environ if environ is None else environ
    instrument = _names(_text_from(environ.get(ENV_INSTRUMENT, ""), ENV_INSTRUMENT))
    disable = _names(_text_from(environ.get(ENV_DISABLE, ""), ENV_DISABLE))
    return instrument or None, disable


def run_environment(
    bootstrap_directory: str,
    settings: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment ``tomograph run`` gives its command: ``environ`` (default
    ``os.environ``) with ``settings`` (variables set by the command's options) and
    ``bootstrap_directory`` first on ``PYTHONPATH``, the entries already there kept after it.

    >>> run_environment('/boot', {'TOMOGRAPH_SERVICE': 'shop'}, {'PYTHONPATH': 'lib'})
    {'PYTHONPATH': '/boot:lib', 'TOMOGRAPH_SERVICE': 'shop'}
    """
    environment = dict(os.environ if environ is None else environ)
    environment.update(settings)
    # A nested ``tomograph run`` (a traced program running another): the directory once.
    # An empty entry stays: it means the current directory, as it did without tomograph.
    existing = environment.get("PYTHONPATH", "")
    kept = [entry for entry in existing.split(os.pathsep) if entry != bootstrap_directory]
    kept = kept if existing else []
    environment["PYTHONPATH"] = os.pathsep.join([bootstrap_directory, *kept])
    return environment


def data_home(environ: Mapping[str, str] | None = None) -> Path:
    """The user's data directory: ``$XDG_DATA_HOME``, else ``~/.local/share``.

    >>> data_home({'XDG_DATA_HOME': '/data'}).as_posix()
    '/data'
    """
    environ = os.environ if environ is None else environ
    return Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def _install_exit_hook() -> None:
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_flush_at_exit)


#: The default tracer the exit hook closed: its second run (see below) closes it only if another
#: replaced it meanwhile (a backend's close() need not bear being called twice).
_closed_at_exit: Tracer | None = None


def _flush_at_exit() -> None:
    global _closed_at_exit
    tracer = default_tracer_or_none()
    if tracer is not None and tracer is not _closed_at_exit:
        _closed_at_exit = tracer
        # One budget for the whole exit, shared with the transports' own exit hook.
        from tomograph.reporting.transport import exit_time_left

        tracer.close(exit_time_left())


# Also registered at import, not only by the first configuration: an exit hook of the
# application that traces the first span configures tracing while the exit hooks run, and a
# hook registered then never runs. (Registered again by the first configuration, to run before
# the transports' own exit hook; the second run then finds the tracer closed.)
atexit.register(_flush_at_exit)


def reset() -> None:
    """Forget the default tracer (closing its backends). For tests."""
    composite = _propagation()
    with _lock:
        # Both under the lock, as configure() sets them.
        previous = set_default_tracer(None)
        composite.set_default_propagator(None)
    if os.environ.get(ENV_CONFIGURED_IN) == str(os.getpid()):
        del os.environ[ENV_CONFIGURED_IN]
    if previous is not None:
        previous.close(REPLACED_BACKENDS_CLOSE_SECONDS)
