"""Reading and decoding span uploads: size limits, gzip, and the decoder for each content type.

Every body is bounded twice: as sent (``Content-Length`` and the bytes actually read) and after
gzip decompression, which stops one byte past the limit, so a small compressed body cannot
expand without limit in memory. Across requests, :class:`UploadGate` bounds the bytes held
while bodies stream in and how many are inflated and decoded at once. Reading is asynchronous;
inflating and decoding are CPU work for a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

from tomograph.encoding import zipkin_json, zipkin_proto
from tomograph.encoding.errors import DecodeError
from tomograph.encoding.normalize import SpanDict

__all__ = [
    "OTLP_COPIED_PER_BODY_BYTE",
    "BodyTooLarge",
    "IngestError",
    "ServerBusy",
    "UnsupportedMediaType",
    "UploadGate",
    "decode_otlp_body",
    "decode_zipkin_body",
    "decode_zipkin_v1_body",
    "decompress",
    "read_body",
]


class IngestError(ValueError):
    """The upload is malformed (answered with 400 and this message)."""


class BodyTooLarge(IngestError):
    """The upload exceeds the configured size, compressed or not (answered with 413)."""


class UnsupportedMediaType(IngestError):
    """The Content-Type or Content-Encoding is not one the endpoint reads (answered with 415)."""


class ServerBusy(IngestError):
    """Too many uploads in progress to take this one now (answered 503 with Retry-After)."""


class UploadGate:
    """What uploads may hold at once, whatever their number: ``max_buffered`` bytes of bodies
    as received, and ``max_decoding`` bodies being inflated and decoded (each may take several
    times the body limit then). An upload that finds no room within ``wait`` seconds gets
    :class:`ServerBusy`.

    Bytes count as they arrive, so a client that trickles its body holds only what it sent:
    slow clients cannot starve the others (their deadline is the ASGI layer's business).

    >>> gate = UploadGate(max_buffered=1 << 20, max_decoding=2, wait=5.0)
    """

    def __init__(self, max_buffered: int, max_decoding: int, wait: float) -> None:
        self.max_buffered = max_buffered
        self.max_decoding = max_decoding
        self.wait = wait
        self._buffered = 0
        # made on the serving loop, at the first upload (asyncio objects bind to one loop)
        self._freed: asyncio.Event | None = None
        self._decoders: asyncio.Semaphore | None = None

    def _loop_objects(self) -> tuple[asyncio.Event, asyncio.Semaphore]:
        if self._freed is None or self._decoders is None:
            self._freed = asyncio.Event()
            self._decoders = asyncio.Semaphore(self.max_decoding)
        return self._freed, self._decoders

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
        """Hold bytes for one upload: yields ``take(count)``, which waits for room; all that was
        taken is given back on exit."""
        self._loop_objects()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        held = 0

        async def take(count: int) -> None:
            nonlocal held
            while self._buffered + count > self.max_buffered:
                freed, _ = self._loop_objects()
                try:
                    await asyncio.wait_for(freed.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    raise ServerBusy(
                        f"uploads in progress hold {self._buffered} bytes: retry later"
                    ) from None
            self._buffered += count
            held += count

        try:
            yield take
        finally:
            # no await here: giving back must happen even when the task is being cancelled
            self._buffered -= held
            if held:
                freed, _ = self._loop_objects()
                self._freed = asyncio.Event()  # the next waiters wait for the next release
                freed.set()  # wakes everyone waiting now, to check for room again

    @contextlib.asynccontextmanager
    async def decoding(self) -> AsyncIterator[None]:
        """One of the ``max_decoding`` places to inflate and decode a body."""
        _, decoders = self._loop_objects()
        try:
            await asyncio.wait_for(decoders.acquire(), self.wait)
        except asyncio.TimeoutError:
            raise ServerBusy(
                f"{self.max_decoding} uploads are being decoded: retry later"
            ) from None
        try:
            yield
        finally:
            decoders.release()


def _gunzip(data: bytes, limit: int) -> bytes:
    """Every member of a gzip stream inflated (RFC 1952 allows several, and ``cat a.gz b.gz``
    makes one), stopping one byte past ``limit``: enough to know that it is exceeded."""
    parts: list[bytes] = []
    size = members = 0
    while data or not members:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(data, limit - size + 1)
        except zlib.error as error:
            where = f" (member {members + 1})" if members else ""
            raise IngestError(f"body is not valid gzip{where}: {error}") from None
        size += len(out)
        if size > limit:
            raise BodyTooLarge(f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise IngestError("body is not valid gzip: truncated")
        parts.append(out)
        members += 1
        data = inflater.unused_data  # the next member, if any, starts here
    return b"".join(parts)


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
    take: Callable[[int], Awaitable[None]] | None = None,
) -> bytes:
    """The request body as sent; raises BodyTooLarge past ``limit`` bytes.

    The Content-Encoding is checked here (before reading); :func:`decompress` undoes it.
    ``take(count)`` is awaited for each piece received (see :meth:`UploadGate.admit`).
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
        if take is not None:
            await take(len(chunk))
        parts.append(chunk)
    return b"".join(parts)


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """``body`` with its Content-Encoding undone; BodyTooLarge if it inflates past ``limit``.

    Every member of a multi-member gzip stream is inflated, and inflating stops one byte past
    ``limit``, so a bomb costs no more than ``limit`` bytes.

    >>> import gzip
    >>> decompress(gzip.compress(b"[1,") + gzip.compress(b"2]"), "gzip", 100)
    b'[1,2]'
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
    if decode is zipkin_json.decode_spans:
        _refuse_v1_json(body)
    try:
        return decode(body)
    except DecodeError as error:
        raise IngestError(str(error)) from None


def _refuse_v1_json(body: bytes) -> None:
    """v1 JSON would read as v2 spans without kinds and endpoints: send it where it belongs."""
    from tomograph.encoding.zipkin_v1_json import v1_marker

    marker = v1_marker(body)
    if marker is not None:
        raise IngestError(
            f"body is Zipkin v1 JSON ({marker}): post it to /api/v1/spans, or send Zipkin v2"
            " JSON here"
        )


def decode_zipkin_v1_body(body: bytes, content_type: str | None) -> list[SpanDict]:
    """Zipkin v1 spans from a ``POST /api/v1/spans`` body (v1 JSON or a Thrift list of spans),
    converted to v2 spans by Zipkin's rules.

    >>> decode_zipkin_v1_body(b"[]", None)
    []
    """
    from tomograph.encoding import zipkin_v1_json, zipkin_v1_thrift

    media = _media_type(content_type)
    if media in ("", "application/json"):
        decode = zipkin_v1_json.decode_spans
    elif media == "application/x-thrift":
        decode = zipkin_v1_thrift.decode_spans
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported: use application/json (Zipkin v1 JSON)"
            " or application/x-thrift (a Thrift list of Zipkin v1 spans)"
        )
    try:
        return decode(body)
    except DecodeError as error:
        raise IngestError(str(error)) from None


#: How many bytes of OTLP resource and scope attributes a request may copy into its spans (each
#: span gets them as tags), per byte of the body limit: 160 MB with the default 10 MB, an
#: OpenTelemetry Collector batch of 8,192 spans with 18 KB of resource attributes each. The
#: spans past it are stored without them (see tomograph.encoding.otlp.request_spans), so that
#: a 2 MB request cannot decode to gigabytes of spans.
OTLP_COPIED_PER_BODY_BYTE = 16


def decode_otlp_body(
    body: bytes, content_type: str | None, max_copied: int | None = None
) -> tuple[list[SpanDict], bool]:
    """Zipkin v2 spans from a ``POST /v1/traces`` body; also whether the request was JSON.

    ``max_copied``: the most bytes of resource and scope attributes copied into its spans.

    >>> decode_otlp_body(b"", "application/x-protobuf")
    ([], False)
    """
    # opentelemetry-proto may be missing: the ImportError reaches the caller (answered 501)
    from tomograph.encoding import otlp

    media = _media_type(content_type)
    if media == "application/json":
        decode, is_json = otlp.decode_json_spans, True
    elif media in ("application/x-protobuf", "application/protobuf"):
        decode, is_json = otlp.decode_spans, False
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported: use application/x-protobuf or"
            " application/json (OTLP/HTTP)"
        )
    try:
        return decode(body, max_copied), is_json
    except DecodeError as error:
        raise IngestError(str(error)) from None
