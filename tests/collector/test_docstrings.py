"""The examples in the collector's docstrings run and show what they say."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

MODULES = [
    "tomograph.collector",
    "tomograph.collector.annotation_query",
    "tomograph.collector.api",
    "tomograph.collector.app",
    "tomograph.collector.dependencies",
    "tomograph.collector.ingest",
    "tomograph.collector.normalize",
    "tomograph.collector.otlp",
    "tomograph.collector.params",
    "tomograph.collector.settings",
    "tomograph.collector.sqlite_store",
    "tomograph.collector.storage",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_docstring_examples(name)
