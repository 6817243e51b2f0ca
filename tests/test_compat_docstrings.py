"""The examples in the docstrings of the OpenTracing, Tornado, eventlet and Scribe modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tomograph import config

MODULES = [
    "tomograph.tornado",
    "tomograph.tornado.propagators",
    "tomograph.tornado.reporters",
    "tomograph.eventlet.api",
    "tomograph.eventlet._applog",
    "tomograph.reporting.zipkin_thrift",
    "tomograph.reporting.scribe",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    finally:
        config.reset()
    assert result.failed == 0
    assert result.attempted > 0
