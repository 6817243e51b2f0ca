"""The legacy Scribe backend: Zipkin v1 Thrift spans, base64-encoded, to a Scribe server.

URL form: ``scribe://host:9410`` (9410 is Zipkin's Scribe port). Parameters: ``category``
(default ``zipkin``), ``timeout`` (seconds), ``max_bytes`` (per ``Log`` call) and the
transport's ``queue_size``, ``batch_size``, ``interval``, ``max_retries``, ``retry_deadline``.

Each batch is one ``scribe.Log(messages)`` call over Thrift's framed binary protocol, one
``LogEntry(category, base64(span))`` per span (see :mod:`tomograph.encoding.zipkin_v1_thrift`).
A ``TRY_LATER`` answer, a dropped connection or a timeout is retried by the batching
transport; anything else that is not ``OK`` is a final failure, counted in the stats.
"""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tomograph.encoding.zipkin_v1_thrift import encode_span
from tomograph.reporting._url_options import TRANSPORT_PARAMETERS, parse_number, transport_options
from tomograph.reporting.transport import SendError, TransportBackend

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["DEFAULT_PORT", "ScribeBackend", "ScribeSender", "encode_log_call"]

DEFAULT_PORT = 9410
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
#: Largest reply frame accepted from the server (a Log reply is about 20 bytes).
MAX_REPLY_BYTES = 64 * 1024

_VERSION_1 = 0x80010000
_CALL, _REPLY, _EXCEPTION = 1, 2, 3
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_OK, _TRY_LATER = 0, 1


def _thrift_string(value: bytes) -> bytes:
    return _I32.pack(len(value)) + value


def encode_log_call(category: str, messages: Sequence[bytes], seqid: int = 0) -> bytes:
    """A framed ``scribe.Log(messages)`` call: one ``LogEntry(category, message)`` each.

    >>> call = encode_log_call('zipkin', [b'abc'])
    >>> int.from_bytes(call[:4], 'big') == len(call) - 4, call[4:8].hex()
    (True, '80010001')
    """
    body = bytearray(_U32.pack(_VERSION_1 | _CALL))
    body += _thrift_string(b"Log") + _I32.pack(seqid)
    body += b"\x0f\x00\x01"  # field 1: list
    body += b"\x0c" + _I32.pack(len(messages))  # of structs
    category_field = b"\x0b\x00\x01" + _thrift_string(category.encode())
    for message in messages:
        body += category_field + b"\x0b\x00\x02" + _thrift_string(message) + b"\x00"
    body += b"\x00"  # end of the arguments
    return _I32.pack(len(body)) + bytes(body)


class ScribeSender:
    """Sends ``Log`` calls to one Scribe server over a kept-open TCP connection."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        category: str = "zipkin",
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if timeout <= 0 or max_bytes < 1:
            raise ValueError("timeout and max_bytes must be positive")
        self.host, self.port = host, port
        self.category = category
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.name = f"scribe {host}:{port}"
        self._socket: socket.socket | None = None

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        """``Log`` calls for ``spans``, split so each stays within ``max_bytes``."""
        messages = [base64.b64encode(encode_span(span)) for span in spans]
        return self._calls(messages)

    def _calls(self, messages: list[bytes]) -> list[tuple[int, bytes]]:
        call = encode_log_call(self.category, messages)
        if len(call) <= self.max_bytes or len(messages) == 1:
            return [(len(messages), call)]
        half = len(messages) // 2
        return self._calls(messages[:half]) + self._calls(messages[half:])

    def _connect(self) -> socket.socket:
        if self._socket is None:
            self._socket = socket.create_connection((self.host, self.port), self.timeout)
        return self._socket

    def _read_exactly(self, sock: socket.socket, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("Scribe server closed the connection")
            data += chunk
        return bytes(data)

    def send(self, payload: bytes) -> None:
        """Make one ``Log`` call; raise :class:`SendError` unless the answer is ``OK``."""
        try:
            sock = self._connect()
            sock.sendall(payload)
            (size,) = _I32.unpack(self._read_exactly(sock, 4))
            if not 0 < size <= MAX_REPLY_BYTES:
                raise ConnectionError(f"bad Scribe reply frame of {size} bytes")
            reply = self._read_exactly(sock, size)
        except (OSError, struct.error) as error:
            self.reset()
            name = type(error).__name__
            raise SendError(f"{name}: {error}", retryable=True, reason=name) from None
        result = _parse_log_reply(reply)
        if result == _OK:
            return
        if result == _TRY_LATER:
            raise SendError(f"{self.name} answered TRY_LATER", retryable=True, reason="TRY_LATER")
        self.reset()
        # The reason stays one of a few words whatever the server sends (codes are any int).
        reason = "unknown result code" if isinstance(result, int) else result
        raise SendError(f"{self.name} answered {result!r}", retryable=False, reason=reason)

    def reset(self) -> None:
        """Close the connection (reopened on the next send)."""
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        """Close the connection."""
        self.reset()


def _parse_log_reply(reply: bytes) -> int | str:
    """The ResultCode of a ``Log`` reply, or a description of what else came back."""
    try:
        (header,) = _U32.unpack_from(reply, 0)
        if header & 0xFFFF0000 != _VERSION_1:
            return "a reply in an unknown protocol"
        kind = header & 0xFF
        (name_length,) = _I32.unpack_from(reply, 4)
        if not 0 <= name_length <= len(reply):
            return "a malformed reply"
        position = 8 + name_length + 4  # name, seqid
        if kind == _EXCEPTION:
            return "an exception"
        if kind != _REPLY:
            return f"message type {kind}"
        while position < len(reply):
            field_type = reply[position]
            if field_type == 0:
                break
            (field_id,) = struct.unpack_from(">h", reply, position + 1)
            if field_id == 0 and field_type == 8:
                (code,) = _I32.unpack_from(reply, position + 3)
                return int(code)
            return "an unexpected result field"
    except struct.error:
        return "a truncated reply"
    return "no result"


class ScribeBackend(TransportBackend):
    """Reports spans as Zipkin v1 Thrift through Scribe, in batches from a background thread.

    >>> backend = ScribeBackend('127.0.0.1', 9410)
    >>> backend
    ScribeBackend('127.0.0.1', 9410, category='zipkin')
    >>> backend.close(0)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        category: str = "zipkin",
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        **transport_options: Any,
    ) -> None:
        self.sender = ScribeSender(
            host, port, category=category, timeout=timeout, max_bytes=max_bytes
        )
        super().__init__(self.sender, **transport_options)

    @classmethod
    def from_url(cls, url: str) -> ScribeBackend:
        """``scribe://host:9410?category=zipkin&timeout=2``."""
        from tomograph.urls import url_query

        query = url_query(url, {"category", "timeout", "max_bytes", *TRANSPORT_PARAMETERS})
        parts = urlsplit(url)
        if parts.path not in ("", "/"):
            raise ValueError("a scribe:// URL has no path")
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or DEFAULT_PORT,
            category=query.get("category", "zipkin") or "zipkin",
            timeout=parse_number("timeout", query.get("timeout", "5"), float),
            max_bytes=parse_number(
                "max_bytes", query.get("max_bytes", str(DEFAULT_MAX_BYTES)), int
            ),
            **transport_options(query),
        )

    def __repr__(self) -> str:
        return (
            f"ScribeBackend({self.sender.host!r}, {self.sender.port}, "
            f"category={self.sender.category!r})"
        )
