"""Replacing a library's methods with traced ones, and putting the originals back.

What every ``patch()``/``unpatch()`` of an integration is built on: patching twice is a no-op,
and unpatching restores exactly what was there (an instance's own attribute, or the class's).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["is_patched", "patch_method", "unpatch_method", "unpatched"]

_ORIGINAL = "__tomograph_original__"


def _holds_own(owner: Any) -> bool:
    # A class or a module: what is replaced is its own attribute, put back as it was. An
    # instance's replacement shadows its class's method, and is removed to restore it.
    return isinstance(owner, type | ModuleType)


def patch_method(owner: Any, name: str, wrap: Callable[[Any], Any]) -> bool:
    """Replace ``owner.name`` with ``wrap(original)``; False (no change) if already patched."""
    own = vars(owner).get(name)  # only what ``owner`` itself holds, not what it inherits
    if own is not None and hasattr(own, _ORIGINAL):
        return False
    current = getattr(owner, name) if own is None or not _holds_own(owner) else own
    wrapper = wrap(current)
    setattr(wrapper, _ORIGINAL, current)
    setattr(owner, name, wrapper)
    return True


def unpatch_method(owner: Any, name: str) -> bool:
    """Restore what :func:`patch_method` replaced; False if ``owner.name`` was not patched."""
    current = vars(owner).get(name)
    original = getattr(current, _ORIGINAL, None)
    if original is None:
        return False
    if _holds_own(owner):
        setattr(owner, name, original)
    else:
        # An instance attribute shadowed the class's method: removing it restores the method.
        try:
            delattr(owner, name)
        except AttributeError:
            setattr(owner, name, original)
    return True


def is_patched(owner: Any, name: str) -> bool:
    """True if ``owner`` itself holds a tomograph wrapper as ``name``."""
    return hasattr(vars(owner).get(name), _ORIGINAL)


def unpatched(method: Any) -> Any:
    """What :func:`patch_method` replaced with ``method``, or ``method`` if it is no wrapper."""
    return getattr(method, _ORIGINAL, method)
