"""Run a check in a forked child process and get its verdict back through the exit status."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def in_child(check: Callable[[], bool], timeout: float = 60.0) -> int:
    """Fork; the child runs ``check`` and exits 0 if it is true (3 if false, 1 if it raised).

    The parent gets the child's exit code, killing the child if it runs longer than
    ``timeout`` seconds (then it raises AssertionError: a child that hangs is a failure).
    """
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 1
        try:
            status = 0 if check() else 3
        finally:
            os._exit(status)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung")
        time.sleep(0.02)
