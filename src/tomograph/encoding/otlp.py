"""OTLP traces (``ExportTraceServiceRequest``), protobuf and JSON: encode spans, decode requests.

Needs ``opentelemetry-proto`` (the ``otlp`` or ``collector`` extra), which brings the official
messages.

Encoding (what :class:`~tomograph.reporting.otlp.OtlpBackend` sends): one ``ResourceSpans`` per
service (``service.name``); a span made through OpenTelemetry's API in the scope its tags
``otel.scope.name``/``otel.scope.version`` name (its tracer's), the others in scope
``tomograph``; kind None is ``SPAN_KIND_INTERNAL``; tags become attributes with their own
types (bool, int, double, string); notes become events; a recorded exception becomes an
``exception`` event with ``exception.type``, ``exception.message`` and
``exception.stacktrace``; a failed span (one Zipkin shows as an
error: failed, or tagged ``error``) gets status ``ERROR`` with the ``error`` tag as its message;
the other vendors' W3C ``tracestate`` received upstream becomes ``trace_state``; the remote
endpoint becomes ``peer.service``, ``network.peer.address`` and ``network.peer.port``; trace
ids are always 16 bytes (64-bit ids are zero-padded). A list tag becomes an array of its items'
type, an int outside int64 its text (see :mod:`tomograph.encoding.values`).

Decoding (what the collector receives on ``/v1/traces``) returns the span dicts of
:mod:`tomograph.encoding.normalize`, following OpenTelemetry's "OpenTelemetry to Zipkin"
transformation, as the OTel Collector's Zipkin exporter and Zipkin's own OTLP receiver apply it:

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

Malformed requests raise :class:`~tomograph.encoding.errors.DecodeError` naming the span.
Resource and scope attributes are copied into each span: a request may copy at most
``max_copied`` bytes of them (as stored JSON); the spans past that get none, and the tag
``tomograph.uncopied`` says so (see :func:`request_spans`).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError as ProtobufDecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from tomograph._version import __version__
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.normalize import SpanDict, span_dict
from tomograph.encoding.values import safe_text, tag_text, tag_value
from tomograph.model import (
    STATUS_CODE_TAG,
    EventNote,
    ExceptionNote,
    LinkNote,
    exception_text,
)
from tomograph.propagation.w3c import TRACESTATE, format_tracestate

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = [
    "CONTENT_TYPE",
    "MAX_STACKTRACE_LENGTH",
    "SCOPE_NAME",
    "UNCOPIED_TAG",
    "decode_json_spans",
    "decode_spans",
    "encode_spans",
    "export_response",
    "request_spans",
    "stacktrace",
]

CONTENT_TYPE = "application/x-protobuf"
SCOPE_NAME = "tomograph"
#: The tags naming the instrumentation scope of a span made through OpenTelemetry's API (its
#: tracer's name and version): OTLP carries them as the span's scope, not as attributes.
_SCOPE_NAME_TAG = "otel.scope.name"
_SCOPE_VERSION_TAG = "otel.scope.version"
_SCOPE_TAGS = frozenset((_SCOPE_NAME_TAG, _SCOPE_VERSION_TAG))
#: What a resource or scope attribute copied into a span costs beyond its stored text: its
#: place in the span's tags (a dict entry) and the JSON around it once the span is stored.
_COPIED_TAG_COST = 48
#: The tag of a span that did not get its resource and scope attributes (see request_spans).
UNCOPIED_TAG = "tomograph.uncopied"
#: The tags of a status set through OpenTelemetry's API (its code, and its description as the
#: ``error`` tag): OTLP carries them as the span's status, as the SDK exports it.
_STATUS_TAGS = frozenset((STATUS_CODE_TAG, "error"))

# -- encoding ---------------------------------------------------------------------------------

_KIND_NUMBERS = {
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


def _otlp_span(span: Span) -> OtlpSpan:
    offset = span.epoch_offset_ns
    out = OtlpSpan(
        trace_id=span.trace_id.to_bytes(16, "big"),
        span_id=span.span_id.to_bytes(8, "big"),
        name=safe_text(span.name),
        kind=_KIND_NUMBERS[span.kind.value if span.kind is not None else None],
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
    tags = span.tags
    attributes: list[tuple[str, object]] = list(tags.items())
    if _SCOPE_NAME_TAG in tags or STATUS_CODE_TAG in tags:
        # made through OpenTelemetry's API: its scope (encode_spans) and status have fields
        exported_elsewhere = (_SCOPE_TAGS if _SCOPE_NAME_TAG in tags else frozenset()) | (
            _STATUS_TAGS if STATUS_CODE_TAG in tags else frozenset()
        )
        attributes = [item for item in attributes if item[0] not in exported_elsewhere]
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
        if value.__class__ is not str:
            if isinstance(value, ExceptionNote):
                _exception_event(out, mono + offset, value)
                continue
            if isinstance(value, LinkNote):
                _link(out, value)
                continue
        if isinstance(value, EventNote):
            event = out.events.add(name=safe_text(value.name))
            event.attributes.extend(_attributes(value.attributes.items()))
        else:
            event = out.events.add(name=safe_text(value))
        event.time_unix_nano = _unix_nano(mono + offset)
        if duration is not None:
            event.attributes.append(KeyValue(key="duration_us", value=_any_value(duration)))
    if span.error or "error" in tags:  # what Zipkin shows as an error, whatever the tag's value
        out.status.code = Status.STATUS_CODE_ERROR
        message = tag_text(tags["error"]) if "error" in tags else ""
        if message != "true":  # the bare flag Zipkin writes for a failure without a message
            out.status.message = message
    elif tags.get(STATUS_CODE_TAG) == "OK":  # set through the OpenTelemetry API
        out.status.code = Status.STATUS_CODE_OK
    return out


def _link(out: OtlpSpan, note: LinkNote) -> None:
    """An OpenTelemetry span link, from the note that keeps it."""
    context = note.context
    link = out.links.add(
        trace_id=context.trace_id.to_bytes(16, "big"), span_id=context.span_id.to_bytes(8, "big")
    )
    members = context.extra.get(TRACESTATE) if context.extra else None
    if members:
        link.trace_state = format_tracestate(members)
    if note.attributes:
        link.attributes.extend(_attributes(note.attributes.items()))


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
                ("exception.type", safe_text(note.qualified_type)),
                ("exception.message", safe_text(note.message)),
                ("exception.stacktrace", safe_text(stacktrace(note))),
            )
        )
    )
    if note.attributes:
        event.attributes.extend(
            _attributes(item for item in note.attributes.items() if item[0] not in _EXCEPTION_KEYS)
        )


_EXCEPTION_KEYS = frozenset(("exception.type", "exception.message", "exception.stacktrace"))


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
    lines.append(f"{exception_text(note.qualified_type, note.message)}\n")
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
    by_scope: dict[tuple[str, str, str], ScopeSpans] = {}
    for span in spans:
        service = safe_text(span.service_name) or "unknown_service"
        resource = by_service.get(service)
        if resource is None:
            resource = by_service[service] = ResourceSpans()
            resource.resource.attributes.append(
                KeyValue(key="service.name", value=AnyValue(string_value=service))
            )
        tags = span.tags
        name = tags.get(_SCOPE_NAME_TAG)
        if name is None:
            key = (service, SCOPE_NAME, __version__)
        else:
            version = tags.get(_SCOPE_VERSION_TAG)
            key = (service, safe_text(tag_text(name)), safe_text(tag_text(version or "")))
        scope = by_scope.get(key)
        if scope is None:
            scope = by_scope[key] = resource.scope_spans.add()
            scope.scope.name, scope.scope.version = key[1], key[2]
        scope.spans.append(_otlp_span(span))
    request = ExportTraceServiceRequest(resource_spans=list(by_service.values()))
    return bytes(request.SerializeToString())


# -- decoding ---------------------------------------------------------------------------------

_KIND_NAMES = {2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
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


def _plain_value(value: Any) -> Any:
    """An ``AnyValue`` as a plain Python value."""
    field = value.WhichOneof("value")
    if field is None:
        return None
    if field == "array_value":
        return [_plain_value(v) for v in value.array_value.values]
    if field == "kvlist_value":
        return {kv.key: _plain_value(kv.value) for kv in value.kvlist_value.values}
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


def _plain_attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: _plain_value(kv.value) for kv in key_values}


def _hex(raw: bytes, size: int, field: str, where: str) -> str | None:
    if not raw:
        return None
    if len(raw) != size:
        raise DecodeError(f"{where}: {field} must be {size} bytes, not {len(raw)}")
    if not any(raw):
        raise DecodeError(f"{where}: {field} must not be all zeros")
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
    span: Any, service: str, resource_tags: dict[str, str] | None, scope: Any, where: str
) -> SpanDict:
    """One span; ``resource_tags`` None: the request's bound on copies was reached, and the
    span gets neither them nor its scope's tags, but the tag :data:`UNCOPIED_TAG`."""
    trace_id = _hex(span.trace_id, 16, "traceId", where)
    span_id = _hex(span.span_id, 8, "spanId", where)
    if trace_id is None or span_id is None:
        raise DecodeError(f"{where}: traceId and spanId are required")
    # eight zero bytes are the invalid span id, which some SDKs' exporters sent as the parent
    # of a root span: no parent, as the OpenTelemetry Collector reads it
    parent = span.parent_span_id
    zero = len(parent) == 8 and not any(parent)
    parent_id = None if zero else _hex(parent, 8, "parentSpanId", where)
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    timestamp = duration = 0
    if start:
        timestamp = (start + 500) // 1000
        if end:
            if end < start:
                raise DecodeError(f"{where}: endTimeUnixNano is before startTimeUnixNano")
            duration = max(1, (end - start + 500) // 1000)
    attributes = _plain_attributes(span.attributes)
    tags = {UNCOPIED_TAG: _UNCOPIED} if resource_tags is None else dict(resource_tags)
    tags.update((key, _text(value)) for key, value in attributes.items())
    annotations = []
    for event in span.events:
        event_attributes = _plain_attributes(event.attributes)
        if event.name == "exception":
            value = _exception_note(event_attributes, tags)
        elif event_attributes:
            value = json.dumps({event.name: event_attributes}, sort_keys=True, ensure_ascii=False)
        else:
            value = event.name
        annotations.append(((event.time_unix_nano + 500) // 1000, value))
    for link in span.links:
        # A link is kept as a note, never the reason a span (and its request) is refused: its
        # ids may be all zeros (the SDK sends a link to an invalid context that has attributes);
        # ids of the wrong length are no link at all.
        if len(link.trace_id) == 16 and len(link.span_id) == 8:
            attributes = _plain_attributes(link.attributes)
            text = LinkNote.text(link.trace_id.hex(), link.span_id.hex(), attributes)
            annotations.append((timestamp, text))
    if scope is not None and scope.name and resource_tags is not None:
        tags[_SCOPE_NAME_TAG] = scope.name
        if scope.version:
            tags[_SCOPE_VERSION_TAG] = scope.version
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
    return span_dict(
        trace_id,
        span_id,
        parent_id=parent_id,
        kind=_KIND_NAMES.get(span.kind),
        name=span.name,
        timestamp=timestamp,
        duration=duration,
        local_endpoint={"serviceName": service},
        remote_endpoint=_remote_endpoint(attributes),
        annotations=annotations,
        tags=tags,
    )


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


def _stored_length(text: str) -> int:
    """Bytes ``text`` takes in a stored span: UTF-8, with JSON's escapes (a control character
    takes six)."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def _copied_size(tags: dict[str, str]) -> int:
    """Bytes that copying a resource's ``tags`` into one more span adds."""
    size = sum(_stored_length(key) + _stored_length(value) for key, value in tags.items())
    return size + _COPIED_TAG_COST * len(tags)


def _scope_size(scope: Any) -> int:
    """Bytes that copying ``scope`` (its name and version tags) into one more span adds."""
    if scope is None or not scope.name:
        return 0
    return _stored_length(scope.name) + _stored_length(scope.version) + 2 * _COPIED_TAG_COST


#: The text of UNCOPIED_TAG.
_UNCOPIED = (
    "the resource and scope attributes were not copied into this span: the request's copies of"
    " them passed the collector's bound; send fewer spans per request"
)


def request_spans(
    request: ExportTraceServiceRequest, max_copied: int | None = None
) -> list[SpanDict]:
    """The spans of a parsed ``ExportTraceServiceRequest`` as normalized span dicts.

    Each span gets its resource's attributes and its scope as tags, as Zipkin's model has it:
    a small request of many spans under large attributes could so decode to gigabytes. With
    ``max_copied``, the copies stop at that many bytes (as stored JSON): the spans past it keep
    their own fields and service, and the tag :data:`UNCOPIED_TAG` instead.

    Raises :class:`DecodeError` naming the span at fault (bad id lengths, zero ids).
    """
    spans: list[SpanDict] = []
    room = max_copied
    for r, resource_spans in enumerate(request.resource_spans):
        resource = _plain_attributes(resource_spans.resource.attributes)
        service = _text(resource.pop("service.name", None)).lower() or "unknown_service"
        resource_tags = {key: _text(value) for key, value in resource.items()}
        resource_size = None if room is None else _copied_size(resource_tags)
        for s, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope if scope_spans.HasField("scope") else None
            copies = len(scope_spans.spans)
            if room is not None and resource_size is not None:
                size = resource_size + _scope_size(scope)
                if size:
                    copies = min(copies, room // size)
                    room -= copies * size
            for i, span in enumerate(scope_spans.spans):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                shared = resource_tags if i < copies else None
                spans.append(_span(span, service, shared, scope, where))
    return spans


def decode_spans(data: bytes, max_copied: int | None = None) -> list[SpanDict]:
    """Decode a binary-protobuf OTLP/HTTP trace request body into normalized span dicts.

    ``max_copied``: see :func:`request_spans`.

    >>> decode_spans(b"")
    []
    """
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (ProtobufDecodeError, ValueError, RecursionError) as error:
        raise DecodeError(f"body is not a valid OTLP ExportTraceServiceRequest: {error}") from None
    return request_spans(request, max_copied)


_ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}
_HEX = re.compile("[0-9a-fA-F]*")


def _unicode(text: str, path: str) -> None:
    """Refuse text protobuf cannot hold: a lone surrogate (``"\\ud800"`` in JSON) is not UTF-8.

    Left in, it makes protobuf's C parser fail with SystemError instead of a parse error.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise DecodeError(
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
                    # bytes.fromhex alone skips whitespace: "\r" would read as no id at all
                    if not _HEX.fullmatch(value):
                        raise ValueError(value)
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise DecodeError(f"{path}.{key} must be hex, not {value[:40]!r}") from None
                if raw and len(raw) != _ID_FIELDS[key]:
                    raise DecodeError(f"{path}.{key} must be {_ID_FIELDS[key] * 2} hex characters")
                node[key] = base64.b64encode(raw).decode("ascii")
            else:
                _prepare(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _prepare(item, f"{path}[{index}]")
    elif isinstance(node, str):
        _unicode(node, path)
    return node


def decode_json_spans(data: bytes, max_copied: int | None = None) -> list[SpanDict]:
    """Decode an OTLP/HTTP JSON trace request body (hex ids, as OTLP/JSON specifies).

    ``max_copied``: see :func:`request_spans`.

    >>> decode_json_spans(b'{"resourceSpans": []}')
    []
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise DecodeError(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise DecodeError("body must be a JSON object with resourceSpans")
    try:
        _prepare(document, "body")
    except RecursionError:
        raise DecodeError("body is nested too deeply") from None
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise DecodeError(f"body is not a valid OTLP JSON request: {error}") from None
    return request_spans(request, max_copied)


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
    partial = ExportTracePartialSuccess(error_message=warning)
    return bytes(ExportTraceServiceResponse(partial_success=partial).SerializeToString())
