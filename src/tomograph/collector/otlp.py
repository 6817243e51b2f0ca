"""OTLP/HTTP trace export requests (protobuf or JSON) turned into Zipkin v2 span dicts.

The mapping follows OpenTelemetry's "OpenTelemetry to Zipkin" transformation, as the OTel
Collector's Zipkin exporter and Zipkin's own OTLP receiver apply it:

* ``service.name`` (resource) -> ``localEndpoint.serviceName`` (``unknown_service`` if absent);
  other resource attributes and the span's attributes -> tags (values as text: booleans
  ``true``/``false``, arrays and maps as JSON);
* kind INTERNAL/UNSPECIFIED -> no kind; times -> epoch µs, duration rounded up to >= 1 µs;
* status ERROR -> tag ``error`` (the status message, else the span's own ``error`` attribute,
  else empty) and ``otel.status_code``; OK -> ``otel.status_code=OK``; without ERROR, an
  ``error`` attribute that is ``false`` is left out (Zipkin shows any ``error`` tag as a
  failure); the instrumentation scope -> ``otel.scope.name``/``otel.scope.version``;
* an ``exception`` event -> the note ``"Type: message"`` that tomograph's own spans carry, and
  tags ``exception.type`` and ``exception.stacktrace`` (unless the span has them already);
  other events -> annotations (the event name, or ``{"name": {attributes}}`` as JSON when it
  has any);
* ``trace_state`` -> tag ``w3c.tracestate`` (as the OpenTelemetry Collector's Zipkin exporter);
* ``peer.service`` (or ``server.address``, ``net.peer.name``, ...) -> ``remoteEndpoint``.

Requires the ``collector`` extra (``opentelemetry-proto``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

from tomograph.collector.storage import SpanDict
from tomograph.model import exception_text

__all__ = [
    "OtlpDecodeError",
    "decode_otlp_json",
    "decode_otlp_protobuf",
    "export_response",
    "request_to_zipkin",
]

_KINDS = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS_OK, _STATUS_ERROR = 1, 2
# Attribute names that identify the remote side, most specific first (OTel's Zipkin mapping).
_REMOTE_SERVICE_KEYS = (
    "peer.service",
    "server.address",
    "net.peer.name",
    "network.peer.address",
    "net.sock.peer.addr",
    "peer.hostname",
    "peer.address",
    "db.name",
)
_REMOTE_IP_KEYS = ("network.peer.address", "net.sock.peer.addr", "net.peer.ip")
_REMOTE_PORT_KEYS = ("network.peer.port", "server.port", "net.peer.port", "net.sock.peer.port")


class OtlpDecodeError(ValueError):
    """An OTLP request body is malformed; the message says what is wrong."""


def _any_value(value: Any) -> Any:
    """An ``AnyValue`` as a plain Python value."""
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if field == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if field == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, field)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return "" if value is None else str(value)


def _attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in key_values}


def _hex(raw: bytes, size: int, field: str, where: str) -> str | None:
    if not raw:
        return None
    if len(raw) != size:
        raise OtlpDecodeError(f"{where}: {field} must be {size} bytes, not {len(raw)}")
    if not any(raw):
        raise OtlpDecodeError(f"{where}: {field} must not be all zeros")
    return raw.hex()


def _remote_endpoint(attributes: dict[str, Any]) -> dict[str, Any] | None:
    endpoint: dict[str, Any] = {}
    for key in _REMOTE_SERVICE_KEYS:
        if isinstance(attributes.get(key), str) and attributes[key]:
            endpoint["serviceName"] = attributes[key].lower()
            break
    for key in _REMOTE_IP_KEYS:
        try:
            address = ipaddress.ip_address(str(attributes.get(key, "")))
        except ValueError:
            continue
        endpoint["ipv4" if address.version == 4 else "ipv6"] = str(address)
        break
    for key in _REMOTE_PORT_KEYS:
        port = attributes.get(key)
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            endpoint["port"] = port
            break
    return endpoint or None


def _span(
    span: Any, service: str, resource_tags: dict[str, str], scope: Any, where: str
) -> SpanDict:
    trace_id = _hex(span.trace_id, 16, "traceId", where)
    span_id = _hex(span.span_id, 8, "spanId", where)
    if trace_id is None or span_id is None:
        raise OtlpDecodeError(f"{where}: traceId and spanId are required")
    if trace_id.startswith("0000000000000000"):
        trace_id = trace_id[16:]
    out: SpanDict = {"traceId": trace_id}
    parent = _hex(span.parent_span_id, 8, "parentSpanId", where)
    if parent is not None:
        out["parentId"] = parent
    out["id"] = span_id
    kind = _KINDS.get(span.kind)
    if kind:
        out["kind"] = kind
    if span.name:
        out["name"] = span.name.lower()
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start:
        out["timestamp"] = (start + 500) // 1000
        if end:
            if end < start:
                raise OtlpDecodeError(f"{where}: endTimeUnixNano is before startTimeUnixNano")
            out["duration"] = max(1, (end - start + 500) // 1000)
    out["localEndpoint"] = {"serviceName": service}
    attributes = _attributes(span.attributes)
    remote = _remote_endpoint(attributes)
    if remote:
        out["remoteEndpoint"] = remote
    tags = dict(resource_tags)
    tags.update((key, _text(value)) for key, value in attributes.items())
    annotations = []
    for event in span.events:
        event_attributes = _attributes(event.attributes)
        if event.name == "exception":
            value = _exception_note(event_attributes, tags)
        elif event_attributes:
            value = json.dumps({event.name: event_attributes}, sort_keys=True, ensure_ascii=False)
        else:
            value = event.name
        annotations.append({"timestamp": (event.time_unix_nano + 500) // 1000, "value": value})
    if annotations:
        out["annotations"] = annotations
    if scope is not None and scope.name:
        tags["otel.scope.name"] = scope.name
        if scope.version:
            tags["otel.scope.version"] = scope.version
    if span.status.code == _STATUS_ERROR:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = span.status.message or tags.get("error", "")
    else:
        if span.status.code == _STATUS_OK:
            tags["otel.status_code"] = "OK"
        if attributes.get("error") in (False, "false"):
            del tags["error"]  # OpenTelemetry's "not an error", which Zipkin would show as one
    if span.trace_state:
        tags["w3c.tracestate"] = span.trace_state
    for field in ("dropped_attributes_count", "dropped_events_count", "dropped_links_count"):
        count = getattr(span, field)
        if count:
            tags["otel." + field] = str(count)
    if tags:
        out["tags"] = tags
    return out


def _exception_note(attributes: dict[str, Any], tags: dict[str, str]) -> str:
    """The note of an OpenTelemetry ``exception`` event, as tomograph's own spans write it.

    Its type and stack trace become tags unless the span has them already.
    """
    type_name = _text(attributes.get("exception.type"))
    message = _text(attributes.get("exception.message"))
    for key in ("exception.type", "exception.stacktrace"):
        if key in attributes and key not in tags:
            tags[key] = _text(attributes[key])
    return exception_text(type_name, message) or "exception"


def request_to_zipkin(request: Any) -> list[SpanDict]:
    """The spans of an ``ExportTraceServiceRequest`` as Zipkin v2 dicts.

    Raises :class:`OtlpDecodeError` naming the span at fault (bad id lengths, zero ids).
    """
    spans: list[SpanDict] = []
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _attributes(resource_spans.resource.attributes)
        service = _text(resource.pop("service.name", None)).lower() or "unknown_service"
        resource_tags = {key: _text(value) for key, value in resource.items()}
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope if scope_spans.HasField("scope") else None
            for i, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                spans.append(_span(span, service, resource_tags, scope, where))
    return spans


def decode_otlp_protobuf(data: bytes) -> list[SpanDict]:
    """Decode a binary-protobuf OTLP/HTTP trace request body into Zipkin v2 span dicts.

    >>> decode_otlp_protobuf(b"")
    []
    """
    from google.protobuf.message import DecodeError as ProtobufDecodeError  # type: ignore[import-untyped]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (ProtobufDecodeError, ValueError, RecursionError) as error:
        raise OtlpDecodeError(
            f"body is not a valid OTLP ExportTraceServiceRequest: {error}"
        ) from None
    return request_to_zipkin(request)


_ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


def _unicode(text: str, path: str) -> None:
    """Refuse text protobuf cannot hold: a lone surrogate (``"\\ud800"`` in JSON) is not UTF-8.

    Left in, it makes protobuf's C parser fail with SystemError instead of a parse error.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise OtlpDecodeError(
                f"{path}: text with a lone surrogate is not valid Unicode: {text[:40]!r}"
            ) from None


