"""WSGI: a server span per request, continuing the caller's trace.

::

    import tomograph
    app = tomograph.Middleware(app, service_name='glance-registry')

or in a Paste Deploy pipeline::

    [pipeline:main]
    pipeline = tomo authtoken registryapp

    [filter:tomo]
    paste.filter_factory = tomograph:Middleware.factory
    service_name = glance-registry

Each request becomes a ``SERVER`` span that continues the trace in the incoming headers (every
format the default propagator reads: W3C, B3, X-Trace-Info, ...), or starts a new one. It is
tagged ``http.method``, ``http.path``, ``http.status_code`` and ``http.route`` when known, is an
error for 5xx responses and exceptions (re-raised untouched), and ends when the server closes the
response iterable, so streamed bodies are inside it. The span is current while the application
and its body iterator run, and is in ``environ['tomograph.span']``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from tomograph._cache import memoize
from tomograph.context import CURRENT_SPAN
from tomograph.errors import ConfigurationError
from tomograph.integrations._server import ServerMiddlewareBase
from tomograph.model import Endpoint, SpanKind
from tomograph.model import endpoint_for as peer_endpoint
from tomograph.propagation import Propagator, default_propagator
from tomograph.propagation.baggage import adopt_baggage
from tomograph.span import CURRENT, Span
from tomograph.tracer import get_tracer

__all__ = ["ENVIRON_KEY", "Middleware", "route_of"]

#: Where the request's span is put in the WSGI environ, for the application to tag.
ENVIRON_KEY = "tomograph.span"

StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]

_SERVER = SpanKind.SERVER
_set_current = CURRENT_SPAN.set
_reset_current = CURRENT_SPAN.reset


def route_of(environ: dict[str, Any]) -> str | None:
    """The route template the framework matched, if it says so in the environ.

    Knows the ``http.route`` tag set on ``environ['tomograph.span']``, Routes
    (``routes.route``, as used by OpenStack services) and Pyramid (``bfg.routes.route``).

    >>> route_of({'bfg.routes.route': type('R', (), {'pattern': '/users/{id}'})()})
    '/users/{id}'
    """
    span = environ.get(ENVIRON_KEY)
    if span is not None and span.sampled:
        route = span.tags.get("http.route")
        if isinstance(route, str):
            return route
    for key, attribute in (("routes.route", "routepath"), ("bfg.routes.route", "pattern")):
        matched = environ.get(key)
        if matched is not None:
            template = getattr(matched, attribute, None)
            if isinstance(template, str) and template:
                return template
    return None


def _finish(span: Span, environ: dict[str, Any], named: bool) -> None:
    if span.end_ns:
        return
    if span.sampled:
        route = span.tags.get("http.route")
        if route.__class__ is not str or environ.get(ENVIRON_KEY) is not span:
            route = route_of(environ)  # what the framework matched, if it says
        if route is not None:
            span.tags["http.route"] = route
            if not named:
                span.name = f"{span.tags.get('http.method', 'GET')} {route}"
    span.finish()


class _TracedBody:
    """The response iterable, handed to the server: ends the span when closed."""

    __slots__ = ("_body", "_environ", "_iterator", "_named", "_span")

    def __init__(self, body: Iterable[bytes], span: Span, environ: dict[str, Any], named: bool):
        self._body = body
        self._span = span
        self._environ = environ
        self._named = named
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        body = self._body
        if body.__class__ is list or body.__class__ is tuple:
            return iter(body)  # no application code runs while a list is sent: no context switch
        self._iterator = iter(body)
        return self

    def __next__(self) -> bytes:
        iterator = self._iterator
        if iterator is None:
            iterator = self._iterator = iter(self._body)
        token = _set_current(self._span)
        try:
            return next(iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            self._span.record_exception(exc)
            raise
        finally:
            _reset_current(token)

    def close(self) -> None:
        span = self._span
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                token = _set_current(span)
                try:
                    close()
                finally:
                    _reset_current(token)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            _finish(span, self._environ, self._named)


class Middleware(ServerMiddlewareBase[WSGIApp]):
    """WSGI middleware that traces each request as a server span.

    ``service_name`` is the service the spans are reported under (default: the tracer's);
    ``name`` fixes the span name (default: the method, plus the route template when known).
    ``tracer`` defaults to the default tracer, ``propagator`` to the default propagator
    (both looked up per request, so ``tomograph.configure()`` may run after this is built).
    Requests whose path is in ``excluded_paths`` (health checks) are not traced.

    >>> def app(environ, start_response):
    ...     start_response('200 OK', [('Content-Type', 'text/plain')])
    ...     return [b'hello']
    >>> app = Middleware(app, service_name='hello-service')
    """

    @classmethod
    def factory(cls, global_conf: dict[str, Any], **local_conf: str) -> Callable[[WSGIApp], Any]:
        """A Paste Deploy filter factory: ``paste.filter_factory = tomograph:Middleware.factory``.

        Settings (all optional): ``service_name``, ``name``, ``excluded_paths`` (separated by
        spaces or commas) and ``propagation`` (trace-context format names, e.g. ``w3c b3``).
        An unknown setting raises :class:`~tomograph.ConfigurationError`.
        """
        known = {"service_name", "name", "excluded_paths", "propagation"}
        unknown = sorted(set(local_conf) - known)
        if unknown:
            raise ConfigurationError(
                f"tomograph Middleware: unknown setting {unknown[0]!r} "
                f"(known: {', '.join(sorted(known))})"
            )
        propagator = None
        if local_conf.get("propagation", "").strip():
            try:
                propagator = Propagator(local_conf["propagation"].replace(" ", ","))
            except ValueError as error:
                raise ConfigurationError(f"tomograph Middleware: propagation: {error}") from None
        excluded = local_conf.get("excluded_paths", "").replace(",", " ").split()

        def make_filter(app: WSGIApp) -> Middleware:
            return cls(
                app,
                service_name=local_conf.get("service_name") or None,
                name=local_conf.get("name") or None,
                propagator=propagator,
                excluded_paths=excluded,
            )

        return make_filter

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if self.excluded_paths and path in self.excluded_paths:
            return self.app(environ, start_response)
        tracer = self.tracer or get_tracer()
        method = environ.get("REQUEST_METHOD", "GET")
        propagator = self.propagator or default_propagator()
        parent: Any = propagator.extract(environ) or CURRENT
        name = self.name
        span = Span(
            tracer,
            name or method,
            _SERVER,
            None,
            parent,
            _server_endpoint(
                self.service_name or tracer.local_endpoint.service_name,
                environ.get("SERVER_NAME"),
                environ.get("SERVER_PORT"),
            ),
            _client_endpoint(environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")),
        )
        if parent is CURRENT:
            adopt_baggage(span, propagator.extract_baggage(environ))
        if span.sampled:
            tags = span.tags
            tags["http.method"] = method
            tags["http.path"] = environ.get("SCRIPT_NAME", "") + path
        environ[ENVIRON_KEY] = span

        def traced_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            try:
                code = int(status[:3])
            except ValueError:
                code = 0
            if span.sampled:
                span.tags["http.status_code"] = code
                if code >= 500 and "error" not in span.tags:
                    span.tags["error"] = str(code)
            if code >= 500:
                span.error = True
            return start_response(status, headers, exc_info)

        token = _set_current(span)
        try:
            body = self.app(environ, traced_start_response)
        except BaseException as exc:
            span.record_exception(exc)
            _finish(span, environ, name is not None)
            raise
        finally:
            _reset_current(token)
        return _TracedBody(body, span, environ, name is not None)


def _new_local_endpoint(service: str | None, server_name: Any, server_port: Any) -> Endpoint:
    try:
        port = int(server_port or 0)
    except (TypeError, ValueError):
        port = 0
    return peer_endpoint(service, server_name, port)


def _new_remote_endpoint(address: Any, remote_port: Any) -> Endpoint | None:
    if not address:
        return None
    try:
        port = int(remote_port or 0)
    except (TypeError, ValueError):
        port = 0
    # peer_endpoint is cached by address only: client ports change with every connection.
    base = peer_endpoint(None, address, None)
    return Endpoint(None, base.ipv4, base.ipv6, port) if port else base


# A server has few names and ports; a keep-alive connection sends many requests from one
# client port.
_server_endpoint = memoize(_new_local_endpoint, 64)
_client_endpoint = memoize(_new_remote_endpoint, 1024)
