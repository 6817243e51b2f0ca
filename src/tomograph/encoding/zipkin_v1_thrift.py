"""Zipkin v1 spans in Thrift's binary protocol: what Zipkin took through Scribe and Kafka.

A span becomes the v1 ``Span`` struct of Zipkin's ``zipkinCore.thrift``: the kind turns into
the classic core annotations (``cs``/``cr`` for a client, ``sr``/``ss`` for a server, ``ms``/
``mr`` for messaging), tags into string binary annotations, the remote endpoint into an address
annotation (``sa``, ``ca`` or ``ma``), a local span without notes into an ``lc`` annotation,
and a 128-bit trace id into ``trace_id`` (low 64 bits) plus ``trace_id_high``. A shared server
span (one that joined its client's span id) reports no ``timestamp``/``duration``: in v1 the
client owns them.

:func:`decode_span` reads one span back field by field (bounds-checked, for tests and tools);
:func:`decode_spans` reads a Thrift ``list<Span>``, the body Zipkin's server takes on
``POST /api/v1/spans`` as ``application/x-thrift``, into v2 span dicts converted by Zipkin's rules
(see :mod:`tomograph.encoding.zipkin_v1`):

>>> import tomograph
>>> from tomograph.reporting.memory import MemoryBackend
>>> memory = MemoryBackend()
>>> with tomograph.Tracer('shop', backends=[memory]).span('charge', kind='client') as s:
...     s.tag('amount', 12)
>>> span = decode_span(encode_span(memory.spans[0]))
>>> [a['value'] for a in span['annotations']], span['binary_annotations'][0]['key']
(['cs', 'cr'], 'amount')
>>> [(v2['kind'], v2['localEndpoint']) for v2 in decode_spans(encode_list(memory.spans))]
[('CLIENT', {'serviceName': 'shop'})]
"""

from __future__ import annotations

import base64
import ipaddress
import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tomograph._cache import memoize
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.values import safe_text, tag_text
from tomograph.encoding.zipkin_v1 import (
    ADDRESS_KEYS,
    V1Annotation,
    V1BinaryAnnotation,
    V1Span,
    normalize_endpoint,
    normalize_spans,
)
from tomograph.model import Endpoint, SpanKind

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = [
    "ANNOTATION_TYPES",
    "CONTENT_TYPE",
    "decode_span",
    "decode_spans",
    "encode_span",
    "encode_list",
    "encode_spans",
    "parse_spans",
]

CONTENT_TYPE = "application/x-thrift"

# Thrift binary protocol type ids.
_STOP, _BOOL, _BYTE, _DOUBLE, _I16, _I32, _I64, _STRING, _STRUCT, _MAP, _SET, _LIST = (
    0, 2, 3, 4, 6, 8, 10, 11, 12, 13, 14, 15,
)  # fmt: skip

#: Zipkin's ``AnnotationType`` enum.
ANNOTATION_TYPES = {"BOOL": 0, "BYTES": 1, "I16": 2, "I32": 3, "I64": 4, "DOUBLE": 5, "STRING": 6}
_STRING_TYPE = ANNOTATION_TYPES["STRING"]
_BOOL_TYPE = ANNOTATION_TYPES["BOOL"]

_MASK64 = (1 << 64) - 1
_CORE = {
    SpanKind.CLIENT: ("cs", "cr", "sa"),
    SpanKind.SERVER: ("sr", "ss", "ca"),
    SpanKind.PRODUCER: ("ms", None, "ma"),
    SpanKind.CONSUMER: ("mr", None, "ma"),
}

_I16_S = struct.Struct(">h")
_I32_S = struct.Struct(">i")
_U16_S = struct.Struct(">H")
_U32_S = struct.Struct(">I")
_U64_S = struct.Struct(">Q")
_DOUBLE_S = struct.Struct(">d")


# -- encoding ---------------------------------------------------------------------------------


def _field(out: bytearray, kind: int, field_id: int) -> None:
    out.append(kind)
    out += _I16_S.pack(field_id)


def _string(out: bytearray, value: bytes) -> None:
    out += _I32_S.pack(len(value))
    out += value


