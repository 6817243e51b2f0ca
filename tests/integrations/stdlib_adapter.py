"""A tiny real adapter of the HTTP server contract: ``http.server`` on 127.0.0.1.

It is what docs/http-contract.md describes, and what the contract's tests drive: the
application is a function ``(path) -> (status, body, route)`` that may raise.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tomograph.context import CURRENT_SPAN
from tomograph.integrations.http_server import HttpServerHandler

#: (path) -> (status, body, route template or None)
App = Callable[[str], tuple[int, bytes, str | None]]


def make_request_handler(handler: HttpServerHandler, app: App) -> type[BaseHTTPRequestHandler]:
    class Traced(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server_host, server_port = self.server.server_address[:2]
            client_host, client_port = self.client_address[:2]
            span = handler.start(
                self.command,
                path,
                dict(self.headers.items()),
                server_host=server_host,
                server_port=server_port,
                client_host=client_host,
                client_port=client_port,
            )
            route = None
            token = CURRENT_SPAN.set(span)
            try:
                status, body, route = app(path)
            except Exception as exc:
                handler.record_exception(span, exc)
                status, body = 500, b"failed"
            finally:
                CURRENT_SPAN.reset(token)
            handler.status(span, status)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            handler.finish(span, route)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Traced


@contextmanager
def serving(handler: HttpServerHandler, app: App) -> Iterator[int]:
    """Serve ``app`` through ``handler`` on a free port; yields the port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_request_handler(handler, app))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """GET ``path`` from a server on 127.0.0.1:``port``; the answer's status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()
