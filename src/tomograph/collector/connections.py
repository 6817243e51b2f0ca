"""Bounds on connections, below the ASGI app: how many, and how long a request's headers may take.

uvicorn accepts every connection and waits for a request's headers forever (its keep-alive
timeout starts only after a first answer, and any byte received resets it), so clients that
connect and then send nothing, or a header byte now and then, pile up file descriptors without
limit. The ASGI app never sees them: it is called once the headers are complete. So uvicorn's
HTTP protocol is wrapped:

* past ``max_connections`` open connections (fewer if the process may not open that many
  files), a new one is answered ``503`` and closed;
* a connection must complete a request's headers within ``request_timeout`` seconds of being
  opened or of its last answer's first byte; otherwise it is answered ``408`` and closed;
* answers are sent without Nagle's delay (``TCP_NODELAY``): uvicorn writes an answer's head
  and body separately, and on a keep-alive connection the body then waited for the client's
  delayed acknowledgement, 40 ms on Linux, for every query. asyncio sets the option itself
  only on sockets created with ``IPPROTO_TCP``, and uvicorn's listening socket is not.

Bodies have their own deadline, in :mod:`tomograph.collector.body_deadline`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from tomograph.collector.app import SECURITY_HEADERS

__all__ = ["guarded_protocol"]


def _raw_answer(status: str, message: str, *extra: tuple[bytes, bytes]) -> bytes:
    """A whole HTTP/1.1 answer, written to a socket that the ASGI app never saw."""
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
        *SECURITY_HEADERS,
    ]
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return b"HTTP/1.1 " + status.encode() + b"\r\n" + head + b"\r\n" + body


class _GuardedProtocol(asyncio.Protocol):
    """uvicorn's HTTP protocol for one connection, with the bounds of the module doc."""

    protocol_class: type[asyncio.Protocol]
    request_timeout: float
    max_connections: int

    def __init__(self, **uvicorn_arguments: Any) -> None:
        self.inner: Any = self.protocol_class(**uvicorn_arguments)
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.inner.connections) >= self.max_connections:
            self.refused = True
            message = f"more than {self.max_connections} connections: retry later"
            transport.write(_raw_answer("503 Service Unavailable", message, (b"retry-after", b"1")))
            transport.close()
            return
        _send_without_delay(transport)
        self.inner.connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        """Start the clock for the next request's headers."""
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.request_timeout, self._expire, self.inner.cycle)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expire(self, cycle: object) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self.inner.cycle is not cycle:
            return  # closed already, or a request arrived meanwhile
        message = f"the request headers did not arrive within {self.request_timeout:g} s"
        transport.write(_raw_answer("408 Request Timeout", message))
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        before = self.inner.cycle
        self.inner.data_received(data)
        cycle = self.inner.cycle
        if cycle is not before:  # a request's headers are complete: its body has its own clock
            self._disarm()
        elif cycle is not None and cycle.response_complete:  # the next request is arriving
            self._arm()

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        result: bool | None = self.inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self.refused:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()


def _send_without_delay(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the connection is already gone: nothing is sent on it anyway


def _open_files_left() -> int:
    """How many connections the process can open, keeping some files for the database and logs:
    past the limit, accepting fails and the server stops accepting anyone for a while."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 1 << 30
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (1 << 30) if soft == resource.RLIM_INFINITY else max(16, soft - 64)


def guarded_protocol(request_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``Config(http=...)``) with the bounds of the module doc.

    >>> guarded_protocol(30.0, 1000).request_timeout  # doctest: +SKIP
    30.0
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    max_connections = min(max_connections, _open_files_left())

    return type(
        "GuardedHTTPProtocol",
        (_GuardedProtocol,),
        {
            "protocol_class": AutoHTTPProtocol,
            "request_timeout": request_timeout,
            "max_connections": max_connections,
        },
    )
