"""OpenTelemetry's own API tests, as published in the ``opentelemetry-api`` source distribution.

The sdist on PyPI ships the package's ``tests/`` folder. It is downloaded once with pip (the
client CI already installs the test extras with), checked against its SHA-256, and its tests are
unpacked into ``.deps/``: the project never keeps a copy of third-party files in the repository.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from support.servers import REPO_ROOT, in_ci

#: The API version whose tests are run; the expected results in the test module are for it.
VERSION = "1.45.1"
SDIST = f"opentelemetry_api-{VERSION}.tar.gz"
SDIST_SHA256 = "aa38ed19bcc084ba42782a73255b3582283eced7ad6dddbd6695189e69adfb75"
CACHE = REPO_ROOT / ".deps" / "opentelemetry-api-tests"


def _download(into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    sdist = into / SDIST
    if not sdist.exists():
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"),
                *("--no-binary", ":all:", "--dest", str(into)),
                f"opentelemetry-api=={VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0 or not sdist.exists():
            message = (
                f"cannot download the opentelemetry-api {VERSION} sdist: {done.stderr[-2000:]}"
            )
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != SDIST_SHA256:
        sdist.unlink()
        pytest.fail(f"{SDIST} has SHA-256 {digest}, not the pinned {SDIST_SHA256}")
    return sdist


def upstream_api_tests() -> Path:
    """The folder holding the unpacked ``tests`` package of opentelemetry-api ``VERSION``: run
    pytest with it as the working directory (the tests import ``tests.context...``)."""
    root = CACHE / VERSION
    marker = root / ".unpacked"
    if marker.exists():
        return root
    sdist = _download(CACHE)
    prefix = f"opentelemetry_api-{VERSION}/"
    with tarfile.open(sdist) as archive:
        members = [
            member
            for member in archive.getmembers()
            if member.name.startswith(prefix + "tests/") and member.isfile()
        ]
        for member in members:
            member.name = member.name.removeprefix(prefix)
        archive.extractall(root, members=members, filter="data")
    marker.touch()
    return root
