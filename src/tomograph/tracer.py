"""The Tracer: makes spans, applies the sampler, hands finished spans to backends."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

from tomograph._accelerator import speedups
from tomograph.backend import Backend
from tomograph.context import CURRENT_SPAN
from tomograph.model import Endpoint, SpanKind, TagValue, TraceContext
from tomograph.sampling import (
    ParentBasedSampler,
    Sampler,
    constant_root_decision,
    parent_based,
)
from tomograph.span import ACCELERATED, CURRENT, Span, make_span, span_method

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "on_default_tracer",
    "Tracer",
    "configure_from_environment",
    "default_tracer_or_none",
    "get_tracer",
    "set_default_tracer",
    "set_default_tracer_factory",
]

DEFAULT_SERVICE_NAME = "unknown_service"

_log = logging.getLogger("tomograph")

P = ParamSpec("P")
R = TypeVar("R")


def _discard(span: Span) -> None:
    """Where spans go when no backend is configured."""


def on_default_tracer(make: Callable[Concatenate[Tracer, P], R]) -> Callable[P, R]:
    """``make`` called with the default tracer of each call (:func:`get_tracer`) first.

    The package's module-level ``span()`` and ``start_span()`` are :class:`Span` and
    :meth:`Tracer.start_span` made this way, so their parameters are written once.

    >>> start = on_default_tracer(Tracer.start_span)
    >>> start('nightly job').finish()
    """

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return make(get_tracer(), *args, **kwargs)

    return call


class Tracer:
    """Starts spans for one service and reports finished, sampled spans to its backends.

    >>> from tomograph.reporting.memory import MemoryBackend
    >>> memory = MemoryBackend()
    >>> tracer = Tracer('checkout', backends=[memory])
    >>> with tracer.span('charge card', kind='client') as span:
    ...     span.tag('amount', 12.5)
    >>> [s.name for s in memory.spans]
    ['charge card']

    ``sampler`` defaults to following the upstream decision and recording every new trace.
    ``trace_id_bits`` is 128, or 64 for peers that only understand 64-bit trace ids.
    ``tracer.span(name, kind=None, tags=None, parent=CURRENT, ...)`` makes a span to use as a
    context manager or decorator (the parameters of :class:`Span`, without the tracer);
    :meth:`start_span` one you finish yourself.

    ``join_shared_spans`` makes server spans reuse the caller's span id (Zipkin's classic RPC
    model, reported with ``shared: true``) instead of being the caller's child.
    """

    __slots__ = (
        "_backends",
        "_default_lookup",
        "_failed_backends",
        "_report",
        "_sampler",
        "join_shared_spans",
        "local_endpoint",
        "root_decision",
        "root_follows_parent",
        "trace_id_bits",
    )

    def __init__(
        self,
        service_name: str = DEFAULT_SERVICE_NAME,
        backends: Iterable[Backend] = (),
        sampler: Sampler | None = None,
        *,
        local_endpoint: Endpoint | None = None,
        trace_id_bits: int = 128,
        join_shared_spans: bool = False,
    ) -> None:
        if not isinstance(service_name, str):
            raise TypeError(f"service_name must be a string, not {service_name!r}")
        if trace_id_bits.__class__ is not int or trace_id_bits not in (64, 128):
            raise ValueError(f"trace_id_bits must be 64 or 128, not {trace_id_bits!r}")
        self.local_endpoint = local_endpoint or Endpoint(service_name)
        self.sampler = sampler if sampler is not None else parent_based()
        self.trace_id_bits = trace_id_bits
        self.join_shared_spans = join_shared_spans
        self._backends: tuple[Backend, ...] = tuple(backends)
        self._failed_backends: set[int] = set()
        self._report = self._choose_report()
        #: Set on the default tracer by ``tomograph.configure()``: returns the default tracer of
        #: the moment. Decorators made on a tracer that has it look the tracer up per call, so a
        #: function decorated at import reports with whatever is configured later.
        self._default_lookup: Callable[[], Tracer] | None = None

    #: ``tracer.span(name, kind=None, tags=None, parent=CURRENT, local_endpoint=None,
    #: remote_endpoint=None)``: a :class:`Span` of this tracer, to use as a context manager or
    #: decorator. :func:`~tomograph.span.make_span` itself, as a method: no Python frame of
    #: its own (the compiled one where :data:`tomograph.span.ACCELERATED`).
    span = span_method

    @property
    def sampler(self) -> Sampler:
        """Decides which new traces, and which traces continued from elsewhere, are recorded."""
        return self._sampler

    @sampler.setter
    def sampler(self, sampler: Sampler) -> None:
        self._sampler = sampler
        # Both save a call of the sampler per trace on the hot path.
        #: The sampler's answer for every new root trace, when it is a constant; ``None``
        #: means "ask the sampler".
        self.root_decision: bool | None = constant_root_decision(sampler)
        #: True when the sampler obeys a remote parent's decision whenever there is one.
        #: (Exactly that class: a subclass may decide otherwise.)
        self.root_follows_parent = sampler.__class__ is ParentBasedSampler

    @property
    def service_name(self) -> str | None:
        """The service this tracer reports spans under."""
        return self.local_endpoint.service_name

    @property
    def backends(self) -> tuple[Backend, ...]:
        """The backends finished spans go to."""
        return self._backends

    # -- making spans -----------------------------------------------------------------------

    def start_span(
        self,
        name: str,
        kind: SpanKind | str | None = None,
        tags: Mapping[str, TagValue] | None = None,
        parent: Span | TraceContext | None = CURRENT,
        local_endpoint: Endpoint | None = None,
        remote_endpoint: Endpoint | None = None,
        timestamp_us: int | None = None,
    ) -> Span:
        """Start a span without making it current; call ``span.finish()`` when done.

        >>> span = Tracer('svc').start_span('background job')
        >>> span.finish()
        """
        return make_span(self, name, kind, tags, parent, local_endpoint, remote_endpoint).start(
            timestamp_us
        )

    def current_span(self) -> Span | None:
        """The innermost active span in this thread/task/greenlet, or ``None``."""
        return CURRENT_SPAN.get()

    # -- reporting --------------------------------------------------------------------------

    def _choose_report(self) -> Callable[[Span], None]:
        backends = self._backends
        if not backends:
            return _discard
        if len(backends) == 1 and getattr(backends[0], "report_never_raises", False):
            # tomograph's own backends enqueue in C (deque.append): call them directly.
            return backends[0].report
        return self._report_to_all

    def report(self, span: Span) -> None:
        """Hand a finished, sampled span to every backend. Never raises."""
        self._report(span)

    def _hand_over(self, successor: Callable[[], Tracer]) -> None:
        """From now on, report finished spans through ``successor()`` instead of own backends.

        ``tomograph.configure()`` calls it on the default tracer it replaces: spans started
        before (in flight, or made by code that kept this tracer) finish after this tracer's
        backends are closed, and would be dropped there.
        """
        own = self._report

        def report_to_successor(span: Span) -> None:
            tracer = successor()
            (own if tracer is self else tracer._report)(span)

        self._report = report_to_successor

    def _report_to_all(self, span: Span) -> None:
        for backend in self._backends:
            try:
                backend.report(span)
            except Exception:
                self._backend_failed(backend)

    def _backend_failed(self, backend: Backend) -> None:
        # Log each broken backend once: a failing backend must not flood the application's log.
        if id(backend) not in self._failed_backends:
            self._failed_backends.add(id(backend))
            _log.exception("tomograph backend %r failed to accept a span", backend)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every backend has sent what it holds; False if ``timeout`` s ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        done = True
        for backend in self._backends:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                done = backend.flush(left) and done
            except Exception:
                self._backend_failed(backend)
                done = False
        return done

    def close(self, timeout: float | None = None) -> None:
        """Flush and close every backend, within ``timeout`` seconds in all."""
        self._close_backends(self._backends, timeout)

    def _close_backends(self, backends: Sequence[Backend], timeout: float | None) -> None:
        """Close ``backends`` within one budget of ``timeout`` seconds.

        Every one is asked to send what it holds first (``flush(0)`` wakes a transport's
        worker without waiting): closed one after another, a backend whose collector hangs
        would otherwise spend the time of those after it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for backend in backends:
            try:
                backend.flush(0)
            except Exception:
                self._backend_failed(backend)
        for backend in backends:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                backend.close(left)
            except Exception:
                _log.exception("closing tomograph backend %r failed", backend)

    def __repr__(self) -> str:
        return (
            f"Tracer(service_name={self.service_name!r}, backends={list(self._backends)!r}, "
            f"sampler={self.sampler!r})"
        )

    def __getstate__(self) -> Any:
        raise TypeError("a Tracer holds threads and sockets and cannot be pickled")


