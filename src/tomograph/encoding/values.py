"""What span values become on the wire: one set of rules for every encoder.

A tag value may be a ``str``, ``int``, ``float`` or ``bool``, or a list or tuple of them
(OpenTelemetry's attribute types). Zipkin tags are strings: booleans become ``true``/``false``,
numbers their decimal text, and a list a JSON array of those strings, as OpenTelemetry's
Zipkin exporter writes them (``[1, 2]`` becomes ``["1","2"]``). OTLP keeps the types: a list
of one type becomes an ``ArrayValue`` of that type (a list of mixed types, of strings).

Every other value (``None``, ``bytes``, a ``dict``, an object) is written as text, on every
backend alike: ``None`` as the empty string, ``bytes`` decoded as UTF-8, anything else as its
``str()``. Names, keys and notes that are not strings are written as text the same way.

Text is made safe for every format: a lone surrogate (which no UTF-8 encoder accepts) becomes
U+FFFD (a high and a low surrogate side by side, the character they encode together), and an
int with more digits than Python prints in decimal is written in hex. An encoder
never fails on a value.

>>> tag_text([1, 2]), tag_text(True), tag_text(None), safe_text('a\\udc80b')
('["1","2"]', 'true', '', 'a\ufffdb')
"""

from __future__ import annotations

import json
from typing import TypeAlias

from tomograph.text import printable, unicode_text

__all__ = ["TagScalar", "safe_text", "tag_text", "tag_value"]

#: A tag value as encoders see it after :func:`tag_value`.
TagScalar: TypeAlias = str | int | float | bool

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def safe_text(value: object) -> str:
    """``value`` as text every wire format can carry (see the module doc).

    >>> safe_text(12), safe_text(b'caf\\xc3\\xa9'), safe_text(None)
    ('12', 'café', '')
    """
    if value.__class__ is not str:
        value = _as_text(value)
    return unicode_text(value)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return str.__str__(value)  # the characters of a str subclass (an enum), not its repr
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        # int's own text, not a subclass's __str__ (which may fail: the span would be lost).
        try:
            return int.__repr__(value)
        except ValueError:  # more digits than sys.get_int_max_str_digits() allows
            return hex(value)
    if isinstance(value, float):
        return float.__repr__(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return printable(value)


def tag_value(value: object) -> TagScalar | tuple[TagScalar, ...]:
    """A tag value as OTLP writes it: a scalar, a tuple of scalars of one type, or text.

    >>> tag_value([1, 2]), tag_value([1, 'a']), tag_value({'a': 1})
    ((1, 2), ('1', 'a'), "{'a': 1}")
    """
    cls = value.__class__
    if cls is bool or cls is int or cls is float:
        return value  # type: ignore[return-value]
    if cls is list or cls is tuple:
        items: list[object] = list(value)  # type: ignore[call-overload]
        kinds = {item.__class__ for item in items}
        if len(kinds) == 1 and kinds <= {bool, int, float}:
            return tuple(items)  # type: ignore[arg-type]
        return tuple(tag_text(item) for item in items)
    return safe_text(value)


def tag_text(value: object) -> str:
    """A tag value as Zipkin text: ``true``/``false``, numbers' text, lists as a JSON array.

    >>> tag_text(12.5), tag_text(['a', True])
    ('12.5', '["a","true"]')
    """
    cls = value.__class__
    # The common types first, without a call: encoders call this for every tag that is not
    # a plain ASCII string.
    if cls is str:
        return value if value.isascii() else safe_text(value)  # type: ignore[attr-defined,return-value]
    if cls is int or cls is float:
        try:
            return str(value)
        except ValueError:  # more digits than Python prints in decimal
            return hex(value)  # type: ignore[arg-type]
    if cls is list or cls is tuple:
        return _dumps([tag_text(item) for item in value])  # type: ignore[attr-defined]
    return safe_text(value)
