"""The Django tests again on Django 4.2 LTS, the oldest Django supported.

The test extras install the newest Django; 4.2 is installed once into ``.deps/django42`` and
the in-process Django test files run in a pytest of their own with it first on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.servers import REPO_ROOT, in_ci

pytestmark = pytest.mark.integration

DJANGO_42 = REPO_ROOT / ".deps" / "django42"
PIP_INSTALL = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
TEST_FILES = ["tests/integrations/test_django.py", "tests/integrations/test_django_database.py"]


@pytest.fixture(scope="session")
def django42() -> Path:
    marker = DJANGO_42 / ".installed"
    if not marker.exists():
        # Django's own dependencies (asgiref, sqlparse) are the test extras' already.
        install = subprocess.run(
            [*PIP_INSTALL, "--target", str(DJANGO_42), "Django>=4.2,<5"],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if install.returncode != 0:
            message = f"cannot install Django 4.2: {install.stderr[-2000:]}"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        marker.touch()
    return DJANGO_42


def test_the_django_tests_pass_on_django_4_2(django42: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(django42), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "TOMOGRAPH_EXPECT_DJANGO": "4.2",
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *TEST_FILES],
        check=False,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, output
    assert " passed" in output
    assert "skipped" not in output, output
