"""Green threads spawned inside a traced request continue its trace.

Each greenlet has a context of its own, so a spawned function would start with no current
span. While patched, ``eventlet.spawn``/``spawn_n``/``spawn_after`` (and the ``GreenPool``
methods, which call them) run the function in a copy of the spawner's context when a span is
current; otherwise they are called untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import eventlet
import eventlet.greenthread

from tomograph.context import CURRENT_SPAN

__all__ = ["patch", "unpatch"]

_OWNERS = (eventlet, eventlet.greenthread)
_WRAPPERS = {"spawn": "_carry", "spawn_n": "_carry", "spawn_after": "_carry_after"}
#: (module, name) -> the function patch() replaced.
_originals: dict[tuple[Any, str], Callable[..., Any]] = {}


def _carry(spawn: Callable[..., Any]) -> Callable[..., Any]:
    def spawn_in_context(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if CURRENT_SPAN.get() is None:
            return spawn(func, *args, **kwargs)
        return spawn(contextvars.copy_context().run, func, *args, **kwargs)

    return spawn_in_context


def _carry_after(spawn_after: Callable[..., Any]) -> Callable[..., Any]:
    def spawn_after_in_context(
        seconds: float, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        if CURRENT_SPAN.get() is None:
            return spawn_after(seconds, func, *args, **kwargs)
        return spawn_after(seconds, contextvars.copy_context().run, func, *args, **kwargs)

    return spawn_after_in_context


def patch() -> None:
    """Make spawned green threads inherit the current span."""
    wrappers = {"_carry": _carry, "_carry_after": _carry_after}
    for owner in _OWNERS:
        for name, wrapper in _WRAPPERS.items():
            if (owner, name) not in _originals:
                original = getattr(owner, name)
                _originals[owner, name] = original
                setattr(owner, name, wrappers[wrapper](original))


def unpatch() -> None:
    """Undo :func:`patch`."""
    for (owner, name), original in list(_originals.items()):
        setattr(owner, name, original)
        del _originals[owner, name]
