"""The examples in the reporting modules' docstrings run and show what they say."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

MODULES = [
    "tomograph.reporting._http",
    "tomograph.reporting._url_options",
    "tomograph.reporting._zipkin_model",
    "tomograph.reporting.errors",
    "tomograph.reporting.otlp",
    "tomograph.reporting.stats",
    "tomograph.reporting.statsd",
    "tomograph.reporting.transport",
    "tomograph.reporting.zipkin",
    "tomograph.reporting.zipkin_json",
    "tomograph.reporting.zipkin_proto",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_docstring_examples(name)
