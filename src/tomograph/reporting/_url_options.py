"""Backend URL parameters shared by every backend that uses the batching transport."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TRANSPORT_PARAMETERS", "parse_bool", "parse_number", "transport_options"]

#: URL parameter -> (BatchingTransport argument, type).
TRANSPORT_PARAMETERS: dict[str, tuple[str, type]] = {
    "queue_size": ("queue_size", int),
    "batch_size": ("batch_size", int),
    "interval": ("interval", float),
    "max_retries": ("max_retries", int),
    "retry_deadline": ("retry_deadline", float),
}


def parse_number(name: str, text: str, kind: type) -> Any:
    """``kind(text)``, with a ValueError naming the parameter if it is not a finite number.

    >>> parse_number("timeout", "2.5", float)
    2.5
    """
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {text!r}")
    return value


def parse_bool(name: str, text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{name} must be true or false, not {text!r}")


def transport_options(query: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for :class:`BatchingTransport` from URL query parameters.

    >>> transport_options({'queue_size': '500', 'interval': '0.5'})
    {'queue_size': 500, 'interval': 0.5}
    """
    options: dict[str, Any] = {}
    for parameter, (argument, kind) in TRANSPORT_PARAMETERS.items():
        if parameter in query:
            options[argument] = parse_number(parameter, query[parameter], kind)
    return options
