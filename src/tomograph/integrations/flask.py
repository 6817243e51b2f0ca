"""Flask: a server span per request, named after the matched route (``GET /users/<int:id>``).

As an extension (the application factory pattern works too)::

    from tomograph.integrations.flask import Tracing
    Tracing(app, service_name='orders')

    tracing = Tracing(service_name='orders')
    tracing.init_app(app)

or for every Flask application, created before or after the call (``tomograph run`` does this)::

    from tomograph.integrations.flask import patch
    patch()

The request is traced by the WSGI middleware (:mod:`tomograph.integrations.wsgi`), so the span
is the same as any WSGI request's: it continues the caller's trace, is tagged ``http.method``,
``http.path``, ``http.status_code``, is an error for 5xx and ends when the body has been sent
(streamed bodies, ``stream_with_context`` included). Flask adds what only it knows:

- the route template as Flask writes it (``request.url_rule.rule``, a blueprint's
  ``url_prefix`` included) as ``http.route`` and in the span name, and the endpoint
  (``users.show``) as ``flask.endpoint``;
- exceptions that Flask turns into a 500 page (``got_request_exception``), and those an
  ``errorhandler`` turns into a 5xx response, recorded with their type and traceback;
  ``abort(404)`` and other HTTP exceptions are the client's, not errors.

Under tomograph's WSGI middleware (or ``patch()`` and the extension together) a request is one
span: the outermost layer starts it and Flask tags it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, request
from flask.signals import got_request_exception
from werkzeug.exceptions import HTTPException

from tomograph.integrations.http_server import enclosing_server_span
from tomograph.integrations.patching import is_patched, patch_method, unpatch_method
from tomograph.integrations.wsgi import ENVIRON_KEY, Middleware, StartResponse
from tomograph.propagation import Propagator
from tomograph.span import Span
from tomograph.tracer import Tracer

__all__ = ["ENDPOINT_TAG", "Tracing", "patch", "patched", "unpatch"]

#: The tag naming the Flask endpoint (the view function, ``blueprint.view`` in a blueprint).
ENDPOINT_TAG = "flask.endpoint"


#: ``app.extensions`` key of the :class:`Tracing` that traces an application.
_EXTENSION = "tomograph"
#: ``app.extensions`` key of the middleware :func:`patch` traces an application with.
_PATCH_MIDDLEWARE = "tomograph.patch"
#: environ key: the exception an ``errorhandler`` turned into a response, until its status is known.
_HANDLED = "tomograph.flask.handled"


class Tracing:
    """The Flask extension: traces each request of the applications it is initialised on.

    ``service_name`` is the service the spans are reported under (default: the tracer's);
    ``tracer`` and ``propagator`` default to the default ones, looked up per request, so
    ``tomograph.configure()`` may run later. Requests whose path is in ``excluded_paths``
    (health checks) are not traced.

    >>> from flask import Flask
    >>> app = Flask('orders')
    >>> tracing = Tracing(app, service_name='orders')
    >>> app.extensions['tomograph'] is tracing
    True
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        service_name: str | None = None,
        tracer: Tracer | None = None,
        propagator: Propagator | None = None,
        excluded_paths: Iterable[str] = (),
    ) -> None:
        self.service_name = service_name
        self.tracer = tracer
        self.propagator = propagator
        self.excluded_paths = frozenset(excluded_paths)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Trace ``app``'s requests (a second call for the same application does nothing)."""
        if _EXTENSION in app.extensions:
            return
        app.extensions[_EXTENSION] = self
        app.wsgi_app = Middleware(  # type: ignore[method-assign]
            app.wsgi_app,
            self.service_name,
            tracer=self.tracer,
            propagator=self.propagator,
            excluded_paths=self.excluded_paths,
        )
        for name, wrap in _WRAPPERS:
            patch_method(app, name, wrap)
        _connect_signals()


