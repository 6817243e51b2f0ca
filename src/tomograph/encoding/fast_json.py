"""JSON through orjson when it is installed (the ``collector`` extra), else through :mod:`json`:
the same values, the same errors, the same bytes either way.

orjson parses a batch of spans about four times faster and writes a span about ten times
faster; the collector spends most of its time on these two. Where orjson would answer
differently it is not trusted: it refuses lone surrogates, a byte order mark, UTF-16 and numbers
beyond a double, and it reads integers beyond 64 bits as floats; those bodies (and every body
it rejects, so the error message is the standard library's) go through :mod:`json`.

>>> loads(b'[{"id": "1"}]')
[{'id': '1'}]
>>> dumps({"name": "café", "port": 80})
b'{"name":"caf\\xc3\\xa9","port":80}'
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the standard library serves then
    _orjson = None  # type: ignore[assignment]

__all__ = ["ACCELERATED", "dumps", "dumps_each", "loads", "stdlib_dumps", "stdlib_loads"]

#: Whether orjson does the work (else the standard library does it alone).
ACCELERATED = _orjson is not None

#: A number of 19 digits or more (after a separator, optionally negative) may be beyond 64
#: bits, which orjson reads as a float where the standard library reads an int. Found by
#: mapping digits to "0", separators to ":" and dropping whitespace, then searching for the
#: pattern: about 30 times faster than a regular expression over a 35 KB batch. A match inside
#: a string only costs the slower parse.
_SHAPES = bytes.maketrans(b"0123456789[,", b"0000000000::")
_WHITESPACE = b" \t\r\n"
_LONG = (b"0" * 19, b"-" + b"0" * 19)
_LONG_INSIDE = tuple(b":" + number for number in _LONG)


def _has_long_number(data: bytes) -> bool:
    shapes = data.translate(_SHAPES, _WHITESPACE)
    return (
        _LONG_INSIDE[0] in shapes
        or _LONG_INSIDE[1] in shapes
        or shapes.startswith(_LONG)  # the whole document is a number
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def stdlib_loads(data: bytes) -> Any:
    """:func:`loads` by the standard library alone."""
    return json.loads(data, parse_constant=_reject_constant)


def loads(data: bytes) -> Any:
    """The JSON value in ``data``; strict: ``NaN`` and ``Infinity`` are refused.

    Raises :class:`ValueError` (or :class:`RecursionError` for absurd nesting) with the
    standard library's message.
    """
    if _orjson is not None and not _has_long_number(data):
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass  # invalid, or valid beyond what orjson reads: the standard library decides
    return stdlib_loads(data)


def stdlib_dumps(value: Any) -> bytes:
    """:func:`dumps` by the standard library alone."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, non-ASCII text as is.

    Only for plain data without floats (orjson and :mod:`json` spell some floats differently):
    strings, integers, booleans, None, lists and dicts with string keys. A lone surrogate
    raises :class:`UnicodeEncodeError`.
    """
    if _orjson is not None:
        try:
            return _orjson.dumps(value)
        except TypeError:
            pass  # a lone surrogate, an integer beyond 64 bits: the standard library decides
    return stdlib_dumps(value)


def dumps_each(values: Sequence[Any]) -> list[bytes]:
    """:func:`dumps` of each value: the same bytes, and the same errors.

    For the values of a batch: orjson is called from C (``map``), not through a Python call per
    value, which saves about 300 instructions a span of a collector's batch.

    >>> dumps_each([{"a": 1}, "é"])
    [b'{"a":1}', b'"\\xc3\\xa9"']
    """
    if _orjson is not None:
        try:
            # Each copied into a bytes of its own size: orjson's bytes keep the 4 KB buffer they
            # were written in, so a batch of 300,000 tiny spans held 1.2 GB until stored. The
            # copy costs less than it saves: the buffer, freed at once, is reused hot.
            return list(map(bytes, map(memoryview, map(_orjson.dumps, values))))  # type: ignore[arg-type]
        except TypeError:
            pass  # one value orjson does not write: each is written by dumps, which decides
    return [dumps(value) for value in values]
