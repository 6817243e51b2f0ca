"""Zipkin v2 JSON spans parsed and type-checked in one pass by msgspec, when it is installed
(the ``collector`` extra).

:func:`typed_spans` decodes a body only when every span in it is written the way tracers
write spans: lower-case hex ids that are not all zeros, a 128-bit trace id only when its high
half is not zero, a known kind, times below 2^63, valid endpoint addresses and ports, tags and
annotations of strings. msgspec checks the types and ranges in C while it parses, into
structs (unknown fields are skipped, never built); the rest is checked once per batch here.
Any other body gets None (as does every body without msgspec), and the decoder reads it field
by field as before, which explains what is wrong or normalizes what is unusual, so the same
spans are accepted and the same errors given whichever path a body takes.

msgspec refuses what the standard library would read differently (a lone surrogate escape,
``NaN``, a byte order mark, UTF-16, invalid UTF-8, numbers beyond 64 bits where a number is
expected): those bodies take the careful path too, as do bodies that hold invalid UTF-8 or a
number of thousands of digits in a field msgspec skips (:mod:`json` refuses those).

Decoding a batch of 100 typical spans costs about 29,200 instructions per span this way
(11,000 of them parsing, under 1,000 making sure that :mod:`json` would accept the body
too), against 52,300 through orjson and the field-by-field checks.

>>> typed_spans(b'[{"traceId":"00000000000000ab","id":"00000000000000cd"}]') in (
...     None, [{"traceId": "00000000000000ab", "id": "00000000000000cd"}])
True
"""

# no `from __future__ import annotations`: msgspec reads the structs' annotations at run time
import sys
from typing import Annotated, Any, Literal

from tomograph.encoding._zipkin_model import normalize_endpoint
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.normalize import SpanDict, endpoint_dict, normalize_annotations

try:
    import msgspec
except ImportError:  # pragma: no cover - the field-by-field decoder serves then
    msgspec = None  # type: ignore[assignment]

__all__ = ["ACCELERATED", "typed_spans"]

#: Whether msgspec reads typical bodies (else every body is read field by field).
ACCELERATED = msgspec is not None

_ZERO_ID = "0" * 16
#: What the ids of a batch, joined, may hold: checked once per batch (msgspec's per-field
#: patterns, Python regular expressions called once each, would cost 11,000 instructions a span).
_LOWER_HEX_DIGITS = b"0123456789abcdef"
_DECODE_FIELDS = ("serviceName", "ipv4", "ipv6", "port")

if msgspec is not None:
    # below 2^63 (what the store holds): larger times take the careful path, which decides
    _Micros = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
    _Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]

    class _Endpoint(msgspec.Struct, frozen=True, gc=False):
        """Hashable: a batch's endpoints are normalized once each, looked up by value."""

        serviceName: str | None = None  # Zipkin's field names
        ipv4: str | None = None
        ipv6: str | None = None
        port: _Port | None = None

    class _Annotation(msgspec.Struct, gc=False):
        timestamp: _Micros
        value: str

    class _Span(msgspec.Struct, gc=False):
        # null and absent mean the same for every optional field, on both paths
        traceId: str
        id: str
        parentId: str | None = None
        kind: Literal["CLIENT", "SERVER", "PRODUCER", "CONSUMER"] | None = None
        name: str | None = None
        timestamp: _Micros | None = None
        duration: _Micros | None = None
        debug: bool | None = None
        shared: bool | None = None
        localEndpoint: _Endpoint | None = None
        remoteEndpoint: _Endpoint | None = None
        annotations: list[_Annotation] | None = None
        tags: dict[str, str] | None = None

    # one decoder for every worker thread: msgspec's decoders are thread-safe since 0.15
    _decode = msgspec.json.Decoder(list[_Span]).decode


def _endpoint_fields(endpoint: Any, field: str) -> dict[str, Any] | None:
    """The endpoint as :func:`~tomograph.encoding.normalize.endpoint_dict` keeps it; raises
    DecodeError for an address that is not one."""
    raw = {key: getattr(endpoint, key) for key in _DECODE_FIELDS}
    return endpoint_dict(normalize_endpoint(0, field, raw))


_ASCII_DIGITS = b"0123456789"


