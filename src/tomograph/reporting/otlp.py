"""The OTLP/HTTP backend: spans as OpenTelemetry protobuf to a collector's ``/v1/traces``.

Needs the ``otlp`` extra (``pip install 'tomograph-tracing[otlp]'``), which brings the official
``opentelemetry-proto`` messages. URL form: ``otlp+http://host:4318`` (or ``otlp+https://``);
parameters ``gzip=1``, ``timeout``, ``max_bytes`` and the transport's ``queue_size``,
``batch_size``, ``interval``, ``max_retries``, ``retry_deadline``. A bearer token and extra
headers come from the constructor or, for URLs, from ``TOMOGRAPH_OTLP_TOKEN`` and
``TOMOGRAPH_OTLP_HEADERS`` (see :mod:`tomograph.config`).

Mapping: one ``ResourceSpans`` per service (``service.name``), scope ``tomograph``; kind None is
``SPAN_KIND_INTERNAL``; tags become attributes with their own types (bool, int, double,
string); notes become events; a recorded exception becomes an ``exception`` event with
``exception.type``, ``exception.message`` and ``exception.stacktrace``; a failed span (one
Zipkin shows as an error: failed, or tagged ``error``) gets status ``ERROR`` with the ``error``
tag as its message; the other vendors' W3C ``tracestate`` received upstream becomes
``trace_state``; the remote endpoint becomes ``peer.service``, ``network.peer.address`` and
``network.peer.port``; trace ids are always 16 bytes (64-bit ids are zero-padded). A list
tag becomes an array of its items' type, an int outside int64 its text (see
:mod:`tomograph.reporting.values`). Spans an answer's ``partial_success`` says were rejected
count as failed.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from tomograph.model import ExceptionNote
from tomograph.propagation.w3c import TRACESTATE, format_tracestate
from tomograph.reporting._http import (
    DEFAULT_MAX_BYTES,
    HttpSender,
    http_backend_url,
)
from tomograph.reporting.transport import Rejected, TransportBackend
from tomograph.reporting.values import safe_text, tag_text, tag_value
from tomograph.urls import strip_credentials

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["OtlpBackend", "encode_spans", "rejected_spans", "stacktrace"]

TRACES_PATH = "/v1/traces"
CONTENT_TYPE = "application/x-protobuf"
SCOPE_NAME = "tomograph"

_KINDS = {
    None: OtlpSpan.SPAN_KIND_INTERNAL,
    "CLIENT": OtlpSpan.SPAN_KIND_CLIENT,
    "SERVER": OtlpSpan.SPAN_KIND_SERVER,
    "PRODUCER": OtlpSpan.SPAN_KIND_PRODUCER,
    "CONSUMER": OtlpSpan.SPAN_KIND_CONSUMER,
}
_INT64 = range(-(2**63), 2**63)
_MAX_U64 = 2**64 - 1
#: The longest ``exception.stacktrace`` sent; a longer one keeps its end (the innermost frames
#: and the exception line).
MAX_STACKTRACE_LENGTH = 16384


def _any_value(value: object) -> AnyValue:
    value = tag_value(value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if value in _INT64:
            return AnyValue(int_value=value)
        return AnyValue(string_value=tag_text(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, tuple):
        return AnyValue(array_value=ArrayValue(values=[_any_value(item) for item in value]))
    return AnyValue(string_value=value)


def _attributes(items: Any) -> list[KeyValue]:
    return [KeyValue(key=safe_text(key), value=_any_value(value)) for key, value in items]


def _version() -> str:
    from tomograph._version import __version__

    return __version__


def _otlp_span(span: Span) -> OtlpSpan:
    offset = span.epoch_offset_ns
    out = OtlpSpan(
        trace_id=span.trace_id.to_bytes(16, "big"),
        span_id=span.span_id.to_bytes(8, "big"),
        name=safe_text(span.name),
        kind=_KINDS[span.kind.value if span.kind is not None else None],
        start_time_unix_nano=_unix_nano(span.start_ns + offset),
        end_time_unix_nano=_unix_nano(max(span.end_ns, span.start_ns + 1) + offset),
    )
    if span.parent_id:
        out.parent_span_id = span.parent_id.to_bytes(8, "big")
    extra = span.extra
    if extra:
        members = extra.get(TRACESTATE)
        if members:
            out.trace_state = format_tracestate(members)
    attributes: list[tuple[str, object]] = list(span.tags.items())
    remote = span.remote_endpoint
    if remote is not None:
        if remote.service_name:
            attributes.append(("peer.service", remote.service_name))
        if remote.ipv4 or remote.ipv6:
            attributes.append(("network.peer.address", remote.ipv4 or remote.ipv6))
        if remote.port:
            attributes.append(("network.peer.port", remote.port))
    if attributes:
        out.attributes.extend(_attributes(attributes))
    for mono, value, duration in span.notes_raw:
        if isinstance(value, ExceptionNote):
            _exception_event(out, mono + offset, value)
            continue
        event = out.events.add(name=safe_text(value), time_unix_nano=_unix_nano(mono + offset))
        if duration is not None:
            event.attributes.append(KeyValue(key="duration_us", value=_any_value(duration)))
    tags = span.tags
    if span.error or "error" in tags:  # what Zipkin shows as an error, whatever the tag's value
        out.status.code = Status.STATUS_CODE_ERROR
        message = tag_text(tags["error"]) if "error" in tags else ""
        if message != "true":  # the bare flag Zipkin writes for a failure without a message
            out.status.message = message
    return out


def _unix_nano(epoch_ns: int) -> int:
    """``epoch_ns`` within the fixed64 fields' range.

    A time set by hand (``annotate_at``, ``start(timestamp_us=...)``) may be before 1970 or
    past 2554: protobuf refuses it, and one refusal would lose the whole batch.
    """
    return min(max(epoch_ns, 0), _MAX_U64)


def _exception_event(out: OtlpSpan, epoch_ns: int, note: ExceptionNote) -> None:
    """OpenTelemetry's ``exception`` event for a note made by ``Span.record_exception``."""
    event = out.events.add(name="exception", time_unix_nano=_unix_nano(epoch_ns))
    event.attributes.extend(
        _attributes(
            (
                ("exception.type", safe_text(note.type_name)),
                ("exception.message", safe_text(note.message)),
                ("exception.stacktrace", safe_text(stacktrace(note))),
            )
        )
    )


