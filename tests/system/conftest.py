"""The browser the web UI tests drive, and its tabs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.support.browser import Tab, chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, for the tests of one module."""
    with chromium() as browser:
        yield browser


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """A fresh tab of 1400x900 pixels; the test fails on a JavaScript error or a dialog."""
    with Tab(browser) as opened:
        yield opened


@pytest.fixture
def page(tab: Tab) -> Any:
    """The page of ``tab``."""
    return tab.page
