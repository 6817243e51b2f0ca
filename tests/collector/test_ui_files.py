"""The web UI's files: every module ships in the wheel and the sdist and is served as JavaScript."""

from __future__ import annotations

import mimetypes
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
from tests.collector.conftest import ServedApp
from tests.support.servers import REPO_ROOT

from tomograph.collector.app import ui_directory

UI_FILES = sorted(
    path.relative_to(ui_directory()).as_posix()
    for path in ui_directory().rglob("*")
    if path.is_file() and path.suffix in {".html", ".css", ".js", ".svg"}
)


def test_the_ui_is_split_into_modules_in_subfolders() -> None:
    # guards the list below against an empty glob: the subfolders hold the views and helpers
    assert "app.js" in UI_FILES
    assert "views/trace.js" in UI_FILES
    assert "lib/dom.js" in UI_FILES


def fetch(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, dict(response.headers), response.read()


def test_every_module_is_served_with_a_javascript_type_whatever_the_platform_table_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows' registry can map .js to text/plain; a browser then refuses to run the module
    monkeypatch.setitem(mimetypes.types_map, ".js", "text/plain")
    monkeypatch.setattr(mimetypes, "guess_type", lambda *args, **kwargs: ("text/plain", None))
    with ServedApp(tmp_path) as app:
        for name in (name for name in UI_FILES if name.endswith(".js")):
            status, headers, body = fetch(f"{app.url}/ui/{name}")
            assert status == 200, name
            assert headers["content-type"].startswith("text/javascript"), name
            assert headers["x-content-type-options"] == "nosniff"
            assert body == (ui_directory() / name).read_bytes()
        _, headers, _ = fetch(f"{app.url}/ui/style.css")
        assert headers["content-type"].startswith("text/css")


def test_ui_files_are_revalidated_so_an_upgrade_never_mixes_module_versions(
    tmp_path: Path,
) -> None:
    with ServedApp(tmp_path) as app:
        _, headers, _ = fetch(f"{app.url}/ui/views/trace.js")
        assert headers["cache-control"] == "no-cache"
        request = urllib.request.Request(
            f"{app.url}/ui/views/trace.js", headers={"If-None-Match": headers["etag"]}
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=20)
        assert answer.value.code == 304


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel and an sdist built from a copy of the project (the tree stays clean)."""
    source = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(
        REPO_ROOT / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so"),
    )
    out = tmp_path_factory.mktemp("dist")
    for hook in ("build_wheel", "build_sdist"):  # one process each, as a build frontend does
        script = f"import sys, setuptools.build_meta as b; b.{hook}(sys.argv[1])"
        subprocess.run(
            [sys.executable, "-c", script, str(out)],
            cwd=source,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return out


def test_the_wheel_ships_every_ui_file(built: Path) -> None:
    (wheel,) = built.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in UI_FILES if f"tomograph/ui/{name}" not in names]
    assert missing == []


def test_the_sdist_ships_every_ui_file(built: Path) -> None:
    (sdist,) = built.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [name for name in UI_FILES if f"src/tomograph/ui/{name}" not in names]
    assert missing == []


def test_index_preloads_every_module_and_nothing_else() -> None:
    # modulepreload fetches the modules at once instead of one level of imports after another;
    # a stale line would be a 404 on every page load
    index = (ui_directory() / "index.html").read_text()
    preloaded = sorted(re.findall(r'<link rel="modulepreload" href="/ui/([^"]+)">', index))
    modules = sorted(name for name in UI_FILES if name.endswith(".js") and name != "app.js")
    assert preloaded == modules
    assert '<script type="module" src="/ui/app.js"></script>' in index
