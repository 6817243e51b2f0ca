"""divák-tornado's API on tomograph: change ``import divak.api`` to ``from tomograph.tornado
import ...`` and the application traces to Zipkin through tomograph.

Install with ``pip install 'tomograph-tracing[tornado]'``. See ``docs/tornado.md``.

>>> from tornado import web
>>> class Application(Recorder, ProbabilisticSampler, web.Application):
...     def __init__(self):
...         super().__init__([])
...         self.set_divak_service('my-service')
...         self.set_divak_sample_probability(0.5)
...         self.add_divak_propagator(ZipkinPropagation())
>>> Application().divak_tracer.service_name
'my-service'
"""

from __future__ import annotations

from tomograph.tornado.application import ProbabilisticSampler, Recorder
from tomograph.tornado.handlers import DivakLoggerAdapter, HttpClientMixin, Logger, RequestTracker
from tomograph.tornado.propagators import (
    HeaderRelayTransformer,
    RequestIdPropagator,
    ZipkinPropagation,
)
from tomograph.tornado.reporters import ZipkinReporter

__all__ = [
    "DivakLoggerAdapter",
    "HeaderRelayTransformer",
    "HttpClientMixin",
    "Logger",
    "ProbabilisticSampler",
    "Recorder",
    "RequestIdPropagator",
    "RequestTracker",
    "ZipkinPropagation",
    "ZipkinReporter",
]
