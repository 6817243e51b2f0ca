"""The examples in tomograph.opentracing's docstrings run and show what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tomograph import config

MODULES = [
    "tomograph.opentracing",
    "tomograph.opentracing._span",
    "tomograph.opentracing._tracer",
    "tomograph.opentracing.binary",
    "tomograph.opentracing.scope_managers",
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
