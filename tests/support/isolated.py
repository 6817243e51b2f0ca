"""Run a module of test cases in a pytest process of its own.

For cases that leave state in the interpreter that no teardown can remove: an eventlet hub on
the main thread, servers whose green threads cannot be stopped from another thread. Run in the
test process, they made later tests' ``socketserver`` shutdowns wait forever on locks that
eventlet's hub owned.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

from support.servers import REPO_ROOT


def run_cases_in_a_process_of_their_own(cases: Path) -> None:
    """Run the pytest cases in ``cases`` (a module not named ``test_*``); fail with their
    report unless every case passed."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(cases)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed(, \d+ warnings?)? in .*", summary), report


def run_script(script: str) -> str:
    """Run ``script`` (dedented) in a fresh interpreter, for cases that may crash or hang it or
    that need a first call nothing in this process made yet; its output, stripped. Fails with
    the script's error output unless it exits with 0."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()
