"""Propagators for :meth:`Recorder.add_divak_propagator`: B3 trace headers and ``Request-Id``.

A propagator's ``install(application)`` registers it; the application then asks it to read
each incoming request (``extract``) and to write each outgoing request (``inject``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tomograph.model import TraceContext
from tomograph.propagation import b3
from tomograph.propagation.carriers import reader_for

if TYPE_CHECKING:
    from tomograph.span import Span
    from tomograph.tornado.application import Recorder

__all__ = ["HeaderRelayTransformer", "RequestIdPropagator", "ZipkinPropagation"]

_ACCEPT = {"1", "true", "d"}


class ZipkinPropagation:
    """Reads and writes Zipkin's B3 headers (``X-B3-TraceId``, ``X-B3-SpanId`` ...).

    Incoming requests continue the caller's trace and obey its sampling decision; a request
    with a sampling state but no ids (``X-B3-Flags: 1``, ``X-B3-Sampled: 1``, ``b3: d``) starts
    a new trace that is recorded whatever the sample probability (as debug for ``Flags: 1``).
    Outgoing requests made with ``send_request`` carry the client span's context.

    >>> headers = {'X-B3-TraceId': '0af7651916cd43dd', 'X-B3-SpanId': 'b7ad6b7169203331'}
    >>> hex(ZipkinPropagation().extract(headers).span_id)
    '0xb7ad6b7169203331'
    """

    def install(self, application: Recorder) -> bool:
        """Register with ``application`` (called by ``add_divak_propagator``)."""
        application.divak_trace_propagators.append(self)
        return True

    def extract(self, headers: Any) -> TraceContext | None:
        """The caller's context in ``headers``, or None."""
        return b3.extract(headers)

    def forced_sampling(self, headers: Any) -> tuple[bool, bool] | None:
        """(record, debug) when the caller asked for recording without sending ids."""
        reader = reader_for(headers)
        if reader.first(b3.FLAGS, b3.MAX_LENGTH) == "1":
            return True, True
        single = reader.first(b3.SINGLE, b3.MAX_LENGTH)
        if single is not None and single.strip().lower() in _ACCEPT:
            return True, single.strip().lower() == "d"
        sampled = reader.first(b3.SAMPLED, b3.MAX_LENGTH)
        if sampled is not None and sampled.strip().lower() in _ACCEPT:
            return True, False
        return None

    def inject(self, span: Span, headers: Any, request: Any = None) -> None:
        """Write ``span``'s context as B3 headers."""
        b3.inject(span, headers)

    def __repr__(self) -> str:
        return "ZipkinPropagation()"


class RequestIdPropagator:
    """Relays a correlation header (``Request-Id``) from each request into its response.

    A request without one gets a new value from ``value_factory`` (a UUID4 by default;
    ``value_factory=None`` disables generation). The value is available as
    ``request.divak_request_id``, is tagged ``request.id`` on the server span, is put in every
    log record of the ``Logger`` mixin, and is sent on with ``send_request``.
    """

    def __init__(
        self,
        header_name: str = "Request-Id",
        *args: Any,
        value_factory: Callable[[], object] | None = uuid.uuid4,
    ) -> None:
        self.header_name = header_name
        self.value_factory = value_factory

    def install(self, application: Recorder) -> bool:
        """Add the relaying transform to ``application`` (called by ``add_divak_propagator``)."""
        # Tornado calls a transform with each request: an instance with __call__ works like the
        # class its type hints ask for.
        relay: Any = HeaderRelayTransformer(self.header_name, self.value_factory)
        application.add_transform(relay)
        application.divak_trace_propagators.append(self)
        return False

    def extract(self, headers: Any) -> TraceContext | None:
        """A request id carries no trace: always None."""
        return None

    def forced_sampling(self, headers: Any) -> tuple[bool, bool] | None:
        """A request id asks for no sampling: always None."""
        return None

    def inject(self, span: Span, headers: Any, request: Any = None) -> None:
        """Send the current request's id on to the service being called."""
        value = getattr(request, "divak_request_id", None) if request is not None else None
        if value is not None and self.header_name not in headers:
            headers[self.header_name] = value

    def __repr__(self) -> str:
        return f"RequestIdPropagator({self.header_name!r})"


#: The longest incoming request id relayed; longer ones are replaced by a fresh id.
MAX_REQUEST_ID_LENGTH = 256


def _acceptable_request_id(value: str) -> bool:
    return 0 < len(value) <= MAX_REQUEST_ID_LENGTH and value.isprintable()


class HeaderRelayTransformer:
    """A Tornado output transform that copies a request header into the response.

    Tornado makes one instance per request by calling the transform with the request.
    """

    def __init__(self, header_name: str, value_factory: Callable[[], object] | None) -> None:
        self.header_name = header_name
        self.value_factory = value_factory

    def __call__(self, request: Any) -> _HeaderRelay:
        """The per-request transform for ``request`` (sets ``request.divak_request_id``)."""
        value = request.headers.get(self.header_name)
        if value is not None and not _acceptable_request_id(value):
            value = None  # an oversized or unprintable id is not relayed, logged or sent on
        if value is None and self.value_factory is not None:
            value = str(self.value_factory())
        request.divak_request_id = value
        return _HeaderRelay(self.header_name, value)


class _HeaderRelay:
    __slots__ = ("header_name", "value")

    def __init__(self, header_name: str, value: str | None) -> None:
        self.header_name = header_name
        self.value = value

    def transform_first_chunk(
        self, status_code: int, headers: Any, chunk: bytes, finishing: bool
    ) -> tuple[int, Any, bytes]:
        if self.value is not None and headers.get(self.header_name) is None:
            headers[self.header_name] = self.value
        return status_code, headers, chunk

    def transform_chunk(self, chunk: bytes, finishing: bool) -> bytes:
        return chunk
