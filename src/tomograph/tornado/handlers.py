"""Request handler mixins: :class:`RequestTracker`, :class:`Logger`, :class:`HttpClientMixin`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, MutableMapping
from types import TracebackType
from typing import Any

from tornado import httpclient, web

from tomograph.context import CURRENT_SPAN
from tomograph.ids import format_span_id, format_trace_id
from tomograph.integrations.http_client import begin
from tomograph.integrations.http_server import HttpServerHandler
from tomograph.integrations.logging import installed as record_factory_installed
from tomograph.model import TagValue, TraceContext
from tomograph.span import Span
from tomograph.tracer import Tracer, get_tracer

__all__ = ["DivakLoggerAdapter", "HttpClientMixin", "Logger", "RequestTracker"]


def _tracer_of(application: Any) -> Tracer:
    tracer = getattr(application, "divak_tracer", None)
    return tracer if isinstance(tracer, Tracer) else get_tracer()


def _propagators_of(application: Any) -> list[Any]:
    return list(getattr(application, "divak_trace_propagators", ()))


def _tag_value(value: Any) -> TagValue:
    return value if isinstance(value, str | int | float | bool) else str(value)


class RequestTracker(web.RequestHandler):
    """Records a server span for each request and lets the handler add operations to it.

    The span continues the caller's trace when a propagator (``ZipkinPropagation``) finds one
    in the request headers, is named ``"<METHOD> <path>"`` until :meth:`set_divak_name`
    renames it, and is tagged ``http.method``, ``http.path``, ``http.status_code`` (5xx marks
    it failed) and ``request.id``. While the handler runs it is tomograph's current span, so
    ``record_operation``, ``send_request`` and any tomograph-instrumented code nest under it.
    """

    divak_span: Span

    def __init__(self, application: web.Application, request: Any, **kwargs: Any) -> None:
        self.divak_span = self._start_divak_span(application, request)
        super().__init__(application, request, **kwargs)

    @staticmethod
    def _start_divak_span(application: Any, request: Any) -> Span:
        propagators = _propagators_of(application)
        headers = request.headers
        parent: TraceContext | None = None
        for propagator in propagators:
            parent = propagator.extract(headers)
            if parent is not None:
                break
        forced = None
        if parent is None:
            for propagator in propagators:
                forced = propagator.forced_sampling(headers)
                if forced is not None:
                    break
        path = request.path
        # The application's divák propagators have extracted the context: the handler only
        # starts and tags the span, with the application's tracer (rebuilt on reconfiguration).
        span = HttpServerHandler(tracer=_tracer_of(application)).start(
            request.method or "",
            path,
            headers,
            client_host=request.remote_ip,
            context=parent,
            sampling=forced,
        )
        span.name = f"{request.method} {path}"  # divák's name, until set_divak_name renames it
        return span

    async def _execute(self, transforms: Any, *args: bytes, **kwargs: bytes) -> None:
        # Tornado runs each request in a task of its own: making the span current here makes
        # it current for prepare(), the handler method and on_finish() alike.
        token = CURRENT_SPAN.set(self.divak_span)
        try:
            await super()._execute(transforms, *args, **kwargs)
        finally:
            try:
                CURRENT_SPAN.reset(token)
            except ValueError:
                pass  # finished in another context: nothing of ours is current there

    def set_divak_name(self, name: str) -> None:
        """Name the request's span (e.g. after the operation the handler implements)."""
        self.divak_span.name = name

    @contextlib.contextmanager
    def record_operation(self, name: str) -> Iterator[Span]:
        """``with self.record_operation('query-db'):`` times a step as a child span."""
        parent = CURRENT_SPAN.get() or self.divak_span
        with Span(self.divak_span.tracer, name, None, None, parent) as span:
            yield span

    def add_divak_tag(self, name: str, value: Any) -> None:
        """Tag the operation in progress (the innermost ``record_operation``), else the request."""
        span = CURRENT_SPAN.get()
        if span is None or span.trace_id != self.divak_span.trace_id or span.finished:
            span = self.divak_span
        span.tag(name, _tag_value(value))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Record an exception the handler raised on the request's span, then log it."""
        if value is not None and not isinstance(value, web.HTTPError):
            self.divak_span.record_exception(value)
        super().log_exception(typ, value, tb)

    def on_finish(self) -> None:
        """Tag the response status and report the request's span."""
        span = self.divak_span
        status = self.get_status()
        request_id = getattr(self.request, "divak_request_id", None)
        if request_id is not None and span.sampled:
            span.tags["request.id"] = str(request_id)
        HttpServerHandler.status(span, status)
        span.finish()
        super().on_finish()


class DivakLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Puts ``divak_request_id``, ``trace_id`` and ``span_id`` (hex) into every record.

    The ids are those of the span current when the record is made (an operation's span inside
    ``record_operation``), else the request's span; empty strings when there is none.
    """

    def __init__(self, logger: Any, handler: Any) -> None:
        super().__init__(logger, {})
        self.handler = handler

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """Merge the correlation ids into the record's ``extra`` (the caller's keys win)."""
        handler = self.handler
        extra: dict[str, Any] = {
            "divak_request_id": getattr(handler.request, "divak_request_id", None),
        }
        # With tomograph.integrations.logging.install() the record factory sets the ids, and
        # logging refuses an extra that overwrites a record attribute (KeyError).
        if not record_factory_installed():
            span = CURRENT_SPAN.get() or getattr(handler, "divak_span", None)
            extra["trace_id"] = format_trace_id(span.trace_id) if span is not None else ""
            extra["span_id"] = format_span_id(span.span_id) if span is not None else ""
        given = kwargs.get("extra")
        if given:
            extra.update(given)
        kwargs["extra"] = extra
        return msg, kwargs


class Logger(web.RequestHandler):
    """Gives the handler a ``logger`` whose records carry the request's correlation ids.

    ``self.logger`` wraps an existing ``logger`` attribute, else the logger named
    ``<module>.<class>``; see :class:`DivakLoggerAdapter` for what each record gets.
    """

    logger: Any

    def __init__(self, application: web.Application, request: Any, **kwargs: Any) -> None:
        super().__init__(application, request, **kwargs)
        base = getattr(self, "logger", None)
        if base is None:
            cls = type(self)
            base = logging.getLogger(f"{cls.__module__}.{cls.__name__}")
        self.logger = DivakLoggerAdapter(base, self)


class HttpClientMixin(web.RequestHandler):
    """``await self.send_request(url, method='GET', ...)``: an HTTP call in a client span.

    The application's propagators write the trace (and request id) headers; the span is tagged
    ``http.method``, ``http.url`` and ``http.status_code`` (4xx/5xx and failures mark it
    failed). Keyword arguments are :class:`tornado.httpclient.HTTPRequest`'s, plus
    ``raise_error`` (default True, as in ``AsyncHTTPClient.fetch``).
    """

    async def send_request(
        self, request: str | httpclient.HTTPRequest, **kwargs: Any
    ) -> httpclient.HTTPResponse:
        """Send ``request`` with ``AsyncHTTPClient`` and return the response."""
        raise_error = kwargs.pop("raise_error", True)
        if not isinstance(request, httpclient.HTTPRequest):
            request = httpclient.HTTPRequest(request, **kwargs)
        call = begin(request.method, request.url, _tracer_of(self.application))
        if call is not None:
            for propagator in _propagators_of(self.application):
                propagator.inject(call.span, request.headers, self.request)
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except BaseException as error:
            if call is not None:
                call.end(error=error)
            raise
        if call is not None:
            call.end(response.code if response.code != 599 else None, response.error)
        if raise_error:
            response.rethrow()
        return response