def _prepare(node: Any, path: str) -> Any:
    """Make parsed OTLP/JSON fit protobuf's JSON mapping, in place: ids from hex (as OTLP/JSON
    writes them) to base64 (as the mapping reads them), and every text checked to be Unicode.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            _unicode(key, path)
            if key in _ID_FIELDS and isinstance(value, str):
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise OtlpDecodeError(f"{path}.{key} must be hex, not {value[:40]!r}") from None
                if raw and len(raw) != _ID_FIELDS[key]:
                    raise OtlpDecodeError(
                        f"{path}.{key} must be {_ID_FIELDS[key] * 2} hex characters"
                    )
                node[key] = base64.b64encode(raw).decode("ascii")
            else:
                _prepare(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _prepare(item, f"{path}[{index}]")
    elif isinstance(node, str):
        _unicode(node, path)
    return node


def decode_otlp_json(data: bytes) -> list[SpanDict]:
    """Decode an OTLP/HTTP JSON trace request body (hex ids, as OTLP/JSON specifies).

    >>> decode_otlp_json(b'{"resourceSpans": []}')
    []
    """
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise OtlpDecodeError(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise OtlpDecodeError("body must be a JSON object with resourceSpans")
    try:
        _prepare(document, "body")
    except RecursionError:
        raise OtlpDecodeError("body is nested too deeply") from None
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise OtlpDecodeError(f"body is not a valid OTLP JSON request: {error}") from None
    return request_to_zipkin(request)


def export_response(warning: str, as_json: bool) -> bytes:
    """The ``ExportTraceServiceResponse`` of an accepted request, in the request's encoding.

    A non-empty ``warning`` goes in ``partial_success.error_message`` with no rejected spans,
    which OTLP defines as a warning to the sender.

    >>> export_response("", as_json=True)
    b'{}'
    >>> export_response("2 texts were cut", as_json=True)
    b'{"partialSuccess": {"errorMessage": "2 texts were cut"}}'
    """
    if as_json:
        document = {"partialSuccess": {"errorMessage": warning}} if warning else {}
        return json.dumps(document).encode()
    if not warning:
        return b""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTracePartialSuccess,
        ExportTraceServiceResponse,
    )

    partial = ExportTracePartialSuccess(error_message=warning)
    return bytes(ExportTraceServiceResponse(partial_success=partial).SerializeToString())
