"""Small WSGI applications and Paste factories the WSGI tests serve through real servers.

Run as a program to serve the traced app with waitress (for subprocess tests)::

    python -m tests.support.wsgi_apps PORT SPAN_FILE
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import tomograph

StartResponse = Callable[..., Any]


def hello_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Answers by path: /fail raises, /status/NNN answers NNN, /stream streams, else 200."""
    path = environ.get("PATH_INFO", "")
    if path == "/fail":
        raise RuntimeError("application bug")
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        start_response(f"{code} Status", [("Content-Type", "text/plain")])
        return [b"status"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream()
    if path == "/stream-fail":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(fail=True)
    if path.startswith("/users/"):
        environ["tomograph.span"].tag("http.route", "/users/{id}")
    with tomograph.span("handler"):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", path.encode()]


def _stream(fail: bool = False) -> Iterator[bytes]:
    for index in range(3):
        with tomograph.span(f"chunk {index}"):
            pass
        yield f"chunk {index}\n".encode()
        if fail and index == 1:
            raise ValueError("stream broke")


# -- Paste Deploy factories ------------------------------------------------------------------


def app_factory(global_conf: dict[str, Any], **local_conf: str) -> Any:
    """``[app:baz]``: answers with the filters it went through (from the environ)."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        with tomograph.span("baz handler"):
            passed = environ.get("test.filters", [])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [" ".join([*passed, "baz"]).encode()]

    return app


def filter_factory(global_conf: dict[str, Any], **local_conf: str) -> Any:
    """``[filter:foo]``/``[filter:bar]``: records its name in the environ on the way in."""
    label = local_conf["label"]

    def make_filter(app: Any) -> Any:
        def wrapped(environ: dict[str, Any], start_response: StartResponse) -> Any:
            environ.setdefault("test.filters", []).append(label)
            return app(environ, start_response)

        return wrapped

    return make_filter


def main() -> None:
    import waitress
    from tests.support.span_files import FileBackend

    port, span_file = int(sys.argv[1]), sys.argv[2]
    tomograph.configure(service="waitress-app", backends=[FileBackend(span_file)])
    app = tomograph.Middleware(hello_app, service_name="waitress-app")
    waitress.serve(app, host="127.0.0.1", port=port, threads=2, _quiet=True)


if __name__ == "__main__":
    main()
