"""eventlet.zipkin's ``patcher``: trace an eventlet application with one call.

::

    from tomograph.eventlet import patcher
    patcher.enable_trace_patch(host='127.0.0.1', port=9411, trace_app_log=False,
                               sampling_rate=1.0)

While enabled: every ``eventlet.wsgi`` server records a server span per request (continuing
the caller's B3/W3C context, tagged ``http.uri``); green HTTP clients
(``eventlet.green.httplib``/``http.client``, ``eventlet.green.urllib``) record client spans and
send the trace on; green threads spawned during a request (``eventlet.spawn``, ``spawn_n``,
``spawn_after``, ``GreenPool``) continue its trace; with ``trace_app_log=True`` application log
records become notes on the current span. New traces are recorded at ``sampling_rate``;
requests that continue a trace follow the caller's decision.

Spans go to Zipkin's v2 HTTP API at ``host:port`` (``zipkin+http://host:port``). The original
sent Zipkin v1 Thrift through Scribe: pass ``backends=['scribe://host:9410']`` for that, or any
tomograph backend URLs. ``enable_trace_patch`` configures tomograph's default tracer (as
:func:`tomograph.configure` does), so ``tomograph.span()`` and other integrations report with
it; :func:`disable_trace_patch` flushes it and undoes everything.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable

from tomograph.backend import Backend
from tomograph.config import configure, reset, service_from_environment
from tomograph.eventlet import _greenthreads, _http, _wsgi
from tomograph.eventlet._applog import SpanNoteHandler
from tomograph.tracer import Tracer, get_tracer

__all__ = ["disable_trace_patch", "enable_trace_patch", "is_enabled"]

_lock = threading.Lock()
_log_handler: SpanNoteHandler | None = None
_enabled = False


def _default_service_name() -> str:
    from_env = service_from_environment()
    if from_env:
        return from_env
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return program.removesuffix(".py") or "eventlet"


def enable_trace_patch(
    host: str = "127.0.0.1",
    port: int = 9411,
    trace_app_log: bool = False,
    sampling_rate: float = 1.0,
    *,
    service_name: str | None = None,
    backends: Iterable[Backend | str] | None = None,
) -> Tracer:
    """Start tracing eventlet's WSGI servers, green HTTP clients and green threads.

    ``service_name`` defaults to ``TOMOGRAPH_SERVICE``, else the program's name. ``backends``
    replaces the default ``zipkin+http://host:port``. Returns the tracer now in use. Calling it
    again reconfigures; raises :class:`~tomograph.ConfigurationError` for bad values.
    """
    global _enabled, _log_handler
    if backends is None:
        url_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        backends = [f"zipkin+http://{url_host}:{int(port)}"]
    with _lock:
        tracer = configure(
            service=service_name or _default_service_name(),
            backends=backends,
            sample_rate=sampling_rate,
        )
        _wsgi.patch()
        _http.patch()
        _greenthreads.patch()
        root = logging.getLogger()
        if trace_app_log and _log_handler is None:
            _log_handler = SpanNoteHandler()
            root.addHandler(_log_handler)
        elif not trace_app_log and _log_handler is not None:
            root.removeHandler(_log_handler)
            _log_handler = None
        _enabled = True
    return tracer


def disable_trace_patch(timeout: float = 5.0) -> None:
    """Undo :func:`enable_trace_patch`: flush and forget the tracer, restore eventlet.

    Waits up to ``timeout`` seconds for the spans still queued to be sent.
    """
    global _enabled, _log_handler
    with _lock:
        _wsgi.unpatch()
        _http.unpatch()
        _greenthreads.unpatch()
        if _log_handler is not None:
            logging.getLogger().removeHandler(_log_handler)
            _log_handler = None
        if _enabled:
            get_tracer().flush(timeout)
            reset()
        _enabled = False


def is_enabled() -> bool:
    """True between :func:`enable_trace_patch` and :func:`disable_trace_patch`."""
    return _enabled
