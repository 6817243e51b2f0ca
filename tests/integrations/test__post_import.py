"""Post-import hooks: code run right after a module's first import, once, without leaving a trace
on the module's loader, and never seen unpatched by another thread."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.resources
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from tests.support.thread_calls import all_at_once

from tomograph.integrations._post_import import when_imported


@pytest.fixture
def package_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for throwaway modules; they are forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]
        importlib.invalidate_caches()


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    importlib.invalidate_caches()


def test_hook_runs_after_the_module_code_ran_and_before_the_importer_sees_it(
    package_dir: Path,
) -> None:
    write(package_dir, "hooked_a.py", "VALUE = 1\n")
    seen: list[int] = []

    def hook(module: ModuleType) -> None:
        seen.append(module.VALUE)
        module.VALUE = 2  # what a patch does

    when_imported("hooked_a", hook)
    assert seen == []  # nothing imported by watching
    assert "hooked_a" not in sys.modules
    import hooked_a  # type: ignore[import-not-found]

    assert seen == [1]
    assert hooked_a.VALUE == 2


def test_hook_runs_once_even_if_the_module_is_imported_again(package_dir: Path) -> None:
    write(package_dir, "hooked_once.py", "")
    calls: list[str] = []
    when_imported("hooked_once", lambda module: calls.append(module.__name__))
    importlib.import_module("hooked_once")
    del sys.modules["hooked_once"]
    importlib.import_module("hooked_once")
    assert calls == ["hooked_once"]


def test_hook_of_a_module_already_imported_runs_at_once() -> None:
    calls: list[str] = []
    when_imported("json", lambda module: calls.append(module.__name__))
    assert calls == ["json"]


def test_the_module_keeps_its_real_loader_and_its_resources(package_dir: Path) -> None:
    write(package_dir, "hooked_pkg/__init__.py", "LOADER_SEEN = __loader__\n")
    write(package_dir, "hooked_pkg/data.txt", "resource")
    when_imported("hooked_pkg", lambda module: None)
    import hooked_pkg  # type: ignore[import-not-found]

    assert type(hooked_pkg.__loader__) is importlib.machinery.SourceFileLoader
    assert hooked_pkg.__spec__.loader is hooked_pkg.__loader__
    assert hooked_pkg.LOADER_SEEN is hooked_pkg.__loader__  # also while its code ran
    assert importlib.resources.files("hooked_pkg").joinpath("data.txt").read_text() == "resource"
    assert importlib.reload(hooked_pkg) is hooked_pkg


def test_a_submodule_is_bound_on_its_package_when_its_hook_runs(package_dir: Path) -> None:
    write(package_dir, "hooked_parent/__init__.py", "")
    write(package_dir, "hooked_parent/child.py", "X = 1\n")
    bound: list[bool] = []

    def hook(module: ModuleType) -> None:
        # Code the hook imports may read the submodule as an attribute of its package.
        bound.append(getattr(sys.modules["hooked_parent"], "child", None) is module)

    when_imported("hooked_parent.child", hook)
    import hooked_parent.child  # type: ignore[import-not-found]  # noqa: F401

    assert bound == [True]


def test_a_module_that_fails_to_import_runs_no_hook_until_it_imports(package_dir: Path) -> None:
    write(package_dir, "hooked_broken.py", "raise RuntimeError('broken at import')\n")
    calls: list[str] = []
    when_imported("hooked_broken", lambda module: calls.append(module.__name__))
    with pytest.raises(RuntimeError, match="broken at import"):
        importlib.import_module("hooked_broken")
    assert calls == []
    write(package_dir, "hooked_broken.py", "")
    importlib.import_module("hooked_broken")
    assert calls == ["hooked_broken"]


def test_a_module_that_does_not_exist_still_raises_module_not_found() -> None:
    calls: list[str] = []
    when_imported("tomograph_no_such_module", lambda module: calls.append("hook"))
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tomograph_no_such_module")
    assert calls == []


def test_threads_importing_at_once_all_see_the_module_patched(package_dir: Path) -> None:
    write(package_dir, "hooked_threads.py", "PATCHED = False\n")
    calls: list[str] = []
    release = threading.Event()

    def slow_patch(module: ModuleType) -> None:
        calls.append(module.__name__)
        release.wait(0.2)  # a slow patch(): the other threads must wait for it
        module.PATCHED = True

    when_imported("hooked_threads", slow_patch)

    saw: list[bool] = []

    def import_and_look(index: int) -> None:
        saw.append(bool(importlib.import_module("hooked_threads").PATCHED))

    all_at_once(32, import_and_look)
    assert saw == [True] * 32
    assert calls == ["hooked_threads"]
