"""Reading and decoding span uploads: size limits, gzip, and the decoder for each content type.

Every body is bounded twice: as sent (``Content-Length`` and the bytes actually read) and after
gzip decompression, so a small compressed body cannot expand without limit in memory. Reading
is asynchronous; decompressing and decoding are CPU work for a worker thread.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from tomograph.collector.storage import SpanDict

__all__ = [
    "BodyTooLarge",
    "IngestError",
    "UnsupportedMediaType",
    "decode_otlp_body",
    "decode_zipkin_body",
    "decompress",
    "read_body",
]


class IngestError(ValueError):
    """The upload is malformed (answered with 400 and this message)."""


class BodyTooLarge(IngestError):
    """The upload exceeds the configured size, compressed or not (answered with 413)."""


class UnsupportedMediaType(IngestError):
    """The Content-Type or Content-Encoding is not one the endpoint reads (answered with 415)."""


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as error:
        raise IngestError(f"body is not valid gzip: {error}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise IngestError("body is not valid gzip: truncated")
    return out


def _encoding(content_encoding: str | None) -> str:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (use gzip)")
    return encoding


async def read_body(
    chunks: AsyncIterator[bytes],
    content_length: str | None,
    content_encoding: str | None,
    limit: int,
) -> bytes:
    """The request body as sent; raises BodyTooLarge past ``limit`` bytes.

    The Content-Encoding is checked here (before reading); :func:`decompress` undoes it.
    """
    if content_length is not None:
        # RFC 9110: 1*DIGIT; int() would also take "-1", "+5", " 5" and "1_000"
        if not (content_length.isascii() and content_length.isdigit()):
            raise IngestError("Content-Length is not a number")
        declared = int(content_length)
        if declared > limit:
            raise BodyTooLarge(f"body of {declared} bytes exceeds {limit} bytes")
    _encoding(content_encoding)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body exceeds {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` with its Content-Encoding undone; BodyTooLarge if it inflates past ``limit``.

    >>> import gzip
    >>> decompress(gzip.compress(b"[]"), "gzip", 100)
    b'[]'
    """
    if _encoding(content_encoding) == "identity":
        return body
    return _gunzip(body, limit)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_zipkin_body(body: bytes, content_type: str | None) -> list[SpanDict]:
    """Zipkin v2 spans from a ``POST /api/v2/spans`` body, by Content-Type (JSON if absent).

    >>> decode_zipkin_body(b"[]", "application/json")
    []
    """
    from tomograph.reporting import zipkin_json, zipkin_proto
    from tomograph.reporting.errors import DecodeError

    media = _media_type(content_type)
    if media in ("", "application/json"):
        decode = zipkin_json.decode_spans
    elif media in ("application/x-protobuf", "application/protobuf"):
        decode = zipkin_proto.decode_spans
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported: use application/json (Zipkin v2 JSON)"
            " or application/x-protobuf (Zipkin proto3 ListOfSpans)"
        )
    try:
        return decode(body)
    except DecodeError as error:
        raise IngestError(str(error)) from None


def decode_otlp_body(body: bytes, content_type: str | None) -> tuple[list[SpanDict], bool]:
    """Zipkin v2 spans from a ``POST /v1/traces`` body; also whether the request was JSON.

    >>> decode_otlp_body(b"", "application/x-protobuf")
    ([], False)
    """
    from tomograph.collector.otlp import OtlpDecodeError, decode_otlp_json, decode_otlp_protobuf

    media = _media_type(content_type)
    if media == "application/json":
        decode, is_json = decode_otlp_json, True
    elif media in ("application/x-protobuf", "application/protobuf"):
        decode, is_json = decode_otlp_protobuf, False
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported: use application/x-protobuf or"
            " application/json (OTLP/HTTP)"
        )
    try:
        return decode(body), is_json
    except OtlpDecodeError as error:
        raise IngestError(str(error)) from None
