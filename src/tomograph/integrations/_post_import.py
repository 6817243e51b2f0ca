"""Running code right after a module is first imported (post-import hooks).

What lets ``tomograph run`` patch a library when the application imports it, and not before:
importing Django, Flask or Celery at startup would cost every process their import time and run
their import-time side effects in programs that never use them.

A finder first on :data:`sys.meta_path` answers for the watched names only: it asks the finders
after it for the module's spec and gives the import system a loader that runs the real loader,
then the hooks. The module's ``__loader__`` and ``__spec__.loader`` are put back to the real
loader afterwards, so nothing that inspects them later (``importlib.resources``, reloads, tools
that check the loader's type) sees tomograph's. The hooks run while the import system still
holds the module's import lock: another thread importing the module waits until they are done,
so no thread uses the library unpatched.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__all__ = ["when_imported"]

Hook = Callable[[ModuleType], None]


class _HookedLoader(importlib.abc.Loader):
    """Stands in for a module's loader while it loads; runs the hooks after its code ran."""

    def __init__(self, name: str, loader: Any, finder: _PostImportFinder) -> None:
        self.name = name
        self.loader = loader
        self.finder = finder

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create = getattr(self.loader, "create_module", None)
        return None if create is None else create(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Before the code runs: the module's own code reading its __loader__ gets the real one.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        parent, _, child = self.name.rpartition(".")
        if parent:
            # The import system binds ``http.client`` on ``http`` only once this returns; a
            # hook importing code that reads ``http.client`` needs it bound now.
            setattr(sys.modules[parent], child, module)
        self.finder.ran(self.name, module)

    def __getattr__(self, name: str) -> Any:
        # get_resource_reader, get_source, is_package...: whatever the real loader offers.
        return getattr(self.loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of watched modules found by the finders after it."""

    def __init__(self) -> None:
        self._hooks: dict[str, list[Hook]] = {}
        self._lock = threading.Lock()

    def watch(self, name: str, hook: Hook) -> None:
        with self._lock:
            self._hooks.setdefault(name, []).append(hook)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self._hooks:  # every import of the process passes here: stay cheap
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(fullname, spec.loader, self)
        return spec

    def ran(self, name: str, module: ModuleType) -> None:
        """Run (once) the hooks of the module ``name``, whose code has just run."""
        with self._lock:
            hooks = self._hooks.pop(name, [])
        for hook in hooks:
            hook(module)


_finder: _PostImportFinder | None = None
_finder_lock = threading.Lock()


def when_imported(name: str, hook: Hook) -> None:
    """Call ``hook(module)`` once, right after the module ``name`` is first imported (at once if
    it is already). ``hook`` must not raise: a raising hook fails the application's import.

    >>> seen = []
    >>> when_imported('json', lambda module: seen.append(module.__name__))
    >>> seen
    ['json']
    """
    global _finder
    module = sys.modules.get(name)
    if module is not None:
        hook(module)
        return
    with _finder_lock:
        if _finder is None:
            _finder = _PostImportFinder()
            sys.meta_path.insert(0, _finder)
        _finder.watch(name, hook)
    # Imported by another thread between the look above and the watch: run it now, once.
    module = sys.modules.get(name)
    if module is not None:
        _finder.ran(name, module)