def _new_endpoint_bytes(endpoint: Endpoint) -> bytes:
    """An Endpoint struct; cached, as every annotation of a span repeats its endpoint."""
    out = bytearray()
    ipv4 = 0
    if endpoint.ipv4:
        try:
            ipv4 = int(ipaddress.IPv4Address(str(endpoint.ipv4)))
        except ValueError:
            ipv4 = 0
    port = endpoint.port
    _field(out, _I32, 1)
    out += _U32_S.pack(ipv4)  # the same four bytes as Thrift's signed i32
    _field(out, _I16, 2)
    out += _U16_S.pack(port if port.__class__ is int and 0 < port <= 0xFFFF else 0)
    _field(out, _STRING, 3)
    _string(out, safe_text(endpoint.service_name).encode())
    if endpoint.ipv6:
        try:
            packed = ipaddress.IPv6Address(str(endpoint.ipv6)).packed
        except ValueError:
            packed = b""
        if packed:
            _field(out, _STRING, 4)
            _string(out, packed)
    out.append(_STOP)
    return bytes(out)


_endpoint_bytes = memoize(_new_endpoint_bytes, 1024)


def _header(kind: int, field_id: int) -> bytes:
    return bytes((kind,)) + _I16_S.pack(field_id)


# Field headers, written once: a span repeats them many times.
_ANNOTATION_TIMESTAMP = _header(_I64, 1)
_ANNOTATION_VALUE = _header(_STRING, 2)
_ANNOTATION_HOST = _header(_STRUCT, 3)
_BINARY_KEY = _header(_STRING, 1)
_BINARY_VALUE = _header(_STRING, 2)
_BINARY_TYPE = _header(_I32, 3)
_BINARY_HOST = _header(_STRUCT, 4)
_STOP_BYTE = b"\x00"


def _annotation(out: bytearray, timestamp: int, value: str, host: bytes | None) -> None:
    encoded = safe_text(value).encode()
    out += _ANNOTATION_TIMESTAMP
    out += _U64_S.pack(timestamp & _MASK64)
    out += _ANNOTATION_VALUE
    out += _I32_S.pack(len(encoded))
    out += encoded
    if host is not None:
        out += _ANNOTATION_HOST
        out += host
    out += _STOP_BYTE


def _binary_annotation(
    out: bytearray, key: str, value: bytes, kind: int, host: bytes | None
) -> None:
    encoded = safe_text(key).encode()
    out += _BINARY_KEY
    out += _I32_S.pack(len(encoded))
    out += encoded
    out += _BINARY_VALUE
    out += _I32_S.pack(len(value))
    out += value
    out += _BINARY_TYPE
    out += _I32_S.pack(kind)
    if host is not None:
        out += _BINARY_HOST
        out += host
    out += _STOP_BYTE


def _endpoint_of(endpoint: Endpoint | None) -> bytes | None:
    # memoize builds an endpoint with unhashable parts without caching it
    return None if endpoint is None else _endpoint_bytes(endpoint)


