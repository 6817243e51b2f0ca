"""Zipkin v2 proto3 (``zipkin.proto3.ListOfSpans``): encode and decode, no protobuf runtime.

The wire format is written by hand: varints, fixed64 timestamps and length-delimited fields,
ids as raw big-endian bytes (8 or 16 for a trace id, 8 for span and parent ids), IPv4/IPv6 as
4/16 raw bytes. Decoding returns the same normalized dicts as
:func:`tomograph.encoding.zipkin_json.decode_spans`, so one span survives a JSON and a proto
round trip identically.

>>> decode_spans(encode_dicts([{'traceId': '00000000000000ab', 'id': '00000000000000cd'}]))
[{'traceId': '00000000000000ab', 'id': '00000000000000cd'}]
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tomograph._cache import BoundedCache
from tomograph.encoding._zipkin_model import KINDS, MAX_U64, endpoint_fields, note_pairs, show
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.normalize import SpanDict, span_dict
from tomograph.encoding.values import safe_text, tag_text

if TYPE_CHECKING:
    from tomograph.model import Endpoint, SpanKind
    from tomograph.span import Span

__all__ = ["CONTENT_TYPE", "decode_spans", "encode_dicts", "encode_spans"]

CONTENT_TYPE = "application/x-protobuf"

_KIND_NUMBERS = {name: number for number, name in enumerate(KINDS, 1)}
_KIND_NAMES = dict(enumerate(KINDS, 1))
_pack_fixed64 = struct.Struct("<Q").pack
_unpack_fixed64 = struct.Struct("<Q").unpack_from

# -- encoding ---------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Lengths below 128 are one byte: precomputed, they are most of what a span has.
_SMALL = [bytes((n,)) for n in range(128)]


def _length(n: int) -> bytes:
    return _SMALL[n] if n < 128 else _varint(n)


def _text(value: object) -> bytes:
    # proto3 strings must be valid UTF-8: safe_text turns an unpaired surrogate into U+FFFD.
    if value.__class__ is str and value.isascii():
        return value.encode("ascii")
    return safe_text(value).encode("utf-8")


def _field_bytes(tag: bytes, payload: bytes) -> bytes:
    return tag + _length(len(payload)) + payload


def _endpoint_message(fields: dict[str, Any]) -> bytes:
    out = b""
    service = fields.get("serviceName")
    if service:
        out += _field_bytes(b"\x0a", _text(service))
    ipv4 = fields.get("ipv4")
    if ipv4:
        out += b"\x12\x04" + ipaddress.IPv4Address(ipv4).packed
    ipv6 = fields.get("ipv6")
    if ipv6:
        out += b"\x1a\x10" + ipaddress.IPv6Address(ipv6).packed
    port = fields.get("port")
    if port:
        out += b"\x20" + _varint(port)
    return out


def _endpoint_field(tag: bytes, endpoint: Endpoint) -> bytes:
    fields = endpoint_fields(endpoint)
    return _field_bytes(tag, _endpoint_message(fields)) if fields else b""


#: (kind, name, local endpoint, remote endpoint) -> their encoded fields, built once each.
_static_fields: BoundedCache[tuple[Any, ...], bytes] = BoundedCache(4096)
#: span name -> (kind, local, remote, fields) of the last span with that name (identity check).
_static_by_name: BoundedCache[str, tuple[Any, Any, Any, bytes]] = BoundedCache(4096)
#: tag key -> its encoded map-entry key field.
_tag_key_fields: BoundedCache[str, bytes] = BoundedCache(4096)
#: Names and tag keys longer than this are encoded every time, not cached: a cache bounded by
#: its number of entries must not hold 4096 copies of a 10 MB name.
_CACHED_LENGTH = 1024


def _static_part(
    kind: SpanKind | None, name: str, local: Endpoint | None, remote: Endpoint | None
) -> bytes:
    fields = _KIND_FIELDS[kind.value] if kind is not None else b""
    if name:
        fields += _field_bytes(b"\x2a", _text(name))
    if local is not None:
        fields += _endpoint_field(b"\x42", local)
    if remote is not None:
        fields += _endpoint_field(b"\x4a", remote)
    return fields


def _static_for(span: Span, name: str) -> bytes:
    key = (span.kind, name, span.local_endpoint, span.remote_endpoint)
    try:
        fields = _static_fields.get(key)
    except TypeError:  # an endpoint holding something unhashable: not cached
        return _static_part(*key)
    if fields is None:
        fields = _static_part(*key)
        if len(name) <= _CACHED_LENGTH:
            _static_fields[key] = fields
    if len(name) <= _CACHED_LENGTH:
        _static_by_name[name] = (span.kind, span.local_endpoint, span.remote_endpoint, fields)
    return fields


def _tag_key_field(key: str) -> bytes:
    text = _text(key)
    field = _field_bytes(b"\x0a", text) if text else b""
    if len(field) <= _CACHED_LENGTH:
        _tag_key_fields[key] = field
    return field


def _span_message(span: Span) -> bytes:
    trace_id = span.trace_id
    start_ns = span.start_ns
    name = span.name
    if name.__class__ is not str:
        name = safe_text(name)
    hit = _static_by_name.get(name)
    if (
        hit is not None
        and hit[0] is span.kind
        and hit[1] is span.local_endpoint
        and hit[2] is span.remote_endpoint
    ):
        static = hit[3]
    else:
        static = _static_for(span, name)
    duration = -((start_ns - span.end_ns) // 1000)
    parts = [
        b"\x0a\x08" + trace_id.to_bytes(8, "big")
        if trace_id <= MAX_U64
        else b"\x0a\x10" + trace_id.to_bytes(16, "big"),
        b"\x12\x08" + span.parent_id.to_bytes(8, "big") if span.parent_id else b"",
        b"\x1a\x08" + span.span_id.to_bytes(8, "big"),
        static,
        b"\x31" + _pack_fixed64((start_ns + span.epoch_offset_ns) // 1000),
        b"\x38" + (_SMALL[duration] if 0 < duration < 128 else _varint(max(1, duration))),
    ]
    notes = note_pairs(span.notes_raw, span.epoch_offset_ns) if span.notes_raw else ()
    for timestamp, value in notes:
        note = b"\x09" + _pack_fixed64(timestamp)
        if value:
            note += _field_bytes(b"\x12", _text(value))
        parts.append(_field_bytes(b"\x52", note))
    tags = span.tags
    if tags:
        key_fields = _tag_key_fields
        for key, tag_value in tags.items():
            entry = key_fields.get(key)
            if entry is None:
                entry = _tag_key_field(key)
            text = tag_value if tag_value.__class__ is str else tag_text(tag_value)
            if text:
                entry += _field_bytes(b"\x12", _text(text))
            parts.append(b"\x5a" + _length(len(entry)) + entry)
        if span.error and "error" not in tags:
            parts.append(_tag_entry("error", "true"))
    elif span.error:
        parts.append(_tag_entry("error", "true"))
    if span.debug:
        parts.append(b"\x60\x01")
    if span.shared:
        parts.append(b"\x68\x01")
    return b"".join(parts)


_KIND_FIELDS = {name: b"\x20" + bytes((number,)) for name, number in _KIND_NUMBERS.items()}


def _tag_entry(key: str, value: str) -> bytes:
    entry = b""
    if key:
        entry = _field_bytes(b"\x0a", _text(key))
    if value:
        entry += _field_bytes(b"\x12", _text(value))
    return _field_bytes(b"\x5a", entry)


def _list_of_spans(messages: Iterable[bytes]) -> bytes:
    return b"".join([b"\x0a" + _length(len(message)) + message for message in messages])


def encode_spans(spans: Iterable[Span]) -> bytes:
    """Finished spans as a serialized ``zipkin.proto3.ListOfSpans``.

    >>> encode_spans([])
    b''
    """
    return _list_of_spans(_span_message(span) for span in spans)


def _dict_message(span: dict[str, Any]) -> bytes:
    trace_id = bytes.fromhex(span["traceId"])
    parts = [_field_bytes(b"\x0a", trace_id)]
    if span.get("parentId"):
        parts.append(b"\x12\x08" + bytes.fromhex(span["parentId"]))
    parts.append(b"\x1a\x08" + bytes.fromhex(span["id"]))
    if span.get("kind"):
        parts.append(_KIND_FIELDS[span["kind"]])
    if span.get("name"):
        parts.append(_field_bytes(b"\x2a", _text(span["name"])))
    # Endpoints before the times, as encode_spans writes them (any order is valid protobuf).
    for tag, key in ((b"\x42", "localEndpoint"), (b"\x4a", "remoteEndpoint")):
        if span.get(key):
            parts.append(_field_bytes(tag, _endpoint_message(span[key])))
    if span.get("timestamp"):
        parts.append(b"\x31" + _pack_fixed64(span["timestamp"]))
    if span.get("duration"):
        parts.append(b"\x38" + _varint(span["duration"]))
    for annotation in span.get("annotations") or ():
        note = b"\x09" + _pack_fixed64(annotation["timestamp"])
        if annotation["value"]:
            note += _field_bytes(b"\x12", _text(annotation["value"]))
        parts.append(_field_bytes(b"\x52", note))
    for key, value in (span.get("tags") or {}).items():
        parts.append(_tag_entry(key, value))
    if span.get("debug"):
        parts.append(b"\x60\x01")
    if span.get("shared"):
        parts.append(b"\x68\x01")
    return b"".join(parts)


def encode_dicts(spans: list[dict[str, Any]]) -> bytes:
    """Spans in the normalized dict shape (see :func:`decode_spans`) as a ``ListOfSpans``.

    >>> len(encode_dicts([{'traceId': '0000000000000001', 'id': '0000000000000002'}]))
    22
    """
    return _list_of_spans(_dict_message(span) for span in spans)


# -- decoding ---------------------------------------------------------------------------------

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class _Reader:
    """Reads protobuf wire primitives from ``data[pos:end]``, raising DecodeError on overrun."""

    __slots__ = ("data", "end", "pos", "where")

    def __init__(self, data: bytes, pos: int, end: int, where: str) -> None:
        self.data = data
        self.pos = pos
        self.end = end
        self.where = where

    def more(self) -> bool:
        return self.pos < self.end

    def varint(self) -> int:
        data, pos, end = self.data, self.pos, self.end
        result = shift = 0
        while True:
            if pos >= end:
                raise DecodeError(f"{self.where}: truncated varint")
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift >= 70:
                raise DecodeError(f"{self.where}: varint longer than 10 bytes")
        self.pos = pos
        return result & MAX_U64

    def key(self) -> tuple[int, int]:
        key = self.varint()
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise DecodeError(f"{self.where}: field number 0 is invalid")
        return field, wire_type

    def fixed64(self) -> int:
        if self.pos + 8 > self.end:
            raise DecodeError(f"{self.where}: truncated fixed64")
        (value,) = _unpack_fixed64(self.data, self.pos)
        self.pos += 8
        return int(value)

    def length_delimited(self) -> tuple[int, int]:
        """The (start, end) of the next length-delimited value; moves past it."""
        length = self.varint()
        start = self.pos
        if length > self.end - start:
            raise DecodeError(
                f"{self.where}: length {length} runs past the end ({self.end - start} bytes left)"
            )
        self.pos = start + length
        return start, start + length

    def skip(self, field: int, wire_type: int) -> None:
        if wire_type == _VARINT:
            self.varint()
        elif wire_type == _FIXED64:
            self.fixed64()
        elif wire_type == _LENGTH:
            self.length_delimited()
        elif wire_type == _FIXED32:
            if self.pos + 4 > self.end:
                raise DecodeError(f"{self.where}: truncated fixed32")
            self.pos += 4
        else:
            raise DecodeError(f"{self.where}: field {field} has unsupported wire type {wire_type}")

    def text(self, field: str) -> str:
        start, end = self.length_delimited()
        try:
            return self.data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"{self.where}: {field} is not valid UTF-8") from None

    def raw(self) -> bytes:
        start, end = self.length_delimited()
        return self.data[start:end]


def _expect(reader: _Reader, name: str, wire_type: int, want: int) -> None:
    if wire_type != want:
        raise DecodeError(f"{reader.where}: {name} has wire type {wire_type}, expected {want}")


def _decode_endpoint(reader: _Reader, name: str) -> dict[str, Any]:
    start, end = reader.length_delimited()
    inner = _Reader(reader.data, start, end, f"{reader.where}: {name}")
    fields: dict[str, Any] = {}
    while inner.more():
        field, wire_type = inner.key()
        if field == 1:
            _expect(inner, "serviceName", wire_type, _LENGTH)
            fields["serviceName"] = inner.text("serviceName")
        elif field == 2:
            _expect(inner, "ipv4", wire_type, _LENGTH)
            packed = inner.raw()
            if len(packed) not in (0, 4):
                raise DecodeError(f"{inner.where}: ipv4 must be 4 bytes, not {len(packed)}")
            fields["ipv4"] = str(ipaddress.IPv4Address(packed)) if packed else ""
        elif field == 3:
            _expect(inner, "ipv6", wire_type, _LENGTH)
            packed = inner.raw()
            if len(packed) not in (0, 16):
                raise DecodeError(f"{inner.where}: ipv6 must be 16 bytes, not {len(packed)}")
            fields["ipv6"] = ipaddress.IPv6Address(packed).compressed if packed else ""
        elif field == 4:
            _expect(inner, "port", wire_type, _VARINT)
            port = inner.varint()
            if port > 65535:
                raise DecodeError(f"{inner.where}: port must be 0 to 65535, not {port}")
            fields["port"] = port
        else:
            inner.skip(field, wire_type)
    return fields  # empty values are proto3 defaults, i.e. absent: span_dict leaves them out


def _decode_annotation(reader: _Reader, index: int) -> tuple[int, str]:
    start, end = reader.length_delimited()
    inner = _Reader(reader.data, start, end, f"{reader.where}: annotations[{index}]")
    timestamp, value = 0, ""
    while inner.more():
        field, wire_type = inner.key()
        if field == 1:
            _expect(inner, "timestamp", wire_type, _FIXED64)
            timestamp = inner.fixed64()
        elif field == 2:
            _expect(inner, "value", wire_type, _LENGTH)
            value = inner.text("value")
        else:
            inner.skip(field, wire_type)
    return timestamp, value


def _decode_tag(reader: _Reader) -> tuple[str, str]:
    start, end = reader.length_delimited()
    inner = _Reader(reader.data, start, end, f"{reader.where}: tags")
    key = value = ""
    while inner.more():
        field, wire_type = inner.key()
        if field == 1:
            _expect(inner, "tag key", wire_type, _LENGTH)
            key = inner.text("tag key")
        elif field == 2:
            _expect(inner, "tag value", wire_type, _LENGTH)
            value = inner.text("tag value")
        else:
            inner.skip(field, wire_type)
    return key, value


def _decode_span(data: bytes, start: int, end: int, index: int) -> dict[str, Any]:
    reader = _Reader(data, start, end, f"span {index}")
    fields: dict[str, Any] = {}
    annotations: list[tuple[int, str]] = []
    tags: dict[str, str] = {}
    while reader.more():
        field, wire_type = reader.key()
        if field in (1, 2, 3):
            name = ("traceId", "parentId", "id")[field - 1]
            _expect(reader, name, wire_type, _LENGTH)
            fields[name] = reader.raw()
        elif field == 4:
            _expect(reader, "kind", wire_type, _VARINT)
            fields["kind"] = reader.varint()
        elif field == 5:
            _expect(reader, "name", wire_type, _LENGTH)
            fields["name"] = reader.text("name")
        elif field == 6:
            _expect(reader, "timestamp", wire_type, _FIXED64)
            fields["timestamp"] = reader.fixed64()
        elif field == 7:
            _expect(reader, "duration", wire_type, _VARINT)
            fields["duration"] = reader.varint()
        elif field in (8, 9):
            name = "localEndpoint" if field == 8 else "remoteEndpoint"
            _expect(reader, name, wire_type, _LENGTH)
            fields[name] = _decode_endpoint(reader, name)
        elif field == 10:
            _expect(reader, "annotations", wire_type, _LENGTH)
            annotations.append(_decode_annotation(reader, len(annotations)))
        elif field == 11:
            _expect(reader, "tags", wire_type, _LENGTH)
            key, value = _decode_tag(reader)
            tags[key] = value
        elif field in (12, 13):
            name = "debug" if field == 12 else "shared"
            _expect(reader, name, wire_type, _VARINT)
            fields[name] = reader.varint() != 0
        else:
            reader.skip(field, wire_type)
    return _normalize(index, fields, annotations, tags)


def _normalize(
    index: int,
    fields: dict[str, Any],
    annotations: list[tuple[int, str]],
    tags: dict[str, str],
) -> SpanDict:
    trace_id = fields.get("traceId", b"")
    if len(trace_id) not in (8, 16):
        raise DecodeError(f"span {index}: traceId must be 8 or 16 bytes, not {len(trace_id)}")
    if not any(trace_id):
        raise DecodeError(f"span {index}: traceId must not be all zeros")
    span_id = fields.get("id", b"")
    if len(span_id) != 8:
        raise DecodeError(f"span {index}: id must be 8 bytes, not {len(span_id)}")
    if not any(span_id):
        raise DecodeError(f"span {index}: id must not be all zeros")
    parent_id = fields.get("parentId", b"")
    if parent_id and len(parent_id) != 8:
        raise DecodeError(f"span {index}: parentId must be 8 bytes, not {len(parent_id)}")
    kind = fields.get("kind")
    if kind and kind not in _KIND_NAMES:
        raise DecodeError(f"span {index}: kind {show(kind)} is not a known span kind")
    return span_dict(
        trace_id.hex(),
        span_id.hex(),
        parent_id=parent_id.hex(),
        kind=_KIND_NAMES[kind] if kind else None,
        name=fields.get("name", ""),
        timestamp=fields.get("timestamp", 0),
        duration=fields.get("duration", 0),
        debug=fields.get("debug", False),
        shared=fields.get("shared", False),
        local_endpoint=fields.get("localEndpoint"),
        remote_endpoint=fields.get("remoteEndpoint"),
        annotations=annotations,
        tags=tags,
    )


def decode_spans(data: bytes) -> list[SpanDict]:
    """Parse and validate a serialized ``ListOfSpans`` into normalized span dicts.

    Raises :class:`DecodeError` for truncated varints or fields, wrong wire types, bad id
    lengths, lengths that run past the end and invalid UTF-8, naming the span index and field.
    Unknown fields are skipped, as proto3 requires.

    >>> decode_spans(b'')
    []
    """
    data = bytes(data)
    reader = _Reader(data, 0, len(data), "body")
    spans: list[SpanDict] = []
    while reader.more():
        field, wire_type = reader.key()
        if field == 1:
            _expect(reader, "spans", wire_type, _LENGTH)
            start, end = reader.length_delimited()
            spans.append(_decode_span(data, start, end, len(spans)))
        else:
            reader.skip(field, wire_type)
    return spans
