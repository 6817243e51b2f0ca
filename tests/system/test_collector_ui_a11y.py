"""Accessibility: axe-core checks every page of the web UI, light and dark, in headless chromium.

No page may have a violation axe rates serious or critical (colour contrast, names of controls,
ARIA roles and states, keyboard reach of scrolled regions, ...). Each page is checked in the state
a user sees it: results listed, a span's details open, a search that found nothing, a missing
trace. A new page or state of the UI gets a line in PAGES.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")
pytest.importorskip("playwright", reason="playwright is a test dependency")

from tests.support.browser import accessibility_violations, big_trace, post_spans
from tests.support.collector import running_collector, send_demo_trace

pytestmark = [pytest.mark.integration, pytest.mark.browser]

BIG = "c" * 32


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_collector(tmp_path_factory.mktemp("ui-a11y")) as url:
        send_demo_trace(url)
        post_spans(url, big_trace(BIG, 2000, time.time_ns() // 1000 - 60_000_000))
        yield url


def search_results(page: Any) -> None:
    page.wait_for_selector(".trace-row")


def trace_with_details(page: Any) -> None:
    page.locator(".trace-row", has_text="demo-client").first.click()
    page.wait_for_selector(".wf-row")
    page.locator(".wf-row", has_text="charge card").click()
    page.wait_for_selector("#details:not([hidden])")


def big_trace_found(page: Any) -> None:
    page.wait_for_selector(".wf-row")
    page.fill("#t-find", "error")
    page.wait_for_selector(".wf-row.current-match")
    page.focus(".wf-rows")
    page.keyboard.press("ArrowDown")


def dependencies_details(page: Any) -> None:
    page.locator("svg .edge-label").first.click()
    page.wait_for_selector("#deps-details:not([hidden])")


def operation_histogram(page: Any) -> None:
    page.locator("#ops-table tr.op").first.click()
    page.locator(".histogram .bucket").first.click()
    page.wait_for_selector(".bucket-traces a")


PAGES: dict[str, tuple[str, Callable[[Any], None]]] = {
    "search": ("/#/", search_results),
    "search-nothing-found": (
        "/#/?serviceName=nobody",
        lambda page: page.wait_for_selector("#search-status:has-text('No traces')"),
    ),
    "trace-details": ("/#/", trace_with_details),
    "big-trace-find": (f"/#/trace/{BIG}", big_trace_found),
    "trace-not-found": (
        "/#/trace/0123456789abcdef",
        lambda page: page.wait_for_selector("#t-title:has-text('not found')"),
    ),
    "dependencies": ("/#/dependencies", lambda page: page.wait_for_selector("svg .node")),
    "operations": (
        "/#/operations?serviceName=demo-server",
        lambda page: page.wait_for_selector("#ops-table tbody tr"),
    ),
    "dependencies-details": ("/#/dependencies", dependencies_details),
    "operations-histogram": ("/#/operations?serviceName=demo-server", operation_histogram),
}


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", list(PAGES))
def test_no_serious_or_critical_accessibility_violations(
    collector: str, browser: Any, name: str, scheme: str
) -> None:
    path, ready = PAGES[name]
    assert accessibility_violations(browser, collector + path, ready, scheme=scheme) == []


def test_the_checker_finds_what_it_should(collector: str, browser: Any) -> None:
    # guards the test above against passing because axe did not run: a button with no name and
    # light grey text on white are a critical and a serious violation
    def spoilt(page: Any) -> None:
        page.wait_for_selector(".trace-row")
        page.evaluate(
            """() => {
                document.body.append(document.createElement("button"));
                const faint = document.createElement("p");
                faint.textContent = "faint";
                faint.style.color = "#ddd";
                faint.style.background = "#fff";
                document.body.append(faint);
            }"""
        )

    found = " ".join(accessibility_violations(browser, collector + "/#/", spoilt, scheme="light"))
    assert "button-name (critical)" in found
    assert "color-contrast (serious)" in found