def _has_digit_run(data: bytes, length: int) -> bool:
    """Whether ``data`` holds ``length`` (at least 1) ASCII digits in a row.

    Such a run covers a multiple of ``length``: only the runs through those few positions are
    measured, by stripping digits in C either side. A pass mapping every byte of a batch
    (``bytes.translate``) and a search of the result for ``length`` zeros cost about 5,000
    instructions a span; this costs a few hundred a batch.
    """
    for position in range(0, len(data), length):
        if 48 <= data[position] <= 57:  # a digit
            after = data[position : position + length]  # this digit and those after it
            before = data[max(0, position - length + 1) : position]
            run = len(after) - len(after.lstrip(_ASCII_DIGITS))
            run += len(before) - len(before.rstrip(_ASCII_DIGITS))
            if run >= length:
                return True
    return False


def _reads_as_stdlib_does(data: bytes) -> bool:
    """Whether msgspec, which skips unknown fields without reading them, would accept ``data``
    only where :mod:`json` does too: every byte valid UTF-8 (surrogates aside, which both
    read), and no number with more digits than Python converts (``sys.set_int_max_str_digits``),
    which :mod:`json` refuses (a run of that many digits inside a string is counted too: it
    only costs the careful path).
    """
    if not data.isascii():
        try:
            data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return False
    limit = sys.get_int_max_str_digits()
    return not limit or len(data) <= limit or not _has_digit_run(data, limit + 1)


def _is_lower_hex(text: str) -> bool:
    """Whether ``text`` holds only the digits of lower-case hex (``""`` does).

    The digits deleted from its ASCII bytes in one C pass leave nothing: about 300
    instructions a span where ``re.fullmatch("[0-9a-f]*", ...)`` took 1,700.
    """
    return text.isascii() and not text.encode("ascii").translate(None, _LOWER_HEX_DIGITS)


def typed_spans(data: bytes) -> list[SpanDict] | None:
    """The normalized span dicts of ``data`` if every span is written the usual way; None
    otherwise, or without msgspec (see the module doc).

    The dicts are those :func:`tomograph.encoding.zipkin_json.decode_spans` makes of the
    same body, key order included.
    """
    if not ACCELERATED or not _reads_as_stdlib_does(data):
        return None
    try:
        decoded = _decode(data)
    except (ValueError, RecursionError):  # msgspec's errors are ValueErrors
        return None
    ids: list[str] = []
    add_ids = ids.append
    endpoints: dict[Any, dict[str, Any] | None] = {}
    spans: list[SpanDict] = []
    append = spans.append
    try:
        for raw in decoded:
            trace_id = raw.traceId
            span_id = raw.id
            parent_id = raw.parentId
            if (
                len(span_id) != 16
                or span_id == _ZERO_ID
                or trace_id.startswith(_ZERO_ID)  # all zeros, or a 128-bit id of 64 bits
                or (len(trace_id) != 16 and len(trace_id) != 32)
            ):
                return None
            add_ids(trace_id)
            add_ids(span_id)
            span: SpanDict = {"traceId": trace_id}
            if parent_id is not None:
                if len(parent_id) != 16 or parent_id == _ZERO_ID:
                    return None
                add_ids(parent_id)
                span["parentId"] = parent_id
            span["id"] = span_id
            if raw.kind is not None:
                span["kind"] = raw.kind
            name = raw.name
            if name:
                span["name"] = name.lower()
            if raw.timestamp:
                span["timestamp"] = raw.timestamp
            if raw.duration:
                span["duration"] = raw.duration
            if raw.debug:
                span["debug"] = True
            if raw.shared:
                span["shared"] = True
            endpoint = raw.localEndpoint
            if endpoint is not None:
                fields = endpoints.get(endpoint, endpoints)
                if fields is endpoints:
                    fields = endpoints[endpoint] = _endpoint_fields(endpoint, "localEndpoint")
                if fields:
                    span["localEndpoint"] = fields.copy()  # span limits may cut its name
            endpoint = raw.remoteEndpoint
            if endpoint is not None:
                fields = endpoints.get(endpoint, endpoints)
                if fields is endpoints:
                    fields = endpoints[endpoint] = _endpoint_fields(endpoint, "remoteEndpoint")
                if fields:
                    span["remoteEndpoint"] = fields.copy()
            if raw.annotations:
                span["annotations"] = normalize_annotations(
                    [(note.timestamp, note.value) for note in raw.annotations]
                )
            if raw.tags:
                # msgspec's strings hold no lone surrogate: tag_text would keep them as they are
                span["tags"] = raw.tags
            append(span)
    except DecodeError:  # an endpoint address that is not one
        return None
    if not _is_lower_hex("".join(ids)):
        return None
    return spans
