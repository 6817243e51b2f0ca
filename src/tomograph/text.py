"""Text every wire format can carry.

Python strings may hold surrogate code points that are not Unicode: a lone ``"\\ud800"`` from
hostile input, a file name's undecodable byte turned into ``"\\udcff"`` by ``surrogateescape``.
UTF-8 cannot encode them, so protobuf and ``str.encode()`` raise on them. Encoders replace them
with U+FFFD, as decoders do with bytes that are not UTF-8, rather than fail a whole batch or a
request.
"""

from __future__ import annotations

import re

__all__ = ["printable", "unicode_text", "utf8"]

_SURROGATES = re.compile("[\ud800-\udfff]")


def unicode_text(text: str) -> str:
    """``text`` with every lone surrogate code point replaced by U+FFFD; a high and a low
    surrogate side by side become the one character they encode together (as JSON's escapes
    would make them).

    >>> unicode_text('caf\\u00e9'), unicode_text('half a pair: \\ud83d')
    ('café', 'half a pair: \\ufffd')
    >>> unicode_text('\\ud83d\\ude00') == '\\U0001f600'
    True
    """
    # isascii() reads a flag: free for the common case.
    if text.isascii() or _SURROGATES.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def utf8(text: str) -> bytes:
    """``text`` as UTF-8 bytes, surrogate code points written as U+FFFD.

    >>> utf8('caf\\u00e9'), utf8('a\\ud800')
    (b'caf\\xc3\\xa9', b'a\\xef\\xbf\\xbd')
    """
    try:
        return text.encode()
    except UnicodeEncodeError:
        return unicode_text(text).encode()


def printable(value: object) -> str:
    """``str(value)``, or ``<unprintable Type>`` when that raises: a value of the application's
    whose ``__str__`` is broken must not raise from tracing code.

    >>> class Broken:
    ...     def __str__(self):
    ...         raise RuntimeError
    >>> printable(None), printable(Broken())
    ('None', '<unprintable Broken>')
    """
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
