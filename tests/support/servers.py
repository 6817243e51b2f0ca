"""Start and stop real servers for integration tests; loopback only.

Under CI (``CI=true``) a missing server program is a failure, never a skip: installing it is part
of ``make test`` (scripts/install-system-deps.sh).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The shared folder beside the checkout (Zipkin's API spec and proto files live there).
SHARED = REPO_ROOT.parent / "shared"
#: Where npm packages for tests are installed by scripts/install-system-deps.sh.
NPM_PREFIX = REPO_ROOT / ".deps" / "npm"


def in_ci() -> bool:
    """True when running under CI, where nothing may be skipped for want of a server."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path_or_command: str, why: str) -> str:
    """The full path of a program or file the test needs; skip locally, fail under CI."""
    found = path_or_command if Path(path_or_command).exists() else None
    found = found or shutil.which(path_or_command)
    if found is None:
        message = f"{path_or_command} is not installed ({why}); run scripts/install-system-deps.sh"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port on 127.0.0.1 that was free a moment ago (TCP by default, SOCK_DGRAM for UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    """Wait until a TCP server accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


@contextmanager
def never_answering_server() -> Iterator[str]:
    """``http://127.0.0.1:port`` of a server that accepts connections and never answers.

    The kernel completes the handshakes (a listening socket with a backlog) and buffers what
    clients send; nothing ever reads it or writes back, as with a hung collector.
    """
    with socket.create_server(("127.0.0.1", 0), backlog=128) as listener:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


class BackgroundProcess:
    """A subprocess that is terminated (then killed) when the ``with`` block ends.

    Its output goes to a log file that is printed if the test needs it (``.output()``).
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BackgroundProcess:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def output(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace")

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@contextmanager
def process_group(
    argv: Sequence[str], log: Path, cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in a session of its own, output to ``log``: nothing it forked outlives the block
    (the whole group is killed when it ends)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


def group_alive(group: int) -> bool:
    """True while any process of the process group ``group`` is alive."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
