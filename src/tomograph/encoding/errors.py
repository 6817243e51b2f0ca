"""The one error every decoder in :mod:`tomograph.encoding` raises for bad input."""

from __future__ import annotations

__all__ = ["DecodeError"]


class DecodeError(ValueError):
    """A span payload is malformed for its format.

    The message names the span (by its index in the list, where there is one) and the field
    that is wrong, so a collector can hand it back to the sender as is.
    """
