"""Zipkin v1 JSON: the body of ``POST /api/v1/spans`` that zipkin-js and older tracers send.

A v1 span is ``{traceId, id, parentId, name, timestamp, duration, debug, annotations: [{timestamp,
value, endpoint}], binaryAnnotations: [{key, value, endpoint}]}``. :func:`parse_spans` reads and
validates that into :class:`~tomograph.encoding.zipkin_v1.V1Span`; :func:`decode_spans` goes on
to the normalized v2 span dicts that Zipkin's server would store (see
:mod:`tomograph.encoding.zipkin_v1` for the conversion rules); :func:`encode_spans` writes v1
spans back.

Binary annotation values: a string is a tag; ``true`` under ``ca``, ``sa`` or ``ma`` with an
endpoint is an address. Zipkin drops other booleans and numbers; they are kept here as tags in
their text (``"true"``, ``"42"``), the way Zipkin's v2 tags hold them. A ``null`` value, or
``false`` under an address key, says nothing and is dropped, as Zipkin does.

>>> body = b'''[{"traceId": "000000000000000a", "id": "000000000000000b", "name": "get",
...   "annotations": [{"timestamp": 10, "value": "cs", "endpoint": {"serviceName": "web"}},
...                   {"timestamp": 30, "value": "cr", "endpoint": {"serviceName": "web"}}]}]'''
>>> span, = decode_spans(body)
>>> span['kind'], span['localEndpoint'], span['timestamp'], span['duration']
('CLIENT', {'serviceName': 'web'}, 10, 20)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tomograph.encoding._zipkin_model import show
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.zipkin_json import load_span_list
from tomograph.encoding.zipkin_v1 import (
    ADDRESS_KEYS,
    EndpointDict,
    V1Annotation,
    V1BinaryAnnotation,
    V1Span,
    normalize_endpoint,
    normalize_spans,
)

__all__ = ["CONTENT_TYPE", "decode_spans", "encode_spans", "parse_spans", "v1_marker"]

CONTENT_TYPE = "application/json"

_HEX = frozenset("0123456789abcdef")
_MIN_I64, _MAX_U64 = -(1 << 63), (1 << 64) - 1
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _hex_id(index: int, field: str, value: object, widths: tuple[int, ...]) -> str:
    text = value.lower() if isinstance(value, str) else None
    if text is None or len(text) not in widths or not _HEX.issuperset(text):
        want = " or ".join(str(width) for width in widths)
        raise DecodeError(f"span {index}: {field} must be {want} hex characters, not {show(value)}")
    if not text.strip("0"):
        raise DecodeError(f"span {index}: {field} must not be all zeros")
    return text


def _int(index: int, field: str, value: object) -> int:
    # v1 times are Java longs: negative ones are read, then count as absent (as in Zipkin)
    if value.__class__ is not int or not _MIN_I64 <= value <= _MAX_U64:
        raise DecodeError(f"span {index}: {field} must be an integer (epoch µs), not {show(value)}")
    return value


def _text(index: int, field: str, value: object) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"span {index}: {field} must be a string, not {show(value)}")
    return value


def _endpoint(index: int, field: str, value: object) -> EndpointDict | None:
    if value is None:
        return None
    if isinstance(value, dict):
        port = value.get("port")
        if port.__class__ is int and port < 0:
            # old tracers wrote ports above 32767 as Thrift's signed i16; Zipkin drops them
            value = {key: item for key, item in value.items() if key != "port"}
    return normalize_endpoint(index, field, value)


def _list(index: int, field: str, value: object) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DecodeError(f"span {index}: {field} must be a list, not {show(value)}")
    return value


def _annotation(index: int, where: str, raw: object) -> V1Annotation:
    if not isinstance(raw, dict):
        raise DecodeError(f"span {index}: {where} must be an object, not {show(raw)}")
    if raw.get("timestamp") is None or raw.get("value") is None:
        raise DecodeError(f"span {index}: {where} needs a timestamp and a value")
    timestamp = _int(index, f"{where}.timestamp", raw["timestamp"])
    if timestamp < 0:
        raise DecodeError(f"span {index}: {where}.timestamp must not be negative")
    return V1Annotation(
        timestamp,
        _text(index, f"{where}.value", raw["value"]),
        _endpoint(index, f"{where}.endpoint", raw.get("endpoint")),
    )


def _binary_annotation(index: int, where: str, raw: object) -> V1BinaryAnnotation | None:
    if not isinstance(raw, dict):
        raise DecodeError(f"span {index}: {where} must be an object, not {show(raw)}")
    key = _text(index, f"{where}.key", raw.get("key"))
    endpoint = _endpoint(index, f"{where}.endpoint", raw.get("endpoint"))
    value = raw.get("value")
    if value is None:
        return None
    if value is True or value is False:
        if key in ADDRESS_KEYS:
            return V1BinaryAnnotation(key, None, endpoint) if value and endpoint else None
        return V1BinaryAnnotation(key, "true" if value else "false", endpoint)
    if isinstance(value, int):
        return V1BinaryAnnotation(key, str(value), endpoint)
    if isinstance(value, float):
        return V1BinaryAnnotation(key, repr(value), endpoint)
    return V1BinaryAnnotation(key, _text(index, f"{where}.value", value), endpoint)


def _span(index: int, raw: object) -> V1Span:
    if not isinstance(raw, dict):
        raise DecodeError(f"span {index}: must be a JSON object, not {show(raw)}")
    for required in ("traceId", "id"):
        if raw.get(required) is None:
            raise DecodeError(f"span {index}: {required} is missing")
    span = V1Span(
        trace_id=_hex_id(index, "traceId", raw["traceId"], (16, 32)),
        id=_hex_id(index, "id", raw["id"], (16,)),
    )
    if span.trace_id.startswith("0" * 16) and len(span.trace_id) == 32:
        span.trace_id = span.trace_id[16:]  # Zipkin writes a 64-bit trace id as 16 characters
    parent_id = raw.get("parentId")
    if parent_id is not None and (parent_id.strip("0") if isinstance(parent_id, str) else True):
        span.parent_id = _hex_id(index, "parentId", parent_id, (16,))
    if raw.get("name") is not None:
        span.name = _text(index, "name", raw["name"])
    for field in ("timestamp", "duration"):
        if raw.get(field) is not None:
            setattr(span, field, _int(index, field, raw[field]))
    debug = raw.get("debug")
    if debug is not None and debug.__class__ is not bool:
        raise DecodeError(f"span {index}: debug must be true or false, not {show(debug)}")
    span.debug = bool(debug)
    span.annotations = [
        _annotation(index, f"annotations[{position}]", item)
        for position, item in enumerate(_list(index, "annotations", raw.get("annotations")))
    ]
    binary = _list(index, "binaryAnnotations", raw.get("binaryAnnotations"))
    span.binary_annotations = [
        annotation
        for position, item in enumerate(binary)
        if (annotation := _binary_annotation(index, f"binaryAnnotations[{position}]", item))
    ]
    return span


def parse_spans(data: bytes) -> list[V1Span]:
    """A v1 JSON body (a list of spans) as :class:`V1Span` objects, validated.

    Raises :class:`~tomograph.encoding.errors.DecodeError` naming the span index and field.

    >>> parse_spans(b'[{"traceId": "00000000000000AB", "id": "00000000000000cd"}]')[0].trace_id
    '00000000000000ab'
    """
    return [_span(index, item) for index, item in enumerate(load_span_list(data))]


def decode_spans(data: bytes) -> list[dict[str, Any]]:
    """A v1 JSON body as normalized v2 span dicts, converted as Zipkin's server converts them
    (a span logged by client and server becomes two). Raises ``DecodeError``."""
    return normalize_spans(parse_spans(data))


def _endpoint_json(endpoint: EndpointDict | None) -> dict[str, Any]:
    return {} if endpoint is None else {"endpoint": endpoint}


def _span_json(span: V1Span) -> dict[str, Any]:
    record: dict[str, Any] = {"traceId": span.trace_id}
    if span.parent_id is not None:
        record["parentId"] = span.parent_id
    record["id"] = span.id
    record["name"] = span.name
    if span.timestamp:
        record["timestamp"] = span.timestamp
    if span.duration:
        record["duration"] = span.duration
    if span.annotations:
        record["annotations"] = [
            {"timestamp": note.timestamp, "value": note.value, **_endpoint_json(note.endpoint)}
            for note in span.annotations
        ]
    if span.binary_annotations:
        record["binaryAnnotations"] = [
            {
                "key": binary.key,
                "value": True if binary.value is None else binary.value,
                **_endpoint_json(binary.endpoint),
            }
            for binary in span.binary_annotations
        ]
    if span.debug:
        record["debug"] = True
    return record


def encode_spans(spans: Iterable[V1Span]) -> bytes:
    """v1 spans as a compact v1 JSON list, what :func:`parse_spans` reads back.

    >>> encode_spans([V1Span('000000000000000a', '000000000000000b', name='get')])
    b'[{"traceId":"000000000000000a","id":"000000000000000b","name":"get"}]'
    """
    return _dumps([_span_json(span) for span in spans]).encode("ascii")


#: Bytes at least one of which a v1 body holds and a v2 body does not (outside its texts).
_V1_BYTES = (b'"binaryAnnotations"', b'"endpoint"')


def v1_marker(data: bytes) -> str | None:
    """What shows a JSON body to be Zipkin v1, not v2; None if nothing does (or it is no JSON).

    The markers are the fields v2 does not have: ``binaryAnnotations`` on a span, and
    ``endpoint`` on an annotation (every v1 tracer sets it on core annotations). A body with
    neither is read as v2, which it then also is. Bodies without these words anywhere are
    not parsed: the check costs a byte search.

    >>> v1_marker(b'[{"traceId": "a", "id": "b", "binaryAnnotations": []}]')
    'span 0 has binaryAnnotations'
    >>> v1_marker(b'[{"traceId": "a", "id": "b", "tags": {"k": "endpoint"}}]') is None
    True
    """
    if not any(marker in data for marker in _V1_BYTES):
        return None
    try:
        raw = load_span_list(data)
    except DecodeError:
        return None
    for index, span in enumerate(raw):
        if not isinstance(span, dict):
            continue
        if "binaryAnnotations" in span:
            return f"span {index} has binaryAnnotations"
        notes = span.get("annotations")
        if isinstance(notes, list):
            for position, note in enumerate(notes):
                if isinstance(note, dict) and "endpoint" in note:
                    return f"span {index} has annotations[{position}].endpoint"
    return None
