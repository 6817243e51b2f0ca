"""Running programs under ``tomograph run`` in tests: the command, a clean environment, a Zipkin
endpoint and a downstream service to record what the programs send, and pre-fork servers
driven until every worker answered."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.http_recorder import RecordingServer, recording_server
from support.zipkin_server import RecordingZipkinServer

BIN = Path(sys.executable).parent
TOMOGRAPH = str(BIN / "tomograph")
PYTHON = sys.executable
#: The batch interval of the programs' Zipkin backends; the waits below are deadlines.
INTERVAL = 0.1
ARRIVAL_DEADLINE = 20.0
RUN_DEADLINE = 60.0


def zipkin_url(zipkin: RecordingZipkinServer) -> str:
    """The backend URL of ``zipkin`` for the programs, with the short batch interval."""
    return f"zipkin+{zipkin.url}?interval={INTERVAL}"


def environment(**variables: str) -> dict[str, str]:
    """This environment without any TOMOGRAPH_ or OTEL_ variable or PYTHONPATH of the test run's
    own, plus ``variables``."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TOMOGRAPH_", "OTEL_")) and name != "PYTHONPATH"
    }
    return {**kept, **variables}


def run_python(
    program: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    timeout: float = RUN_DEADLINE,
) -> subprocess.CompletedProcess[str]:
    """``program`` (dedented) in a fresh interpreter with ``args``, in :func:`environment` unless
    ``env`` is given, to its end; its output captured as text."""
    return subprocess.run(
        [PYTHON, "-c", textwrap.dedent(program), *args],
        cwd=cwd,
        env=environment() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float = RUN_DEADLINE
) -> subprocess.CompletedProcess[str]:
    """``tomograph run ARGV`` to its end, its output captured as text."""
    return subprocess.run(
        [TOMOGRAPH, "run", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def zipkin_and_downstream() -> Iterator[tuple[RecordingZipkinServer, RecordingServer]]:
    """A Zipkin endpoint for the spans and a downstream HTTP service for the programs to call."""
    with RecordingZipkinServer() as zipkin, recording_server() as downstream:
        yield zipkin, downstream


def serve_until_every_worker_answered(port: int, workers: int, path: str = "/") -> set[str]:
    """Send concurrent requests until ``workers`` different processes answered; their pids."""
    answered: set[str] = set()
    deadline = time.monotonic() + RUN_DEADLINE

    def get(_: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return str(response.read().decode())

    with ThreadPoolExecutor(8) as pool:
        while len(answered) < workers:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(answered)} of {workers} workers answered")
            answered.update(pool.map(get, range(16)))
    return answered
