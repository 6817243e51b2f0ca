"""The one error every decoder in :mod:`tomograph.encoding` raises for bad input."""

from __future__ import annotations

__all__ = ["DecodeError", "RequestTooLarge"]


class DecodeError(ValueError):
    """A span payload is malformed for its format.

    The message names the span (by its index in the list, where there is one) and the field
    that is wrong, so a collector can hand it back to the sender as is.
    """


class RequestTooLarge(DecodeError):
    """A request would decode to more than the bound its decoder was given.

    A format whose spans share data (OTLP's resource and scope attributes, copied into every
    span as tags) can make a small request decode to gigabytes: a collector answers this with
    413 rather than 400, the request being well-formed.
    """
