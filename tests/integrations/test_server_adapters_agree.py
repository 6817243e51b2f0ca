"""Every HTTP server adapter records the same span for the same request (server_adapters_agree.py).

The cases run in a pytest process of their own: the eventlet, Tornado and uvicorn servers they
start in this interpreter leave state behind that made a later test's ``socketserver`` shutdown
wait forever on a lock that eventlet's hub owned. A process per run keeps every other test
independent of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.servers import REPO_ROOT

CASES = Path(__file__).with_name("server_adapters_agree.py")


def test_every_adapter_records_the_same_span() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout, done.stdout[-2000:]
