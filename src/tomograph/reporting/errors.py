"""The error raised by the wire decoders of :mod:`tomograph.reporting`."""

from __future__ import annotations

__all__ = ["DecodeError"]


class DecodeError(ValueError):
    """A span payload (Zipkin JSON, Zipkin proto3) is malformed.

    The message names the span (by its index in the list) and the field that is wrong, so a
    collector can hand it back to the sender as is.

    >>> from tomograph.reporting import zipkin_json
    >>> try:
    ...     zipkin_json.decode_spans(b'[{"traceId": "xyz", "id": "0000000000000001"}]')
    ... except DecodeError as error:
    ...     print(error)
    span 0: traceId must be 16 or 32 hex characters, not 'xyz'
    """