def _tag_route_and_check_errors(dispatch: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``full_dispatch_request`` (routing is done, the response not yet sent): tag the
    route, and record an exception an ``errorhandler`` turned into a 5xx response.

    A wrapper rather than the ``request_started`` and ``request_finished`` signals: those cost
    about 4 µs per request each (blinker inspects every receiver on every send).
    """

    @functools.wraps(dispatch)
    def full_dispatch_request(*args: Any, **kwargs: Any) -> Any:
        current = request._get_current_object()  # type: ignore[attr-defined]
        environ = current.environ
        span = environ.get(ENVIRON_KEY)
        if span is None:
            return dispatch(*args, **kwargs)
        rule = current.url_rule
        if rule is not None and span.sampled:
            # The WSGI layer names the span after this tag when it finishes it.
            tags = span.tags
            tags["http.route"] = rule.rule
            tags[ENDPOINT_TAG] = rule.endpoint
        response = dispatch(*args, **kwargs)
        handled = environ.pop(_HANDLED, None)
        if handled is not None and getattr(response, "status_code", 0) >= 500:
            span.record_exception(handled)
        return response

    return full_dispatch_request


def _keep_handled_exception(handle: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``handle_user_exception``: an exception an ``errorhandler`` turned into a response
    never reaches ``got_request_exception``; it is kept until the response's status says
    whether it was an error (5xx) or the client's (4xx)."""

    @functools.wraps(handle)
    def handle_user_exception(*args: Any, **kwargs: Any) -> Any:
        result = handle(*args, **kwargs)
        exception = kwargs.get("e", args[-1] if args else None)
        if not isinstance(exception, HTTPException):
            environ = request.environ
            if ENVIRON_KEY in environ:
                environ[_HANDLED] = exception
        return result

    return handle_user_exception


#: The methods wrapped on an application (by :class:`Tracing`) or on ``Flask`` (by :func:`patch`).
_WRAPPERS = (
    ("full_dispatch_request", _tag_route_and_check_errors),
    ("handle_user_exception", _keep_handled_exception),
)


def _propagates(app: Flask) -> bool:
    """True if Flask re-raises unhandled exceptions (testing, debug): the WSGI layer records
    them."""
    propagate = app.config.get("PROPAGATE_EXCEPTIONS")
    return bool(app.testing or app.debug) if propagate is None else bool(propagate)


def _on_exception(sender: Flask, exception: BaseException, **extra: Any) -> None:
    """``got_request_exception``: an exception Flask turns into its 500 page."""
    if _EXTENSION not in sender.extensions and not patched():
        return
    span = request.environ.get(ENVIRON_KEY)
    if isinstance(span, Span) and not _propagates(sender):
        span.record_exception(exception)


def _connect_signals() -> None:
    # Connected once for every application (blinker keeps one connection per receiver); the
    # receiver acts only for traced applications. Only errors send this signal.
    got_request_exception.connect(_on_exception, weak=False)


#: How many wrappers deep :func:`_traces_itself` looks into ``app.wsgi_app``.
_WRAPPERS_SEEN = 8


def _traces_itself(wsgi_app: Any) -> bool:
    """True if tomograph's WSGI middleware is in ``wsgi_app`` (``app.wsgi_app =
    Middleware(app.wsgi_app)``, maybe under other wrappers that keep it as ``.app``): the
    application's own setup, whose settings (service name, excluded paths) win."""
    for _ in range(_WRAPPERS_SEEN):
        if isinstance(wsgi_app, Middleware):
            return True
        wsgi_app = getattr(wsgi_app, "app", None)
        if wsgi_app is None:
            return False
    return False


def _prefix_route(span: Span, mounted_at: Any) -> None:
    """Put the path the outer application mounts this one at before the route Flask tagged."""
    route = span.tags.get("http.route") if span.sampled else None
    if isinstance(route, str) and isinstance(mounted_at, str) and mounted_at:
        span.tags["http.route"] = mounted_at.rstrip("/") + route


def _traced_call(call: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    @functools.wraps(call)
    def __call__(self: Flask, environ: dict[str, Any], start_response: StartResponse) -> Any:
        extensions = self.extensions
        if ENVIRON_KEY in environ or _EXTENSION in extensions:
            return call(self, environ, start_response)  # already traced, by a layer or Tracing
        outer = enclosing_server_span()
        if outer is not None:
            # Served inside this process's own server span: an ASGI app mounting this one
            # through a WSGI bridge (FastAPI's WSGIMiddleware, which never closes the body a
            # span of ours would end with). Flask names and tags that span instead.
            environ[ENVIRON_KEY] = outer
            try:
                return call(self, environ, start_response)
            finally:
                _prefix_route(outer, environ.get("SCRIPT_NAME"))
        # (the wsgi_app it was decided for, the middleware or None if the app traces itself)
        wsgi_app = self.wsgi_app
        decided = extensions.get(_PATCH_MIDDLEWARE)
        if decided is None or decided[0] != wsgi_app:  # == : a bound method is new each time
            # Racing first requests may both decide: either serves.
            middleware = (
                None if _traces_itself(wsgi_app) else Middleware(functools.partial(call, self))
            )
            decided = extensions[_PATCH_MIDDLEWARE] = (wsgi_app, middleware)
        middleware = decided[1]
        if middleware is None:
            return call(self, environ, start_response)
        return middleware(environ, start_response)

    return __call__


def patch() -> bool:
    """Trace every Flask application, existing or created later; False if already done.

    Safe before ``tomograph.configure()``: the tracer is looked up per request.
    """
    if not patch_method(Flask, "__call__", _traced_call):
        return False
    for name, wrap in _WRAPPERS:
        patch_method(Flask, name, wrap)
    _connect_signals()
    return True


def unpatch() -> bool:
    """Undo :func:`patch` (applications with the :class:`Tracing` extension stay traced)."""
    if not unpatch_method(Flask, "__call__"):
        return False
    for name, _ in _WRAPPERS:
        unpatch_method(Flask, name)
    return True


def patched() -> bool:
    """True while :func:`patch` is in effect."""
    return is_patched(Flask, "__call__")
