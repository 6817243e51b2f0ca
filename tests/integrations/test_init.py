"""patch_all(): every installed HTTP client traced once, with one span per request."""

from __future__ import annotations

import http.client
import importlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tests.integrations.http_client_checks import check_traced_request
from tests.support.http_recorder import RecordingServer

import tomograph
from tomograph import integrations
from tomograph.integrations import INTEGRATIONS, Integration, patch_all, select, unpatch_all
from tomograph.reporting.memory import MemoryBackend


def test_patch_all_gives_one_span_per_request_through_every_layer(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    original = http.client.HTTPConnection.request
    assert patch_all() == ["requests", "urllib3", "http.client", "httpx"]
    try:
        assert patch_all() == []
        with tomograph.span("parent") as parent:
            requests.get(f"{recorder.url}/layers")  # requests -> urllib3 -> http.client
        check_traced_request(memory, recorder, parent)
    finally:
        assert unpatch_all() == ["requests", "urllib3", "http.client", "httpx"]
    assert http.client.HTTPConnection.request is original


def test_patched_clients_do_not_trace_tomograph_delivering_spans() -> None:
    from tests.support.zipkin_server import RecordingZipkinServer

    from tomograph import config

    with RecordingZipkinServer() as zipkin:
        tomograph.configure(
            service="patched", backends=[f"zipkin+{zipkin.url}?interval=0.05"], environ={}
        )
        patch_all()
        try:
            with tomograph.span("user work"):
                pass
            assert tomograph.flush(5)
            spans = zipkin.wait_for(1, timeout=1.0)
            # Let the worker run a few more send intervals: nothing else may arrive.
            tomograph.flush(0.5)
        finally:
            unpatch_all()
            config.reset()
        assert [span["name"] for span in zipkin.spans] == ["user work"]
        assert len(spans) == 1


def test_suppress_tracing_silences_patched_clients(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    from tomograph.context import suppress_tracing

    patch_all()
    try:
        with tomograph.span("parent"), suppress_tracing():
            requests.get(f"{recorder.url}/health")
    finally:
        unpatch_all()
    assert memory.names() == ["parent"]
    assert "traceparent" not in recorder.requests[-1].headers


def test_logging_name_is_the_integration_whatever_the_import_order() -> None:
    import importlib

    import tomograph.integrations as package

    module = importlib.import_module("tomograph.integrations.logging")
    assert package.logging is module
    assert hasattr(package.logging, "install")


# -- the registry of patching integrations ------------------------------------------------------


@pytest.fixture
def fresh_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which integrations failed, so each test sees its own failures logged."""
    monkeypatch.setattr(integrations, "_failed", set())


@pytest.fixture
def modules_dir(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]
        importlib.invalidate_caches()


def fake_integration(
    monkeypatch: pytest.MonkeyPatch, folder: Path, name: str, integration_code: str
) -> Integration:
    """A library ``<name>_lib`` and its integration ``<name>_integration`` in ``folder``."""
    (folder / f"{name}_lib.py").write_text("CALLS = []\n")
    (folder / f"{name}_integration.py").write_text(integration_code)
    importlib.invalidate_caches()
    integration = Integration(name, f"{name}_lib", f"{name}_integration")
    monkeypatch.setitem(INTEGRATIONS, name, integration)
    return integration


PATCHING_INTEGRATION = """
import {library}

def patch():
    if "patched" in {library}.CALLS:
        return False
    {library}.CALLS.append("patched")
    return True

def unpatch():
    return False

def patched():
    return "patched" in {library}.CALLS
"""


def test_select_takes_every_default_integration_unless_named() -> None:
    names = [integration.name for integration in select()]
    assert "logging" not in names  # changes every log record: only when asked for
    assert {"requests", "urllib3", "http.client", "httpx", "sqlalchemy"} <= set(names)
    assert {"django", "flask", "starlette", "celery", "aiohttp", "redis"} <= set(names)
    assert {"psycopg", "psycopg2"} <= set(names)


def test_select_chooses_the_named_ones_less_the_disabled() -> None:
    chosen = select(["flask", "redis", "logging"], ["redis"])
    assert [integration.name for integration in chosen] == ["flask", "logging"]
    assert "celery" not in [integration.name for integration in select(None, ["celery"])]


def test_unknown_names_are_a_warning_naming_the_known_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tomograph"):
        chosen = select(["flask", "flsk"], ["celry"])
    assert [integration.name for integration in chosen] == ["flask"]
    [record] = caplog.records
    assert "unknown integration celry, flsk" in record.getMessage()
    assert "flask" in record.getMessage().split("known:")[1]


def test_every_integration_here_patches_unpatches_and_says_so() -> None:
    for name in ("requests", "urllib3", "http.client", "httpx", "sqlalchemy", "logging"):
        module = importlib.import_module(INTEGRATIONS[name].module)
        assert module.patched() is False, name
        assert integrations.patch(name) is True, name
        assert module.patched() is True, name
        assert integrations.patch(name) is False, name  # a second patch is a no-op
        assert module.unpatch() is True, name
        assert module.patched() is False, name


def test_patch_all_still_patches_the_http_clients_only() -> None:
    try:
        assert patch_all() == ["requests", "urllib3", "http.client", "httpx"]
        assert not importlib.import_module("tomograph.integrations.sqlalchemy").patched()
    finally:
        unpatch_all()


def test_a_failing_patch_is_logged_once_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
    modules_dir: Path,
    caplog: pytest.LogCaptureFixture,
    fresh_failures: None,
) -> None:
    fake_integration(
        monkeypatch, modules_dir, "failing", "def patch():\n    raise RuntimeError('boom')\n"
    )
    with caplog.at_level(logging.DEBUG, logger="tomograph"):
        assert integrations.patch("failing") is False
        assert integrations.patch("failing") is False
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "failing is not traced: failing_integration.patch() failed" in record.getMessage()
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


def test_a_missing_integration_module_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fresh_failures: None
) -> None:
    monkeypatch.setitem(INTEGRATIONS, "gone", Integration("gone", "json", "tomograph_gone"))
    with caplog.at_level(logging.DEBUG, logger="tomograph"):
        assert integrations.patch("gone") is False
        assert integrations.patch("gone") is False
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "gone is not traced: cannot import tomograph_gone" in record.getMessage()


def test_a_library_that_is_not_installed_is_only_a_debug_line(
    monkeypatch: pytest.MonkeyPatch,
    modules_dir: Path,
    caplog: pytest.LogCaptureFixture,
    fresh_failures: None,
) -> None:
    fake_integration(monkeypatch, modules_dir, "absent", "import absent_library_not_here\n")
    monkeypatch.setitem(
        INTEGRATIONS,
        "absent",
        Integration("absent", "absent_library_not_here", "absent_integration"),
    )
    with caplog.at_level(logging.DEBUG, logger="tomograph"):
        assert integrations.patch("absent") is False
    assert [record.levelno for record in caplog.records] == [logging.DEBUG]


def test_patch_when_imported_imports_nothing_and_patches_on_first_import(
    monkeypatch: pytest.MonkeyPatch, modules_dir: Path, fresh_failures: None
) -> None:
    integration = fake_integration(
        monkeypatch, modules_dir, "lazy", PATCHING_INTEGRATION.format(library="lazy_lib")
    )
    integrations.patch_when_imported([integration])
    assert "lazy_lib" not in sys.modules
    assert "lazy_integration" not in sys.modules
    library = importlib.import_module("lazy_lib")
    assert library.CALLS == ["patched"]


def test_a_library_already_imported_is_patched_at_once(
    monkeypatch: pytest.MonkeyPatch, modules_dir: Path, fresh_failures: None
) -> None:
    integration = fake_integration(
        monkeypatch, modules_dir, "early", PATCHING_INTEGRATION.format(library="early_lib")
    )
    library = importlib.import_module("early_lib")
    integrations.patch_when_imported([integration])
    assert library.CALLS == ["patched"]


def test_a_failing_patch_at_import_leaves_the_import_working(
    monkeypatch: pytest.MonkeyPatch,
    modules_dir: Path,
    caplog: pytest.LogCaptureFixture,
    fresh_failures: None,
) -> None:
    integration = fake_integration(
        monkeypatch, modules_dir, "bad", "def patch():\n    raise RuntimeError('boom')\n"
    )
    integrations.patch_when_imported([integration])
    with caplog.at_level(logging.WARNING, logger="tomograph"):
        library = importlib.import_module("bad_lib")
    assert library.CALLS == []
    assert len(caplog.records) == 1


def test_http_client_is_patched_once_urllib_request_is_whole(tmp_path: Path) -> None:
    # urllib.request imports http.client half-way through its own code; the integration
    # imports urllib.request: it must wait for that import to end, then patch.
    program = (
        "import tomograph.integrations as i\n"
        "i.patch_when_imported([i.INTEGRATIONS['http.client']])\n"
        "import urllib.request\n"
        "import tomograph.integrations.urllib as u\n"
        "print(u.patched())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.stdout, result.stderr) == ("True\n", "")


def test_a_program_importing_the_integration_itself_gets_its_library_patched(
    monkeypatch: pytest.MonkeyPatch,
    modules_dir: Path,
    caplog: pytest.LogCaptureFixture,
    fresh_failures: None,
) -> None:
    # The library's import ends half-way through the integration's: patch once that ends.
    integration = fake_integration(
        monkeypatch, modules_dir, "own", PATCHING_INTEGRATION.format(library="own_lib")
    )
    integrations.patch_when_imported([integration])
    with caplog.at_level(logging.WARNING, logger="tomograph"):
        importlib.import_module("own_integration")
    assert importlib.import_module("own_lib").CALLS == ["patched"]
    assert caplog.records == []
