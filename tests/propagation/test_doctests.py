"""The examples in the propagation modules' docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib
from collections.abc import Iterator

import pytest

from tomograph import config

MODULES = [
    "tomograph.propagation",
    "tomograph.propagation.b3",
    "tomograph.propagation.baggage",
    "tomograph.propagation.carriers",
    "tomograph.propagation.composite",
    "tomograph.propagation.http",
    "tomograph.propagation.jaeger",
    "tomograph.propagation.w3c",
    "tomograph.propagation.xtraceinfo",
]


@pytest.fixture(autouse=True)
def _fresh_configuration() -> Iterator[None]:
    config.reset()
    yield
    config.reset()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
