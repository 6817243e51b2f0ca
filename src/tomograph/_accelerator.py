"""Which hot paths run: the compiled ones (``tomograph._speedups``) or pure Python.

The compiled module holds the span hot path (:mod:`tomograph.span`) and the W3C and B3 header
functions (:mod:`tomograph.propagation.w3c`, :mod:`tomograph.propagation.b3`).

The extension is built from source when tomograph is installed where a C compiler exists, and
is optional: without it, or with ``TOMOGRAPH_NO_EXTENSIONS=1`` in the environment, the same
functions run in Python, with the same behaviour. The variable is read here, once, when
tomograph is imported (not by :mod:`tomograph.config`, which sits above the span: the choice
has to be made before the first span exists).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["DISABLE_VARIABLE", "speedups"]

#: Set (to anything but ``0`` or nothing) to run pure Python even where the extension is built.
DISABLE_VARIABLE = "TOMOGRAPH_NO_EXTENSIONS"


def _load() -> ModuleType | None:
    if os.environ.get(DISABLE_VARIABLE, "") not in ("", "0"):
        return None
    try:
        # import_module returns the module itself (from sys.modules), where an attribute of the
        # package would be missing while the package is still half imported (a second import)
        return importlib.import_module("tomograph._speedups")
    except Exception:  # not built, or unusable here: pure Python runs
        return None


#: The compiled module, or ``None`` where pure Python runs.
speedups = _load()
