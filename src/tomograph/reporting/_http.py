"""An HTTP POST sender with keep-alive, gzip and timeouts, for the transport's worker."""

from __future__ import annotations

import base64
import email.utils

# socket looks up the idna codec by name; left to a lazy import on the worker thread it can
# fail in a forked child ("unknown encoding: idna"), so it is imported here, up front.
import encodings.idna  # noqa: F401
import gzip
import http.client
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from tomograph.context import SUPPRESS_TRACING
from tomograph.reporting._url_options import (
    TRANSPORT_PARAMETERS,
    parse_bool,
    parse_number,
    transport_options,
)
from tomograph.reporting.transport import Rejected, SendError

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["HttpSender", "http_backend_url", "parse_retry_after", "strip_credentials"]

#: Bodies larger than this are split (Zipkin's default limit is 5 MB, OTLP receivers 4 MiB+).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
#: A 413 lowers ``max_bytes`` no further than this (a proxy answering 413 to small bodies must
#: not turn every batch into one request per span).
_MIN_LEARNED_MAX_BYTES = 64 * 1024


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> parse_retry_after('3')
    3.0
    >>> parse_retry_after('soon') is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit alone also takes '²' and '٣'
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def strip_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (for names, logs and error messages).

    >>> strip_credentials("https://alice:secret@zipkin.example/api/v2/spans")
    'https://zipkin.example/api/v2/spans'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def http_backend_url(
    url: str, scheme_prefix: str, extra: set[str], default_timeout: float
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Split a backend URL such as ``zipkin+https://host:9411/prefix?gzip=1&timeout=2``.

    Returns the plain http(s) URL, the query (only ``extra``, ``gzip``, ``timeout``,
    ``max_bytes`` and the transport's parameters are allowed), and the keyword arguments those
    common parameters give: ``use_gzip``, ``timeout``, ``max_bytes`` and the transport's.

    >>> base, query, options = http_backend_url(
    ...     "zipkin+https://z:9411/p?gzip=1&encoding=proto", "zipkin+", {"encoding"}, 5
    ... )
    >>> base, query["encoding"], options["use_gzip"], options["timeout"]
    ('https://z:9411/p', 'proto', True, 5.0)
    """
    from tomograph.config import url_query

    query = url_query(url, {"gzip", "timeout", "max_bytes", *extra, *TRANSPORT_PARAMETERS})
    parts = urlsplit(url)
    scheme = parts.scheme.lower().removeprefix(scheme_prefix)
    if scheme not in ("http", "https"):
        raise ValueError(f"use {scheme_prefix}http:// or {scheme_prefix}https://")
    options: dict[str, Any] = {
        "use_gzip": parse_bool("gzip", query.get("gzip", "0")),
        "timeout": parse_number("timeout", query.get("timeout", str(default_timeout)), float),
        "max_bytes": parse_number("max_bytes", query.get("max_bytes", str(DEFAULT_MAX_BYTES)), int),
        **transport_options(query),
    }
    return urlunsplit((scheme, parts.netloc, parts.path, "", "")), query, options


def _connection_error(error: BaseException) -> SendError:
    name = type(error).__name__
    return SendError(f"{name}: {error}", retryable=True, reason=name)


class HttpSender:
    """POSTs encoded span batches to one URL over a kept-alive ``http.client`` connection.

    Credentials in the URL (``https://user:password@host``) are sent as HTTP Basic
    authentication unless ``headers`` has an ``Authorization``; they never appear in messages.

    ``encode`` turns spans into bytes; a batch whose body exceeds ``max_bytes`` is split in
    halves until it fits. Connection errors, timeouts, 5xx, 408 and 429 raise a retryable
    :class:`SendError`; any other 4xx a final one, marked so that the transport splits the
    batch for 413 (too large: ``max_bytes`` is also lowered to half the refused body, not below
    64 KiB) and for 400 or 422 (perhaps one bad span). ``rejected_in`` reads a 2xx answer
    for spans the collector took the body with but refused (OTLP's partial success).
    """

    def __init__(
        self,
        name: str,
        url: str,
        content_type: str,
        encode: Callable[[Sequence[Span]], bytes],
        *,
        use_gzip: bool = False,
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: dict[str, str] | None = None,
        rejected_in: Callable[[bytes], Rejected | None] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"need an http:// or https:// URL with a host, not {url!r}")
        if not 0 < timeout < math.inf or max_bytes < 1:  # "not <" also refuses NaN
            raise ValueError("timeout must be a positive finite number, max_bytes positive")
        self.name = name
        self.url = strip_credentials(url)  # what error messages show
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._encode = encode
        self._rejected_in = rejected_in
        self.use_gzip = use_gzip
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._headers = {"Content-Type": content_type, **(headers or {})}
        if parts.username is not None and "Authorization" not in self._headers:
            # http.client ignores user:password@ in a URL; send it as HTTP Basic credentials
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(credentials.encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        if use_gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._connection: http.client.HTTPConnection | None = None

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        """Bodies for ``spans`` (gzipped if configured), split so each fits ``max_bytes``."""
        body = self._encode(spans)
        if self.use_gzip:
            body = gzip.compress(body, compresslevel=1)  # level 1: most of the gain, least CPU
        if len(body) <= self.max_bytes or len(spans) == 1:
            return [(len(spans), body)]
        half = len(spans) // 2
        return self.encode(spans[:half]) + self.encode(spans[half:])

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self._https:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.timeout
                )
            else:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.timeout
                )
        return self._connection

    def send(self, payload: bytes) -> Rejected | None:
        """POST one body; raise :class:`SendError` unless the answer is 2xx."""
        reused = self._connection is not None
        try:
            response, answer = self._post(payload)
        except (ConnectionError, http.client.RemoteDisconnected) as error:
            self.reset()
            if not reused:
                raise _connection_error(error) from None
            # The server closed the kept-alive connection while it was idle: reconnect once
            # at once, without a backoff.
            try:
                response, answer = self._post(payload)
            except (OSError, http.client.HTTPException) as error:
                self.reset()
                raise _connection_error(error) from None
        except (OSError, http.client.HTTPException) as error:
            self.reset()
            raise _connection_error(error) from None
        status = response.status
        if 200 <= status < 300:
            return self._rejected(answer)
        detail = answer.decode("utf-8", "replace").strip()[:200]
        message = f"HTTP {status} from {self.url}" + (f": {detail}" if detail else "")
        reason = f"HTTP {status}"  # the log-once key: never the server's words
        if status in (408, 429) or status >= 500:
            retry_after = parse_retry_after(response.getheader("Retry-After"))
            raise SendError(message, retryable=True, retry_after=retry_after, reason=reason)
        if status == 413:
            # The collector's limit is below this body: later batches are split before sending.
            self.max_bytes = max(_MIN_LEARNED_MAX_BYTES, min(self.max_bytes, len(payload) // 2))
        raise SendError(
            message,
            retryable=False,
            reason=reason,
            too_large=status == 413,
            bad_content=status in (400, 422),
        )

    def _rejected(self, answer: bytes) -> Rejected | None:
        if self._rejected_in is None or not answer:
            return None
        try:
            return self._rejected_in(answer)
        except Exception:  # an answer we cannot read: the 2xx status says the spans were taken
            return None

    def _post(self, payload: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        connection = self._connect()
        # A patched http.client must not trace the requests that deliver spans.
        token = SUPPRESS_TRACING.set(True)
        try:
            connection.request("POST", self._path, payload, self._headers)
            response = connection.getresponse()
            try:
                answer = response.read(65536)
            except (OSError, http.client.HTTPException):
                # The status line already says what became of the spans; an answer cut short
                # only leaves the connection unusable.
                answer = None
        finally:
            SUPPRESS_TRACING.reset(token)
        if answer is None or not response.isclosed():  # not reusable (or a body too large)
            self.reset()
        return response, answer or b""

    def reset(self) -> None:
        """Drop the connection (it is reopened on the next send)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                pass

    def close(self) -> None:
        """Close the connection."""
        self.reset()
