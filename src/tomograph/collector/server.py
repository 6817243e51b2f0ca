"""Running the collector: ``tomograph serve`` starts uvicorn with the app of :func:`create_app`.

The socket is bound before anything is logged, so a collector that cannot listen says why in
one line instead of first announcing where it listens. A stop (SIGTERM, Ctrl-C) refuses and
interrupts queries at once, lets batches being received finish for ``shutdown_timeout``
seconds, then closes the database.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
import threading
import time
from urllib.parse import quote

import uvicorn
from starlette.applications import Starlette

from tomograph.collector.app import begin_shutdown, create_app
from tomograph.collector.settings import CollectorSettings

__all__ = [
    "BackgroundCollector",
    "CollectorStartError",
    "listen",
    "print_ui_link",
    "serve",
    "ui_link",
]


def ui_link(base_url: str, route: str = "/", token: str | None = None) -> str:
    """The web UI's address of ``route``; with ``token``, a link that logs the browser in.

    The token rides in the URL fragment, which browsers never send to a server (so it stays
    out of access logs and Referer headers); the UI keeps it for the browser session and
    removes it from the address bar, as Jupyter's token links do.

    >>> ui_link("http://127.0.0.1:9411", token="s3cret")
    'http://127.0.0.1:9411/#/?token=s3cret'
    >>> ui_link("http://127.0.0.1:9411", "/trace/abc")
    'http://127.0.0.1:9411/#/trace/abc'
    """
    base_url = base_url.rstrip("/")
    if route == "/" and not token:
        return f"{base_url}/"
    link = f"{base_url}/#{route}"
    if token:
        link += ("&" if "?" in route else "?") + "token=" + quote(token, safe="")
    return link


def print_ui_link(label: str, base_url: str, route: str = "/", token: str | None = None) -> None:
    """Print ``label: link``; the token goes into the link only on a terminal, never into a
    file or a log collector (the page then asks for it)."""
    if token and not sys.stdout.isatty():
        print(f"{label}: {ui_link(base_url, route)} (the page asks for the token)", flush=True)
    else:
        print(f"{label}: {ui_link(base_url, route, token)}", flush=True)


class CollectorStartError(OSError):
    """The collector cannot listen where it was told to; the message says why, in one line."""


def listen(settings: CollectorSettings) -> socket.socket:
    """A socket bound to ``settings.host`` and ``settings.port``, or CollectorStartError.

    >>> sock = listen(CollectorSettings(port=0))
    >>> sock.getsockname()[0]
    '127.0.0.1'
    >>> sock.close()
    """
    where = f"{_url_host(settings.host)}:{settings.port}"
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
    except OverflowError:
        sock.close()
        raise CollectorStartError(
            f"cannot listen on {where}: a port is a number from 0 to 65535"
        ) from None
    except OSError as error:
        sock.close()
        raise CollectorStartError(f"cannot listen on {where}: {_why(error, settings)}") from None
    return sock


def _why(error: OSError, settings: CollectorSettings) -> str:
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        return f"{reason}: is another program using port {settings.port}?"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{reason}: {settings.host} is not an address of this machine"
    if error.errno == errno.EACCES and 0 < settings.port < 1024:
        return f"{reason}: ports below 1024 need privileges"
    if isinstance(error, socket.gaierror):
        return f"{reason} (the host name does not resolve)"
    return reason


def serve(settings: CollectorSettings) -> None:
    """Serve the collector until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    Raises CollectorStartError if it cannot listen and
    :class:`~tomograph.collector.storage.StoreOpenError` if the database cannot be opened.

    >>> serve(CollectorSettings(port=9411))  # doctest: +SKIP
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sock = listen(settings)
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    log = logging.getLogger("tomograph.collector")
    base_url = f"http://{_url_host(settings.host)}:{sock.getsockname()[1]}"
    log.info("tomograph collector on %s (traces in %s)", base_url, settings.db_location)
    print_ui_link("web UI", base_url, "/", settings.token)
    if not settings.loopback_only and settings.token is None:
        log.warning(
            "listening on %s without a token: anyone who can reach it can read and write"
            " traces (pass --token or set TOMOGRAPH_COLLECTOR_TOKEN)",
            settings.host,
        )
    server = _CollectorServer(_uvicorn_config(settings, app), app)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    if not server.started:  # the app failed to start (uvicorn logged why)
        raise SystemExit(3)


def _url_host(host: str) -> str:
    """``host`` as written in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(settings: CollectorSettings, app: Starlette) -> uvicorn.Config:
    """uvicorn's settings for the collector: quiet, no Server header, no proxy headers trusted,
    connections bounded (:mod:`tomograph.collector.connections`)."""
    import uvicorn

    from tomograph.collector.connections import guarded_protocol

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.request_timeout, settings.max_connections),
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )


class _CollectorServer(uvicorn.Server):
    """uvicorn's server, telling the app to stop its queries as soon as a stop begins.

    uvicorn waits for every request in flight before it shuts the app down; a long query
    would hold the stop for as long as it runs.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin_shutdown(self.app)
        await super().shutdown(sockets=sockets)


class BackgroundCollector:
    """The collector served from a background thread, for ``tomograph demo`` and tests.

    >>> collector = BackgroundCollector(CollectorSettings(port=0))  # doctest: +SKIP
    >>> collector.start().url  # doctest: +SKIP
    'http://127.0.0.1:54321'
    """

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self._socket: socket.socket | None = None
        app = create_app(settings)
        self._server = _CollectorServer(_uvicorn_config(settings, app), app)
        self._thread = threading.Thread(target=self._run, name="tomograph collector", daemon=True)

    @property
    def url(self) -> str:
        """The base URL the collector answers on."""
        port = self._socket.getsockname()[1] if self._socket else self.settings.port
        return f"http://{_url_host(self.settings.host)}:{port}"

    def _run(self) -> None:
        self._server.run(sockets=[self._socket] if self._socket else None)

    def start(self, timeout: float = 15.0) -> BackgroundCollector:
        """Start serving; raises CollectorStartError (an OSError) if it cannot listen."""
        self._socket = listen(self.settings)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise CollectorStartError(f"the collector did not start within {timeout:g} s")
            time.sleep(0.02)
        return self

    def wait(self) -> None:
        """Serve until Ctrl-C."""
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()
