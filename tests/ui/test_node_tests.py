"""The UI's pure ES modules (``src/tomograph/ui/analysis``) tested by Node's own test runner.

Each ``tests/ui/*.test.mjs`` runs under ``node --test``; a failing JavaScript test fails here with
the runner's report. Under CI a missing Node is a failure, not a skip.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.support.servers import require

HERE = Path(__file__).parent
ANALYSIS = HERE.parents[1] / "src" / "tomograph" / "ui" / "analysis"
NODE_TESTS = sorted(HERE.glob("*.test.mjs"))


def test_every_analysis_module_has_node_tests() -> None:
    modules = sorted(path.stem for path in ANALYSIS.glob("*.js"))
    tested = {path.name.removesuffix(".test.mjs") for path in NODE_TESTS}
    assert [module for module in modules if module not in tested] == []


@pytest.mark.parametrize("test_file", NODE_TESTS, ids=lambda path: path.name)
def test_node_test_file_passes(test_file: Path) -> None:
    node = require("node", "Node.js runs the UI's JavaScript unit tests")
    done = subprocess.run(
        [node, "--test", "--test-reporter=tap", str(test_file)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=HERE,
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    assert "# fail 0" in report and "# pass 0" not in report, report
