"""The Zipkin backend: spans to a Zipkin (or compatible) collector's ``POST /api/v2/spans``.

URL form: ``zipkin+http://host:9411`` or ``zipkin+https://host`` (an optional path prefix is
kept, e.g. ``zipkin+https://gateway/zipkin``). Parameters: ``encoding=json|proto``,
``gzip=1``, ``timeout`` (seconds), and the transport's ``queue_size``, ``batch_size``,
``interval``, ``max_retries``, ``retry_deadline``, ``max_bytes``. A bearer token and extra
headers come from the constructor or, for URLs, from ``TOMOGRAPH_ZIPKIN_TOKEN`` and
``TOMOGRAPH_ZIPKIN_HEADERS`` (see :mod:`tomograph.config`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tomograph.encoding import zipkin_json, zipkin_proto
from tomograph.reporting._http import (
    DEFAULT_MAX_BYTES,
    HttpSender,
    http_backend_url,
)
from tomograph.reporting.transport import TransportBackend
from tomograph.urls import strip_credentials

__all__ = ["ZipkinBackend"]

SPANS_PATH = "/api/v2/spans"


class ZipkinBackend(TransportBackend):
    """Reports spans to Zipkin's v2 API in batches from a background thread.

    >>> backend = ZipkinBackend('http://127.0.0.1:9411', encoding='proto')
    >>> backend.endpoint
    'http://127.0.0.1:9411/api/v2/spans'
    >>> backend.close(0)

    ``token`` is sent as ``Authorization: Bearer <token>`` (what ``tomograph serve --token``
    asks for), ``headers`` with every request; neither is ever shown. ``report`` is the
    transport's: O(1), never blocks, never raises.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:9411",
        *,
        encoding: str = "json",
        use_gzip: bool = False,
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        **transport_options: Any,
    ) -> None:
        if encoding not in ("json", "proto"):
            raise ValueError(f"encoding must be json or proto, not {encoding!r}")
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        if not path.endswith(SPANS_PATH):
            path += SPANS_PATH
        target = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        self.endpoint = strip_credentials(target)
        self.encoding = encoding
        codec: Any = zipkin_json if encoding == "json" else zipkin_proto
        sender = HttpSender(
            f"zipkin {self.endpoint}",
            target,
            codec.CONTENT_TYPE,
            codec.encode_spans,
            use_gzip=use_gzip,
            timeout=timeout,
            max_bytes=max_bytes,
            token=token,
            headers=headers,
            auth_hint="pass token= to ZipkinBackend or set TOMOGRAPH_ZIPKIN_TOKEN",
        )
        super().__init__(sender, **transport_options)

    @classmethod
    def from_url(
        cls, url: str, *, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> ZipkinBackend:
        """``zipkin+http://host:9411?encoding=proto&gzip=1&timeout=2``."""
        base, query, options = http_backend_url(url, "zipkin+", {"encoding"}, default_timeout=5)
        encoding = query.get("encoding", "json")
        return cls(base, encoding=encoding, token=token, headers=headers, **options)

    def __repr__(self) -> str:
        return f"ZipkinBackend({self.endpoint!r}, encoding={self.encoding!r})"
