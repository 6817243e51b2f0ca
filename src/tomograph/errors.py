"""The error types tomograph raises into application code.

tomograph raises only for misuse of its own API (``stop`` with the wrong name) and for bad
configuration; bad input from the network never raises.
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "TracingError"]


class TracingError(Exception):
    """The tracing API was used out of order, e.g. ``tomograph.stop('b')`` while ``'a'`` is open.

    >>> import tomograph
    >>> try:
    ...     tomograph.stop('never started')
    ... except tomograph.TracingError as error:
    ...     print('refused')
    refused
    """


class ConfigurationError(TracingError, ValueError):
    """A configuration value (argument, URL or environment variable) is invalid.

    Raised by :func:`tomograph.configure`, never on the span hot path.
    """