if speedups is not None and ACCELERATED:
    # The compiled make_span reads a Tracer's fields at their offsets (others by attribute).
    # Refused for a second Tracer class (this module imported again): that one is read by
    # attribute, which is as correct, only slower.
    with contextlib.suppress(Exception):
        speedups.use_tracer_layout(Tracer)


# -- the default tracer ---------------------------------------------------------------------
# Held here, at the bottom of the layers, so that everything above (the classic API,
# propagation's HTTP helpers, integrations) finds it without importing tomograph.config, which
# sets it: configure() builds backends from URLs, so it sits above reporting.

_default_tracer: Tracer | None = None
_default_tracer_factory: Callable[[], Tracer] = Tracer


def get_tracer() -> Tracer:
    """The default tracer: the one :func:`tomograph.configure` set, else one configured from the
    environment on first use.

    >>> import tomograph
    >>> tomograph.configure(service='billing', environ={}) is get_tracer()
    True
    """
    tracer = _default_tracer
    if tracer is not None:
        return tracer
    return _default_tracer_factory()


def configure_from_environment() -> Tracer:
    """Set up, from the environment, whatever default is not set yet (the tracer, and the
    propagation package's default if it is loaded); returns the default tracer.

    :func:`get_tracer` does this on first use; the propagation package calls it when its
    default propagator is first needed, even if a tracer is set.
    """
    return _default_tracer_factory()


def default_tracer_or_none() -> Tracer | None:
    """The default tracer if one is set; unlike :func:`get_tracer`, never makes one."""
    return _default_tracer


def set_default_tracer(tracer: Tracer | None) -> Tracer | None:
    """Make ``tracer`` the default (``None``: make one on next use); returns the one it replaces.

    :func:`tomograph.configure` calls it under its lock, together with the default propagator.
    """
    global _default_tracer
    previous, _default_tracer = _default_tracer, tracer
    return previous


def set_default_tracer_factory(factory: Callable[[], Tracer]) -> None:
    """How :func:`get_tracer` makes the default tracer when none is set: ``factory()`` must set
    it (with :func:`set_default_tracer`) and return it. :mod:`tomograph.config` installs one that
    configures from the environment; without it, a tracer with no backends is returned.
    """
    global _default_tracer_factory
    _default_tracer_factory = factory
