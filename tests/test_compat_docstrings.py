"""The examples in the docstrings of the OpenTracing, Tornado, eventlet and Scribe modules run."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

MODULES = [
    "tomograph.tornado",
    "tomograph.tornado.propagators",
    "tomograph.tornado.reporters",
    "tomograph.eventlet.api",
    "tomograph.eventlet._applog",
    "tomograph.reporting.zipkin_thrift",
    "tomograph.reporting.scribe",
    "tomograph._sampling_override",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_docstring_examples(name)