def encode_span(span: Span) -> bytes:
    """One finished span as a Thrift binary ``Span`` struct."""
    out = bytearray()
    local = _endpoint_of(span.local_endpoint)
    timestamp = span.timestamp
    duration = span.duration or 1
    trace_id = span.trace_id
    _field(out, _I64, 1)
    out += _U64_S.pack(trace_id & _MASK64)
    _field(out, _STRING, 3)
    _string(out, safe_text(span.name).encode())
    _field(out, _I64, 4)
    out += _U64_S.pack(span.span_id & _MASK64)
    if span.parent_id:
        _field(out, _I64, 5)
        out += _U64_S.pack(span.parent_id & _MASK64)

    annotations: list[tuple[int, str]] = []
    core = _CORE.get(span.kind) if span.kind is not None else None
    if core is not None:
        start, end, _ = core
        annotations.append((timestamp, start))
        if end is not None:
            annotations.append((timestamp + duration, end))
    annotations.extend((note.timestamp, note.value) for note in span.annotations)
    annotations.sort(key=lambda item: item[0])
    _field(out, _LIST, 6)
    out.append(_STRUCT)
    out += _I32_S.pack(len(annotations))
    for when, value in annotations:
        _annotation(out, when, value, local)

    binary: list[tuple[str, bytes, int, bytes | None]] = [
        (key, tag_text(value).encode(), _STRING_TYPE, local) for key, value in span.tags.items()
    ]
    if core is not None and span.remote_endpoint is not None:
        binary.append((core[2], b"\x01", _BOOL_TYPE, _endpoint_of(span.remote_endpoint)))
    if core is None and not annotations:
        # v1 has no kind-less span: a local component annotation carries the endpoint.
        endpoint = span.local_endpoint
        service = safe_text(endpoint.service_name) if endpoint is not None else ""
        binary.append(("lc", service.encode(), _STRING_TYPE, local))
    _field(out, _LIST, 8)
    out.append(_STRUCT)
    out += _I32_S.pack(len(binary))
    for key, payload, kind, host in binary:
        _binary_annotation(out, key, payload, kind, host)

    if span.debug:
        _field(out, _BOOL, 9)
        out.append(1)
    if not span.shared:
        _field(out, _I64, 10)
        out += _U64_S.pack(timestamp & _MASK64)
        _field(out, _I64, 11)
        out += _U64_S.pack(duration & _MASK64)
    high = (trace_id >> 64) & _MASK64
    if high:
        _field(out, _I64, 12)
        out += _U64_S.pack(high)
    out.append(_STOP)
    return bytes(out)


def encode_spans(spans: Iterable[Span]) -> list[bytes]:
    """Each span encoded on its own (Scribe and Kafka carry one span per message)."""
    return [encode_span(span) for span in spans]


def encode_list(spans: Iterable[Span]) -> bytes:
    """Spans as one Thrift ``list<Span>``: the body of ``POST /api/v1/spans``."""
    encoded = encode_spans(spans)
    return bytes((_STRUCT,)) + _I32_S.pack(len(encoded)) + b"".join(encoded)


# -- decoding ---------------------------------------------------------------------------------

_MAX_DEPTH = 8


