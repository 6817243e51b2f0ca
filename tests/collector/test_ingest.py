"""Upload reading: size limits before and after gzip, content types."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tomograph.collector.ingest import (
    BodyTooLarge,
    IngestError,
    UnsupportedMediaType,
    decode_otlp_body,
    decode_zipkin_body,
    decompress,
    read_body,
)


async def _chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read(
    data: bytes, *, length: str | None = None, encoding: str | None = None, limit: int = 10_000
) -> bytes:
    raw = asyncio.run(read_body(_chunks(data), length, encoding, limit))
    return decompress(raw, encoding, limit)


def test_plain_and_gzip_bodies_are_read() -> None:
    assert read(b"[1,2]") == b"[1,2]"
    assert read(gzip.compress(b"[1,2]"), encoding="gzip") == b"[1,2]"


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(BodyTooLarge):
        read(b"", length="20000")


def test_streamed_bytes_over_the_limit_are_refused() -> None:
    with pytest.raises(BodyTooLarge):
        read(b"x" * 10_001)


def test_gzip_that_inflates_past_the_limit_is_refused() -> None:
    with pytest.raises(BodyTooLarge, match="decompressed"):
        read(gzip.compress(b"0" * 1_000_000), encoding="gzip")


def test_truncated_gzip_is_an_error() -> None:
    with pytest.raises(IngestError, match="gzip"):
        read(gzip.compress(b"[]" * 100)[:-10], encoding="gzip")


def test_unknown_encoding_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaType):
        read(b"[]", encoding="br")


@pytest.mark.parametrize("length", ["ten", "-1", "+2", "1_0", "\u0662", ""])
def test_bad_content_length_is_an_error(length: str) -> None:
    with pytest.raises(IngestError, match="Content-Length"):
        read(b"[]", length=length)


def test_zipkin_content_types() -> None:
    assert decode_zipkin_body(b"[]", None) == []
    assert decode_zipkin_body(b"[]", "application/json; charset=utf-8") == []
    assert decode_zipkin_body(b"", "application/x-protobuf") == []
    with pytest.raises(UnsupportedMediaType):
        decode_zipkin_body(b"[]", "text/plain")
    with pytest.raises(IngestError, match="span 0"):
        decode_zipkin_body(b'[{"id": "1"}]', "application/json")


def test_otlp_content_types() -> None:
    assert decode_otlp_body(b"{}", "application/json") == ([], True)
    with pytest.raises(UnsupportedMediaType):
        decode_otlp_body(b"{}", None)


@settings(max_examples=60)
@given(st.binary(max_size=2000), st.sampled_from([None, "gzip"]))
def test_random_bytes_are_read_or_refused_with_an_ingest_error(
    data: bytes, encoding: str | None
) -> None:
    try:
        body = read(data, encoding=encoding, limit=1000)
    except IngestError:
        return
    assert len(body) <= 1000


def test_every_gzip_member_is_inflated() -> None:
    body = gzip.compress(b"[1,") + gzip.compress(b"") + gzip.compress(b"2]")
    assert read(body, encoding="gzip") == b"[1,2]"
    assert decompress(body, "gzip", 100) == b"[1,2]"


def test_garbage_after_the_last_member_is_an_error() -> None:
    with pytest.raises(IngestError, match="member 2"):
        read(gzip.compress(b"[]") + b"\x00\x00\x00\x00", encoding="gzip")


def test_a_gzip_bomb_inflates_no_further_than_the_limit() -> None:
    bomb = gzip.compress(b"0" * 50_000_000, 9)  # 49 KB that inflate to 50 MB
    with pytest.raises(BodyTooLarge, match="decompressed body exceeds 1000000 bytes"):
        decompress(bomb, "gzip", 1_000_000)


@settings(max_examples=60)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_any_members_inflate_to_their_concatenation(parts: list[bytes]) -> None:
    body = b"".join(gzip.compress(part) for part in parts)
    assert decompress(body, "gzip", 10_000) == b"".join(parts)