def stacktrace(note: ExceptionNote) -> str:
    """The traceback of an exception note, formatted as Python prints it, at most
    :data:`MAX_STACKTRACE_LENGTH` characters.

    Source lines are read here, on the reporting thread, not when the exception is recorded.

    >>> try:
    ...     raise KeyError('sku')
    ... except KeyError as error:
    ...     text = stacktrace(ExceptionNote.of(error))
    >>> text.splitlines()[0], text.splitlines()[-1]
    ('Traceback (most recent call last):', "KeyError: 'sku'")
    """
    lines = ["Traceback (most recent call last):\n"]
    if note.omitted:
        lines.append(f"  ... {note.omitted} earlier frames not recorded\n")
    frames = [
        traceback.FrameSummary(name=function, filename=path, lineno=line)
        for path, line, function in note.frames
    ]
    lines.extend(traceback.StackSummary.from_list(frames).format())
    lines.append(f"{note}\n")
    text = "".join(lines).rstrip("\n")
    if len(text) > MAX_STACKTRACE_LENGTH:
        text = "...\n" + text[-(MAX_STACKTRACE_LENGTH - 4) :]
    return text


def encode_spans(spans: Sequence[Span]) -> bytes:
    """Spans as a serialized ``ExportTraceServiceRequest``, one resource per service.

    >>> encode_spans([])
    b''
    """
    by_service: dict[str, ResourceSpans] = {}
    for span in spans:
        service = safe_text(span.service_name) or "unknown_service"
        resource = by_service.get(service)
        if resource is None:
            resource = by_service[service] = ResourceSpans()
            resource.resource.attributes.append(
                KeyValue(key="service.name", value=AnyValue(string_value=service))
            )
            scope = resource.scope_spans.add()
            scope.scope.name = SCOPE_NAME
            scope.scope.version = _version()
        resource.scope_spans[0].spans.append(_otlp_span(span))
    request = ExportTraceServiceRequest(resource_spans=list(by_service.values()))
    return bytes(request.SerializeToString())


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
