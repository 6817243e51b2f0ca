"""A deadline on request bodies, which uvicorn does not have.

A client that sends its headers and then a byte now and then would hold a connection and a task
forever; a few hundred such clients hold the server. So a request body must arrive within
``timeout`` seconds of the request's start, plus one second for every ``min_rate`` bytes
received (a large body on a slow but honest link gets the time it needs, as with Apache's
``mod_reqtimeout``). Past that the answer is ``408`` with ``Connection: close``, and the server
drops the connection.

What bodies may hold in memory is :class:`~tomograph.collector.ingest.UploadGate`'s business;
how long headers may take, and how many connections are open, is
:mod:`tomograph.collector.connections`'.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tomograph.collector.api import error_response

__all__ = ["BodyDeadlineMiddleware", "BodyTimeout"]


class BodyTimeout(Exception):
    """The request body did not arrive in time (raised from ``receive``, answered with 408)."""


class BodyDeadlineMiddleware:
    """ASGI middleware timing out request bodies that arrive too slowly (see the module)."""

    def __init__(self, app: ASGIApp, timeout: float, min_rate: int = 65_536) -> None:
        self.app = app
        self.timeout = timeout
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        body_done = False
        received = 0
        started = False

        async def receive_in_time() -> Message:
            nonlocal body_done, received
            if body_done:  # e.g. a streaming answer listening for a disconnect
                return await receive()
            deadline = start + self.timeout + received / self.min_rate
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                raise BodyTimeout from None
            received += len(message.get("body", b""))
            body_done = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def send_watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive_in_time, send_watching)
        except BodyTimeout:
            if started:
                raise
            response = error_response(
                408,
                f"the request body did not arrive in time ({self.timeout:g} s, plus 1 s"
                f" per {self.min_rate} bytes received)",
            )
            response.headers["Connection"] = "close"  # the rest of the body is not wanted
            await response(scope, receive, send)
