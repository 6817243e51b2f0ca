"""Reporters for :meth:`Recorder.add_divak_reporter`."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tomograph.reporting.zipkin import SPANS_PATH, ZipkinBackend

__all__ = ["ZipkinReporter"]


class ZipkinReporter(ZipkinBackend):
    """Sends spans to a Zipkin collector's v2 API in batches, from a background thread.

    ``url`` is the API root as divák took it (``http://127.0.0.1:9411/api/v2``); the server
    root (``http://127.0.0.1:9411``) or the full ``.../api/v2/spans`` work too. Keyword
    options are :class:`tomograph.reporting.zipkin.ZipkinBackend`'s (``encoding='proto'``,
    ``use_gzip=True``, ``timeout``, ``batch_size`` ...).

    >>> reporter = ZipkinReporter('http://127.0.0.1:9411/api/v2')
    >>> reporter.endpoint
    'http://127.0.0.1:9411/api/v2/spans'
    >>> reporter.close(0)
    """

    def __init__(self, url: str = "http://127.0.0.1:9411/api/v2", **options: Any) -> None:
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        api_root = SPANS_PATH.rsplit("/", 1)[0]  # "/api/v2"
        if path.endswith(api_root):
            path = path[: -len(api_root)]
        super().__init__(urlunsplit((parts.scheme, parts.netloc, path, "", "")), **options)

    def __repr__(self) -> str:
        return f"ZipkinReporter({self.endpoint!r})"
