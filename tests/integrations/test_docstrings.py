"""The examples in the client, SQLAlchemy and logging integrations' docstrings run."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

MODULES = [
    "tomograph.integrations.httpx",
    "tomograph.integrations.logging",
    "tomograph.integrations.requests",
    "tomograph.integrations.sqlalchemy",
    "tomograph.integrations.urllib",
    "tomograph.integrations.urllib3",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_docstring_examples(name)
