"""Running the collector: ``tomograph serve`` starts uvicorn with the app of :func:`create_app`."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

from tomograph.collector.settings import CollectorSettings

if TYPE_CHECKING:
    import uvicorn

__all__ = ["BackgroundCollector", "print_ui_link", "serve", "ui_link"]


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


def serve(settings: CollectorSettings) -> None:
    """Serve the collector until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    >>> serve(CollectorSettings(port=9411))  # doctest: +SKIP
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = _uvicorn_config(settings)
    log = logging.getLogger("tomograph.collector")
    log.info(
        "tomograph collector on http://%s:%d (traces in %s)",
        _url_host(settings.host),
        settings.port,
        settings.db_path,
    )
    base_url = f"http://{_url_host(settings.host)}:{settings.port}"
    print_ui_link("web UI", base_url, "/", settings.token)
    if not settings.loopback_only and settings.token is None:
        log.warning(
            "listening on %s without a token: anyone who can reach it can read and write"
            " traces (pass --token or set TOMOGRAPH_COLLECTOR_TOKEN)",
            settings.host,
        )
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:  # e.g. the port is in use (uvicorn logged why)
        raise SystemExit(3)


def _url_host(host: str) -> str:
    """``host`` as written in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _uvicorn_config(settings: CollectorSettings) -> uvicorn.Config:
    """uvicorn's settings for the collector: quiet, no Server header, no proxy headers trusted,
    connections bounded (:mod:`tomograph.collector.connections`)."""
    import uvicorn

    from tomograph.collector.app import create_app
    from tomograph.collector.connections import guarded_protocol

    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=guarded_protocol(settings.request_timeout, settings.max_connections),
        log_level="warning",
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )


class BackgroundCollector:
    """The collector served from a background thread, for ``tomograph demo`` and tests.

    >>> collector = BackgroundCollector(CollectorSettings(port=0))  # doctest: +SKIP
    >>> collector.start().url  # doctest: +SKIP
    'http://127.0.0.1:54321'
    """

    def __init__(self, settings: CollectorSettings) -> None:
        import uvicorn

        self.settings = settings
        self._server = uvicorn.Server(_uvicorn_config(settings))
        self._thread = threading.Thread(
            target=self._server.run, name="tomograph collector", daemon=True
        )

    @property
    def url(self) -> str:
        """The base URL the collector answers on."""
        servers = getattr(self._server, "servers", None) or []
        port = self.settings.port
        for server in servers:
            for sock in server.sockets:
                port = sock.getsockname()[1]
                break
        return f"http://{_url_host(self.settings.host)}:{port}"

    def start(self, timeout: float = 15.0) -> BackgroundCollector:
        """Start serving; raises OSError if the collector did not come up (e.g. port in use)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(
                    f"the collector could not listen on {self.settings.host}:{self.settings.port}"
                )
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
