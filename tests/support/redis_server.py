"""A private redis server for tests: Debian's redis-server on 127.0.0.1, a free port, no disk.

Used as the broker and result backend of the Celery tests.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.support.servers import BackgroundProcess, free_port, require


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(*options: str) -> Iterator[str]:
    """Start a throw-away redis server; yields its URL (``redis://127.0.0.1:PORT/0``).

    It keeps everything in memory (no snapshot, no append-only file) and is stopped, then
    killed if need be, when the block ends. ``options`` are more command-line options
    (``"--cluster-enabled", "yes"``); files they name are relative to a temporary directory.
    """
    binary = require("redis-server", "the broker of the Celery tests")
    with tempfile.TemporaryDirectory(prefix="tomograph-redis-") as directory:
        port = free_port()
        argv = [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
            *options,
        ]
        with BackgroundProcess(argv, Path(directory) / "redis.log") as server:
            deadline = time.monotonic() + 20
            while not _answers_ping(port):
                if server.process is not None and server.process.poll() is not None:
                    pytest.fail(f"redis-server exited: {server.output()[-2000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not answer on port {port}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
