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
import re
import time
from collections.abc import Callable, Mapping, Sequence
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
from tomograph.urls import strip_credentials

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = [
    "HttpSender",
    "http_backend_url",
    "parse_retry_after",
    "request_headers",
]

#: Bodies larger than this are split (Zipkin's default limit is 5 MB, OTLP receivers 4 MiB+).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
#: A 413 lowers ``max_bytes`` no further than this (a proxy answering 413 to small bodies must
#: not turn every batch into one request per span).
_MIN_LEARNED_MAX_BYTES = 64 * 1024

#: RFC 9110 field names: one or more token characters.
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Headers the sender writes itself: a user's value would corrupt the request.
_RESERVED_HEADERS = frozenset(
    ("content-type", "content-encoding", "content-length", "transfer-encoding", "host")
)
#: Secrets shorter than this are not searched for in a server's answer (they would match
#: ordinary text and hide the rest of the message).
_MIN_REDACTED = 4


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
    from tomograph.urls import url_query

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


def request_headers(
    url: str, token: str | None = None, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The extra headers a backend sends: ``headers``, and ``Authorization`` from ``token``
    (``Bearer``) or from ``user:password@`` in ``url`` (HTTP Basic).

    ValueError for a malformed header, a header the sender sets itself, or more than one source
    of ``Authorization``; the messages name headers, never their values.

    >>> request_headers("http://h", token="s3cret", headers={"X-Tenant": "acme"})
    {'X-Tenant': 'acme', 'Authorization': 'Bearer s3cret'}
    """
    extra: dict[str, str] = {}
    for position, (name, value) in enumerate((headers or {}).items(), 1):
        if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
            # not shown: a malformed entry may well be a pasted secret
            raise ValueError(f"header {position}: the name is not an HTTP token")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"header {name} is set by the backend itself")
        if not isinstance(value, str) or not _is_header_value(value):
            raise ValueError(
                f"header {name}: the value must be text without control characters, "
                "in Latin-1 (percent-encode anything else)"
            )
        extra[name] = value.strip()
    parts = urlsplit(url)
    sources = [
        source
        for source, given in (
            ("an Authorization header", any(n.lower() == "authorization" for n in extra)),
            ("a token", token is not None),
            ("user:password@ in the URL", parts.username is not None),
        )
        if given
    ]
    if len(sources) > 1:
        raise ValueError(f"give one of {' and '.join(sources)}, not both")
    if token is not None:
        if not isinstance(token, str) or not token.strip() or not _is_header_value(token):
            raise ValueError("the token must be non-empty Latin-1 text without control characters")
        extra["Authorization"] = f"Bearer {token.strip()}"
    elif parts.username is not None:
        # http.client ignores user:password@ in a URL; send it as HTTP Basic credentials
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        basic = base64.b64encode(credentials.encode()).decode("ascii")
        extra["Authorization"] = f"Basic {basic}"
    return extra


def _is_header_value(value: str) -> bool:
    # http.client sends str values as Latin-1 and refuses CR/LF only when the request is made,
    # on the worker thread, with the value in the message: check up front, name no value.
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any((ord(char) < 32 and char != "\t") or ord(char) == 127 for char in value)


def _connection_error(error: BaseException) -> SendError:
    name = type(error).__name__
    return SendError(f"{name}: {error}", retryable=True, reason=name)


class HttpSender:
    """POSTs encoded span batches to one URL over a kept-alive ``http.client`` connection.

    ``token`` is sent as ``Authorization: Bearer <token>``; credentials in the URL
    (``https://user:password@host``) as HTTP Basic authentication; ``headers`` as they are
    (see :func:`request_headers`). None of them ever appears in a name, log line or message:
    a collector that echoes them in its answer has them replaced by ``***``.

    ``encode`` turns spans into bytes; a batch whose body exceeds ``max_bytes`` is split in
    halves until it fits. Connection errors, timeouts, 5xx, 408 and 429 raise a retryable
    :class:`SendError`; any other 4xx a final one (401 and 403 with a hint about credentials,
    where ``auth_hint`` says how to give them), marked so that the transport splits the
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
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        auth_hint: str = "give the backend a token or headers",
        rejected_in: Callable[[bytes], Rejected | None] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            shown = strip_credentials(url)
            raise ValueError(f"need an http:// or https:// URL with a host, not {shown!r}")
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
        extra = request_headers(url, token, headers)
        self._sends_credentials = any(name.lower() == "authorization" for name in extra)
        self._auth_hint = auth_hint
        secrets = {*extra.values(), token or "", unquote(parts.password or "")}
        secrets |= {value.split(" ", 1)[-1] for value in extra.values()}  # "Bearer <this>"
        self._secrets = sorted((s for s in secrets if len(s) >= _MIN_REDACTED), key=len)[::-1]
        self._headers = {"Content-Type": content_type, **extra}
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
        detail = self._redact(answer.decode("utf-8", "replace")).strip()[:200]
        message = f"HTTP {status} from {self.url}" + (f": {detail}" if detail else "")
        if status in (401, 403):
            message += f" ({self._auth_advice(status)})"
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

    def _auth_advice(self, status: int) -> str:
        if status == 403:
            return "the collector accepts the credentials but forbids sending spans"
        if self._sends_credentials:
            return f"the collector refused the credentials: check them; {self._auth_hint}"
        return f"the collector requires credentials and none were sent: {self._auth_hint}"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:  # longest first: a token inside "Bearer <token>"
            text = text.replace(secret, "***")
        return text

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
