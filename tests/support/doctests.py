"""Run a module's docstring examples as a test (with a fresh default tracer around them)."""

from __future__ import annotations

import doctest
import importlib

from tomograph import config


def check_docstring_examples(module_name: str) -> None:
    """Fail unless ``module_name`` has docstring examples and every one shows what it says.

    >>> check_docstring_examples("tomograph.reporting.stats")
    """
    module = importlib.import_module(module_name)
    config.reset()
    try:
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    finally:
        config.reset()
    assert result.failed == 0, f"{result.failed} failing example(s) in {module_name}"
    assert result.attempted > 0, f"{module_name} has no docstring examples"
