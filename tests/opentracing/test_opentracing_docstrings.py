"""The examples in tomograph.opentracing's docstrings run and show what they say."""

from __future__ import annotations

import pytest
from tests.support.doctests import check_docstring_examples

MODULES = [
    "tomograph.opentracing",
    "tomograph.opentracing._span",
    "tomograph.opentracing._tracer",
    "tomograph.opentracing.binary",
    "tomograph.opentracing.scope_managers",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_docstring_examples(name)
