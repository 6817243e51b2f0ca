"""The OTLP/HTTP backend: spans as OpenTelemetry protobuf to a collector's ``/v1/traces``.

Needs the ``otlp`` extra (``pip install 'tomograph-tracing[otlp]'``), which brings the official
``opentelemetry-proto`` messages. URL form: ``otlp+http://host:4318`` (or ``otlp+https://``);
parameters ``gzip=1``, ``timeout``, ``max_bytes`` and the transport's ``queue_size``,
``batch_size``, ``interval``, ``max_retries``, ``retry_deadline``. A bearer token and extra
headers come from the constructor or, for URLs, from ``TOMOGRAPH_OTLP_TOKEN`` and
``TOMOGRAPH_OTLP_HEADERS`` (see :mod:`tomograph.config`).

Spans are encoded by :mod:`tomograph.encoding.otlp` (the mapping is described there). Spans an
answer's ``partial_success`` says were rejected count as failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tomograph.encoding.otlp import CONTENT_TYPE, encode_spans
from tomograph.reporting._http import (
    DEFAULT_MAX_BYTES,
    HttpSender,
    http_backend_url,
)
from tomograph.reporting.transport import Rejected, TransportBackend
from tomograph.urls import strip_credentials

__all__ = ["OtlpBackend", "rejected_spans"]

TRACES_PATH = "/v1/traces"


def rejected_spans(answer: bytes) -> Rejected | None:
    """The spans a 2xx ``ExportTraceServiceResponse`` says were refused (partial success).

    >>> response = ExportTraceServiceResponse()
    >>> response.partial_success.rejected_spans = 2
    >>> response.partial_success.error_message = "span name too long"
    >>> rejected_spans(response.SerializeToString())
    Rejected(spans=2, message='span name too long')
    >>> rejected_spans(b"") is None
    True
    """
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    if partial.rejected_spans <= 0:
        return None
    return Rejected(partial.rejected_spans, partial.error_message[:200])


class OtlpBackend(TransportBackend):
    """Reports spans to an OpenTelemetry collector over OTLP/HTTP (protobuf), in batches.

    >>> backend = OtlpBackend('http://127.0.0.1:4318')
    >>> backend.endpoint
    'http://127.0.0.1:4318/v1/traces'
    >>> backend.close(0)

    ``token`` is sent as ``Authorization: Bearer <token>``, ``headers`` with every request (as
    OpenTelemetry's exporter ``headers``); neither is ever shown.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:4318",
        *,
        use_gzip: bool = False,
        timeout: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        **transport_options: Any,
    ) -> None:
        parts = urlsplit(url)
        path = parts.path.rstrip("/")
        if not path.endswith(TRACES_PATH):
            path += TRACES_PATH
        target = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        self.endpoint = strip_credentials(target)
        sender = HttpSender(
            f"otlp {self.endpoint}",
            target,
            CONTENT_TYPE,
            encode_spans,
            use_gzip=use_gzip,
            timeout=timeout,
            max_bytes=max_bytes,
            headers=headers,
            token=token,
            auth_hint="pass token= or headers= to OtlpBackend, or set TOMOGRAPH_OTLP_TOKEN",
            rejected_in=rejected_spans,
        )
        super().__init__(sender, **transport_options)

    @classmethod
    def from_url(
        cls, url: str, *, token: str | None = None, headers: Mapping[str, str] | None = None
    ) -> OtlpBackend:
        """``otlp+http://host:4318?gzip=1&timeout=5``."""
        base, _, options = http_backend_url(url, "otlp+", set(), default_timeout=10)
        return cls(base, token=token, headers=headers, **options)

    def __repr__(self) -> str:
        return f"OtlpBackend({self.endpoint!r})"