class _Reader:
    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if size < 0 or end > len(self.data):
            raise DecodeError("truncated Thrift data")
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def value(self, kind: int, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise DecodeError("Thrift data nested too deeply")
        if kind == _BOOL:
            return self.take(1) != b"\x00"
        if kind == _BYTE:
            return self.take(1)[0]
        if kind == _I16:
            return _I16_S.unpack(self.take(2))[0]
        if kind == _I32:
            return _I32_S.unpack(self.take(4))[0]
        if kind in (_I64, _DOUBLE):
            return _U64_S.unpack(self.take(8))[0]
        if kind == _STRING:
            return self.take(_I32_S.unpack(self.take(4))[0])
        if kind == _STRUCT:
            return self.struct(depth + 1)
        if kind in (_LIST, _SET):
            element = self.take(1)[0]
            size = _I32_S.unpack(self.take(4))[0]
            if size < 0 or size > len(self.data) - self.position:
                raise DecodeError("Thrift list longer than the data")
            return [self.value(element, depth + 1) for _ in range(size)]
        if kind == _MAP:
            key_kind, value_kind = self.take(1)[0], self.take(1)[0]
            size = _I32_S.unpack(self.take(4))[0]
            if size < 0 or size > len(self.data) - self.position:
                raise DecodeError("Thrift map longer than the data")
            return [
                (self.value(key_kind, depth + 1), self.value(value_kind, depth + 1))
                for _ in range(size)
            ]
        raise DecodeError(f"unknown Thrift type {kind}")

    def struct(self, depth: int) -> dict[int, Any]:
        fields: dict[int, Any] = {}
        while True:
            kind = self.take(1)[0]
            if kind == _STOP:
                return fields
            field_id = _I16_S.unpack(self.take(2))[0]
            fields[field_id] = self.value(kind, depth)


def _text(raw: Any, what: str) -> str:
    if not isinstance(raw, bytes):
        raise DecodeError(f"{what} is not a string")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not UTF-8") from None


def _decode_endpoint(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DecodeError("endpoint is not a struct")
    endpoint: dict[str, Any] = {
        "service_name": _text(raw.get(3, b""), "service_name"),
        "ipv4": str(ipaddress.IPv4Address(_int(raw.get(1, 0), "ipv4") & 0xFFFFFFFF)),
        "port": _int(raw.get(2, 0), "port") & 0xFFFF,
    }
    if 4 in raw:
        if not isinstance(raw[4], bytes) or len(raw[4]) != 16:
            raise DecodeError("ipv6 must be 16 bytes")
        endpoint["ipv6"] = str(ipaddress.IPv6Address(raw[4]))
    return endpoint


def _structs(raw: Any, what: str) -> list[dict[int, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise DecodeError(f"{what} is not a list of structs")
    return raw


def decode_span(data: bytes) -> dict[str, Any]:
    """A Thrift binary v1 span as a dict (ids as ints, names as in ``zipkinCore.thrift``).

    Raises :class:`~tomograph.encoding.errors.DecodeError` for truncated, trailing or
    ill-typed data.
    """
    reader = _Reader(bytes(data))
    try:
        raw = reader.struct(0)
    except (struct.error, IndexError):
        raise DecodeError("truncated Thrift data") from None
    if reader.position != len(reader.data):
        raise DecodeError("data after the span")
    return _span_fields(raw)


def _span_fields(raw: dict[int, Any]) -> dict[str, Any]:
    for required in (1, 3, 4):
        if required not in raw:
            raise DecodeError(f"span field {required} is missing")
    ints = {1: "trace_id", 4: "id", 5: "parent_id", 10: "timestamp", 11: "duration"}
    for field_id in (*ints, 12):
        if field_id in raw and not isinstance(raw[field_id], int):
            raise DecodeError(f"span field {field_id} is not an integer")
    span: dict[str, Any] = {
        "trace_id": raw[1],
        "name": _text(raw[3], "name"),
        "id": raw[4],
        "parent_id": raw.get(5),
        "annotations": [
            {
                "timestamp": _int(item.get(1), "annotation timestamp"),
                "value": _text(item.get(2), "annotation value"),
                "host": _decode_endpoint(item.get(3)),
            }
            for item in _structs(raw.get(6), "annotations")
        ],
        "binary_annotations": [
            {
                "key": _text(item.get(1), "binary annotation key"),
                "value": _bytes(item.get(2)),
                "annotation_type": _int(item.get(3), "annotation type"),
                "host": _decode_endpoint(item.get(4)),
            }
            for item in _structs(raw.get(8), "binary_annotations")
        ],
        "debug": bool(raw.get(9, False)),
        "timestamp": raw.get(10),
        "duration": raw.get(11),
        "trace_id_high": raw.get(12),
    }
    return span


def _read_list(data: bytes) -> list[dict[int, Any]]:
    """The structs of a Thrift ``list<Span>``: element type, i32 count, then the structs."""
    reader = _Reader(bytes(data))
    try:
        element, size = reader.take(1)[0], _I32_S.unpack(reader.take(4))[0]
    except DecodeError:
        raise DecodeError("body is not a Thrift list: it is shorter than a list header") from None
    if element != _STRUCT:
        raise DecodeError(f"body must be a Thrift list of Span structs, not of type {element}")
    if size < 0 or size > len(reader.data) - reader.position:
        raise DecodeError(f"Thrift list of {size} spans is longer than the body")
    structs = []
    for index in range(size):
        try:
            structs.append(reader.struct(1))
        except (struct.error, IndexError):
            raise DecodeError(f"span {index}: truncated Thrift data") from None
        except DecodeError as error:
            raise DecodeError(f"span {index}: {error}") from None
    if reader.position != len(reader.data):
        raise DecodeError(f"data after the {size} spans of the list")
    return structs


def _signed(value: int) -> int:
    """An i64 read as unsigned, as the signed Java long Zipkin reads."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _endpoint_dict(index: int, where: str, host: dict[str, Any] | None) -> dict[str, Any] | None:
    if host is None:
        return None
    fields = {
        "serviceName": host["service_name"],
        "ipv4": "" if host["ipv4"] == "0.0.0.0" else host["ipv4"],
        "ipv6": "" if host.get("ipv6") in (None, "::") else host["ipv6"],
        "port": host["port"],
    }
    return normalize_endpoint(index, where, fields)


def _binary_text(index: int, where: str, kind: int, value: bytes) -> str:
    """A typed binary annotation value as the text of a v2 tag."""
    sizes = {_BOOL_TYPE: 1, 2: 2, 3: 4, 4: 8, 5: 8}
    if kind in sizes and len(value) != sizes[kind]:
        raise DecodeError(f"span {index}: {where} of type {kind} must be {sizes[kind]} bytes")
    if kind == _STRING_TYPE:
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise DecodeError(f"span {index}: {where} is not UTF-8") from None
    if kind == _BOOL_TYPE:
        return "false" if value == b"\x00" else "true"
    if kind == 1:  # BYTES
        return base64.b64encode(value).decode()
    if kind == 5:  # DOUBLE
        return repr(_DOUBLE_S.unpack(value)[0])
    if kind in sizes:  # I16, I32, I64
        return str(int.from_bytes(value, "big", signed=True))
    raise DecodeError(f"span {index}: {where} has an unknown annotation type {kind}")


def _v1_span(index: int, raw: dict[int, Any]) -> V1Span:
    try:
        fields = _span_fields(raw)
    except DecodeError as error:
        raise DecodeError(f"span {index}: {error}") from None
    low, high = fields["trace_id"], fields["trace_id_high"] or 0
    if not low:
        raise DecodeError(f"span {index}: trace_id must not be zero")
    if not fields["id"]:
        raise DecodeError(f"span {index}: id must not be zero")
    span = V1Span(
        trace_id=f"{high:016x}{low:016x}" if high else f"{low:016x}",
        id=f"{fields['id']:016x}",
        parent_id=f"{fields['parent_id']:016x}" if fields["parent_id"] else None,
        name=fields["name"],
        timestamp=_signed(fields["timestamp"] or 0),
        duration=_signed(fields["duration"] or 0),
        debug=fields["debug"],
    )
    for position, note in enumerate(fields["annotations"]):
        where = f"annotations[{position}]"
        if _signed(note["timestamp"]) < 0:
            raise DecodeError(f"span {index}: {where}.timestamp must not be negative")
        span.annotations.append(
            V1Annotation(
                note["timestamp"],
                note["value"],
                _endpoint_dict(index, f"{where}.host", note["host"]),
            )
        )
    for position, binary in enumerate(fields["binary_annotations"]):
        where = f"binary_annotations[{position}]"
        key, kind, value = binary["key"], binary["annotation_type"], binary["value"]
        endpoint = _endpoint_dict(index, f"{where}.host", binary["host"])
        if key in ADDRESS_KEYS and kind == _BOOL_TYPE:
            # an address flag: true with a host is the address; anything else says nothing
            if value == b"\x01" and endpoint is not None:
                span.binary_annotations.append(V1BinaryAnnotation(key, None, endpoint))
            continue
        text = _binary_text(index, f"{where}.value", kind, value)
        span.binary_annotations.append(V1BinaryAnnotation(key, text, endpoint))
    return span


def parse_spans(data: bytes) -> list[V1Span]:
    """A Thrift ``list<Span>`` (TBinaryProtocol, the body of ``POST /api/v1/spans`` with
    ``application/x-thrift``) as :class:`~tomograph.encoding.zipkin_v1.V1Span` objects.

    Typed binary annotations become text: BOOL ``true``/``false``, the integers and DOUBLE
    their decimal text, BYTES base64 (Zipkin keeps only STRING ones and the address flags).
    Raises :class:`~tomograph.encoding.errors.DecodeError` naming the span index and field.

    >>> parse_spans(b"\\x0c\\x00\\x00\\x00\\x00")
    []
    """
    return [_v1_span(index, raw) for index, raw in enumerate(_read_list(data))]


def decode_spans(data: bytes) -> list[dict[str, Any]]:
    """A Thrift list of v1 spans as normalized v2 span dicts, converted as Zipkin's server
    converts them (see :mod:`tomograph.encoding.zipkin_v1`). Raises ``DecodeError``."""
    return normalize_spans(parse_spans(data))


def _int(raw: Any, what: str) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise DecodeError(f"{what} is not an integer")
    return raw


def _bytes(raw: Any) -> bytes:
    if not isinstance(raw, bytes):
        raise DecodeError("binary annotation value is not binary")
    return raw
