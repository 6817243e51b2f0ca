"""Application mixins: :class:`Recorder` (service, reporters, propagators) and
:class:`ProbabilisticSampler`."""

from __future__ import annotations

from typing import Any, Protocol

from tornado import web

from tomograph.backend import Backend
from tomograph.model import TraceContext
from tomograph.sampling import Sampler, parent_based, probabilistic
from tomograph.span import Span
from tomograph.tracer import Tracer

__all__ = ["DivakPropagator", "ProbabilisticSampler", "Recorder"]


class DivakPropagator(Protocol):
    """What :meth:`Recorder.add_divak_propagator` accepts."""

    def install(self, application: Recorder) -> bool:
        """Register with the application."""
        ...

    def extract(self, headers: Any) -> TraceContext | None:
        """The caller's trace context in incoming headers, or None."""
        ...

    def forced_sampling(self, headers: Any) -> tuple[bool, bool] | None:
        """(record, debug) if the caller asked for recording without sending ids."""
        ...

    def inject(self, span: Span, headers: Any, request: Any = None) -> None:
        """Write what the called service needs onto outgoing headers."""
        ...


class Recorder(web.Application):
    """Gives a Tornado application a tomograph tracer, set up divák's way.

    ``set_divak_service(name)`` names the service, ``add_divak_reporter(reporter)`` adds a
    destination for spans (a :class:`~tomograph.tornado.ZipkinReporter` or any tomograph
    backend), ``add_divak_propagator(propagator)`` adds header propagation. Handlers using
    :class:`~tomograph.tornado.RequestTracker` record into :attr:`divak_tracer`.
    """

    divak_trace_propagators: list[DivakPropagator]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.divak_service = "unknown_service"
        self.divak_reporters: list[Backend] = []
        self.divak_trace_propagators = []
        self._divak_tracer: Tracer | None = None
        super().__init__(*args, **kwargs)

    # -- configuration ----------------------------------------------------------------------

    def set_divak_service(self, service_name: str) -> None:
        """Set the service name spans are reported under."""
        self.divak_service = service_name
        self._divak_tracer = None

    def add_divak_reporter(self, reporter: Backend) -> None:
        """Send finished, sampled spans to ``reporter`` too."""
        self.divak_reporters.append(reporter)
        self._divak_tracer = None

    def add_divak_propagator(self, propagator: DivakPropagator) -> None:
        """Install a propagator (``ZipkinPropagation()``, ``RequestIdPropagator()``)."""
        propagator.install(self)

    #: The name divák's documentation also used.
    add_divak_propagation = add_divak_propagator

    def divak_sampler(self) -> Sampler:
        """The sampler: upstream decisions first; new traces at the probability that
        :class:`ProbabilisticSampler` sets, else all of them."""
        probability = getattr(self, "divak_sample_probability", None)
        if probability is None:
            return parent_based()
        return parent_based(probabilistic(probability))

    # -- the tracer -------------------------------------------------------------------------

    @property
    def divak_tracer(self) -> Tracer:
        """The tomograph tracer for this application (rebuilt after a configuration change)."""
        tracer = self._divak_tracer
        if tracer is None:
            tracer = self._divak_tracer = Tracer(
                self.divak_service, self.divak_reporters, self.divak_sampler()
            )
        return tracer

    def flush_divak(self, timeout: float | None = 5.0) -> bool:
        """Wait up to ``timeout`` s until the reporters have sent what they hold."""
        return self.divak_tracer.flush(timeout)


class ProbabilisticSampler(web.Application):
    """Records the given fraction of new traces (``set_divak_sample_probability``).

    Requests that continue a trace obey the caller's decision; requests that start one are
    recorded with the set probability (1.0 until set).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.divak_sample_probability = 1.0
        super().__init__(*args, **kwargs)

    def set_divak_sample_probability(self, probability: float) -> None:
        """Record ``probability`` (0.0 to 1.0) of the traces this service starts."""
        probability = float(probability)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"sample probability must be from 0.0 to 1.0, not {probability}")
        self.divak_sample_probability = probability
        self._divak_tracer = None
