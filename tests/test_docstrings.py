"""The examples in the core modules' docstrings run and show what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

from tomograph import config

CORE_MODULES = [
    "tomograph",
    "tomograph.classic",
    "tomograph.config",
    "tomograph.context",
    "tomograph.errors",
    "tomograph.ids",
    "tomograph.model",
    "tomograph.sampling",
    "tomograph.span",
    "tomograph.tracer",
    "tomograph.reporting.log",
    "tomograph.reporting.memory",
]


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    finally:
        config.reset()
    assert result.failed == 0


def test_every_public_name_is_documented() -> None:
    import tomograph

    undocumented = [
        name
        for name in tomograph.__all__
        if not name.startswith("__") and not (getattr(tomograph, name).__doc__ or "").strip()
    ]
    assert undocumented == []
