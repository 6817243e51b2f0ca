"""Every ``eventlet.wsgi`` server traces its requests while the patch is on.

``eventlet.wsgi.Server.__init__`` is wrapped so the server's application runs inside
tomograph's WSGI middleware (a server span per request, continuing the caller's B3/W3C/
X-Trace-Info context, tagged ``http.uri`` too). When the patch is off, servers made while it
was on call the application directly.
"""

from __future__ import annotations

import http
import sys
from collections.abc import Callable, Iterable
from typing import Any

import eventlet.wsgi

from tomograph.integrations.patching import patch_method, unpatch_method
from tomograph.integrations.wsgi import ENVIRON_KEY, Middleware

# eventlet.wsgi imports a green copy of http.server and leaves it as the ``server`` attribute of
# the ``http`` package, though ``sys.modules`` keeps the real one (or none): any code that then
# uses ``http.server.ThreadingHTTPServer`` or ``from http import server`` (a test server, a
# health endpoint) outside eventlet's hub gets green threads and sockets that never run, and
# hangs. Importing tomograph's eventlet support must not change the standard library.
_REAL_HTTP_SERVER = sys.modules.get("http.server")
if _REAL_HTTP_SERVER is None:
    vars(http).pop("server", None)
else:
    vars(http)["server"] = _REAL_HTTP_SERVER

__all__ = ["TracedApplication", "patch", "unpatch"]

_state = {"enabled": False}


def _uri(environ: dict[str, Any]) -> str:
    path = environ.get("RAW_PATH_INFO") or environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


class TracedApplication:
    """A WSGI application wrapped in tomograph's middleware while the patch is enabled."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.traced = Middleware(self._tag_uri)

    def _tag_uri(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        span = environ.get(ENVIRON_KEY)
        if span is not None:
            span.tag("http.uri", _uri(environ))
        return self.app(environ, start_response)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not _state["enabled"]:
            return self.app(environ, start_response)
        return self.traced(environ, start_response)


def _wrap_init(init: Callable[..., None]) -> Callable[..., None]:
    def traced_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if not isinstance(self.app, TracedApplication):
            self.app = TracedApplication(self.app)

    return traced_init


def patch() -> None:
    """Trace the requests of every ``eventlet.wsgi`` server made from now on."""
    _state["enabled"] = True
    patch_method(eventlet.wsgi.Server, "__init__", _wrap_init)


def unpatch() -> None:
    """Stop tracing requests (servers already made pass requests straight through)."""
    _state["enabled"] = False
    unpatch_method(eventlet.wsgi.Server, "__init__")
