"""The web UI in a real headless chromium (Playwright), against a real ``tomograph serve``.

From the search form to a trace: span names in the waterfall, the error highlighted, tags on
click, a collapsible tree; then the dependency graph and the operations table. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")
pytest.importorskip("playwright", reason="playwright is a test dependency")

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect
from tests.support.browser import Tab, shot
from tests.support.collector import (
    DEMO_WATERFALL,
    http,
    running_collector,
    send_demo_trace,
    send_spans,
)

from tomograph.collector.server import ui_link
from tomograph.demo import run_demo
from tomograph.encoding import zipkin_json
from tomograph.reporting.memory import MemoryBackend
from tomograph.tracer import Tracer

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_collector(tmp_path_factory.mktemp("ui")) as url:
        send_demo_trace(url)
        # and some quick traffic
        memory = MemoryBackend()
        tracer = Tracer("inventory", backends=[memory])
        for item in range(5):
            with tracer.span("GET /items", kind="server", tags={"http.method": "GET"}):
                with tracer.span("cache lookup", tags={"item": item}):
                    pass
        send_spans(url, memory.spans)
        yield url


def test_search_to_trace_waterfall(collector: str, page: Any) -> None:
    page.goto(collector + "/")
    page.wait_for_selector(".trace-row")
    assert page.locator(".trace-row").count() == 6
    shot(page, "search")

    page.select_option("#f-service", "demo-server")
    page.wait_for_selector("#f-span option >> nth=1", state="attached")
    page.fill("#f-query", "error")
    page.click("#f-submit")
    expect(page).to_have_url(re.compile("annotationQuery=error"))
    page.wait_for_selector(".trace-row.has-error")
    rows = page.locator(".trace-row")
    assert rows.count() == 1
    assert "demo-client: get /checkout" in rows.first.inner_text()
    assert "1 error" in rows.first.inner_text()

    rows.first.click()
    page.wait_for_selector(".wf-row")
    names = page.locator(".wf-row .span-name").all_inner_texts()
    assert names == DEMO_WATERFALL
    error_rows = page.locator(".wf-row.error .span-name").all_inner_texts()
    assert error_rows == ["charge card"]
    assert "demo-client: get /checkout" in page.inner_text("#t-title")

    page.locator(".wf-row", has_text="charge card").click()
    details = page.locator("#details")
    details.wait_for(state="visible")
    assert "charge card" in details.locator("h2").inner_text()
    error_tag = details.locator("tr.error-tag")
    assert error_tag.count() == 1
    assert "card declined" in error_tag.inner_text()
    assert "42.5" in details.inner_text()
    assert "payments" in details.inner_text()
    shot(page, "trace")

    # collapsing "load cart" hides its database query
    load_cart = page.locator(".wf-row", has_text="load cart")
    load_cart.locator(".toggle").click()
    assert page.locator(".wf-row", has_text="select cart_items").is_hidden()
    load_cart.locator(".toggle").click()
    assert page.locator(".wf-row", has_text="select cart_items").is_visible()


def test_trace_id_box_and_unknown_trace(collector: str, page: Any) -> None:
    page.goto(collector + "/")
    page.fill("#goto-id", "1234567890abcdef")
    page.press("#goto-id", "Enter")
    page.wait_for_selector("#t-title:has-text('not found')")


def test_duration_filter(collector: str, page: Any) -> None:
    page.goto(collector + "/#/?minDuration=3600000000&lookback=3600000")
    page.wait_for_selector("#search-status:has-text('No traces')")
    assert page.locator(".trace-row").count() == 0


def test_every_page_offers_the_same_time_ranges(collector: str, page: Any) -> None:
    offered, chosen = {}, {}
    for address, select in (
        ("/#/", "#f-lookback"),
        ("/#/dependencies", "#d-lookback"),
        ("/#/operations", "#o-lookback"),
    ):
        page.goto(collector + address)
        page.wait_for_selector(f"{select} option", state="attached")
        offered[select] = page.eval_on_selector_all(
            f"{select} option", "options => options.map((o) => [o.value, o.textContent])"
        )
        chosen[select] = page.input_value(select)
    ranges = [
        ["900000", "15 minutes"],
        ["3600000", "1 hour"],
        ["21600000", "6 hours"],
        ["86400000", "1 day"],
        ["604800000", "7 days"],
    ]
    assert offered == {
        "#f-lookback": [*ranges, ["custom", "custom…"]],
        "#d-lookback": ranges,
        "#o-lookback": ranges,
    }
    assert chosen == {"#f-lookback": "3600000", "#d-lookback": "86400000", "#o-lookback": "3600000"}


def test_dependency_graph(collector: str, page: Any) -> None:
    page.goto(collector + "/#/dependencies")
    page.wait_for_selector("svg .node")
    services = set(
        page.eval_on_selector_all("svg .node", "nodes => nodes.map(n => n.dataset.service)")
    )
    assert services == {"demo-client", "demo-server", "payments", "sqlite"}
    assert page.locator("svg .edge").count() == 3
    shot(page, "dependencies")


def test_operations_table(collector: str, page: Any) -> None:
    page.goto(collector + "/#/operations?serviceName=inventory")
    page.wait_for_selector("#ops-table tbody tr")
    rows = {
        row.get_attribute("data-span-name"): row.inner_text()
        for row in page.locator("#ops-table tbody tr").all()
    }
    assert set(rows) == {"get /items", "cache lookup"}
    assert "\t5\t" in rows["get /items"]
    assert "0.0%" in rows["get /items"]
    shot(page, "operations")


def test_encoded_spans_render_identically(collector: str, page: Any) -> None:
    # a trace posted as tomograph's Zipkin JSON shows every span it holds
    memory, _ = run_demo()
    trace_id = memory.spans[0].context.trace_id
    import urllib.request

    request = urllib.request.Request(
        collector + "/api/v2/spans",
        data=zipkin_json.encode_spans(memory.spans),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 202
    page.goto(f"{collector}/#/trace/{trace_id:032x}")
    page.wait_for_selector(".wf-row")
    assert page.locator(".wf-row").count() == len(memory.spans)


TOKEN = "ui-t0ken+/=%"  # characters a link must percent-encode


@pytest.fixture(scope="module")
def protected_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A collector started with --token, holding the demo trace sent with that token."""
    with running_collector(tmp_path_factory.mktemp("ui-token"), "--token", TOKEN) as url:
        send_demo_trace(url, token=TOKEN)
        yield url


def test_a_token_link_opens_a_protected_collector_without_a_prompt(
    protected_collector: str, tab: Tab
) -> None:
    page = tab.page
    page.goto(ui_link(protected_collector, "/", TOKEN))
    page.wait_for_selector(".trace-row")
    assert page.locator(".trace-row").count() == 1
    # the token left the address bar (and so the history) and stays for the session
    assert "token" not in page.url and page.url.endswith("/#/")
    assert page.evaluate("sessionStorage.getItem('tomograph.token')") == TOKEN

    page.locator(".trace-row").first.click()
    page.wait_for_selector(".wf-row")
    assert page.locator(".wf-row").count() == 5
    with page.expect_popup() as popup:  # the JSON link works without the API's 401
        page.click("#t-json")
    raw = popup.value
    raw.wait_for_load_state()
    assert json.loads(raw.inner_text("body"))[0]["traceId"] in page.url

    page.reload()  # a reload keeps the session's token
    page.wait_for_selector(".wf-row")
    assert tab.dialogs == []
    api = tab.api_requests()
    assert api and all(auth == f"Bearer {TOKEN}" for _, auth in api)
    assert not any("t0ken" in url for url, _ in tab.requests)  # never in a URL sent


def test_a_trace_link_with_a_token_keeps_its_route(protected_collector: str, tab: Tab) -> None:
    status, body = http(
        "GET", f"{protected_collector}/api/v2/traces", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200
    trace_id = json.loads(body)[0][0]["traceId"]
    tab.page.goto(ui_link(protected_collector, f"/trace/{trace_id}", TOKEN))
    tab.page.wait_for_selector(".wf-row")
    assert tab.page.url.endswith(f"/#/trace/{trace_id}")
    assert tab.dialogs == []


def test_the_ui_asks_for_the_token_of_a_protected_collector(
    protected_collector: str, browser: Any
) -> None:
    with Tab(browser, answers=[TOKEN]) as tab:
        tab.page.goto(protected_collector + "/")
        tab.page.wait_for_selector(".trace-row")
        assert len(tab.dialogs) == 1 and "needs an access token" in tab.dialogs[0]


def test_a_refused_token_is_asked_for_again(protected_collector: str, browser: Any) -> None:
    with Tab(browser, answers=[TOKEN]) as tab:
        tab.page.goto(ui_link(protected_collector, "/", "not-the-token"))
        tab.page.wait_for_selector(".trace-row")
        assert len(tab.dialogs) == 1 and "refused" in tab.dialogs[0]
        assert tab.page.evaluate("sessionStorage.getItem('tomograph.token')") == TOKEN


def test_the_empty_page_recommends_a_command_with_the_token(
    protected_collector: str, tab: Tab
) -> None:
    tab.page.goto(ui_link(protected_collector, "/?serviceName=nobody", TOKEN))
    tab.page.wait_for_selector("#search-status:has-text('No traces')")
    status = tab.page.inner_text("#search-status")
    assert f"tomograph demo --send {protected_collector} --token TOKEN" in status
    assert TOKEN not in status


def test_custom_time_range(collector: str, page: Any) -> None:
    import datetime

    page.goto(collector + "/")
    page.wait_for_selector(".trace-row")
    page.select_option("#f-lookback", "custom")
    assert page.is_visible("#f-from")
    fmt = "%Y-%m-%dT%H:%M"
    # a window in the past that holds nothing
    page.fill("#f-from", "2020-01-01T00:00")
    page.fill("#f-to", "2020-01-02T00:00")
    page.click("#f-submit")
    page.wait_for_selector("#search-status:has-text('No traces')")
    # a window around now finds every trace
    now = datetime.datetime.now()
    page.fill("#f-from", (now - datetime.timedelta(hours=1)).strftime(fmt))
    page.fill("#f-to", (now + datetime.timedelta(hours=1)).strftime(fmt))
    page.click("#f-submit")
    page.wait_for_selector(".trace-row >> nth=5")
    # a start after the end is refused in the form
    page.fill("#f-from", "2020-01-02T00:00")
    page.fill("#f-to", "2020-01-01T00:00")
    page.click("#f-submit")
    page.wait_for_selector("#search-status.error")


class HeldRequest:
    """Holds the first request to an API path until released; lets the others through."""

    def __init__(self, page: Any, path: str) -> None:
        self.route: Any = None
        self.settled: list[str] = []  # "finished" or the failure, once the page saw the end
        page.route(lambda url: urlsplit(url).path.startswith(path), self._hold)
        page.on("requestfinished", lambda request: self._settle(request, "finished"))
        page.on("requestfailed", lambda request: self._settle(request, request.failure))

    def _hold(self, route: Any) -> None:
        if self.route is None:
            self.route = route
        else:
            route.continue_()

    def _settle(self, request: Any, outcome: str) -> None:
        if self.route is not None and request == self.route.request:
            self.settled.append(outcome)

    def wait(self, page: Any, what: Callable[[], object]) -> None:
        deadline = time.monotonic() + 20
        while not what():
            assert time.monotonic() < deadline, "the page did not get this far"
            page.wait_for_timeout(20)  # lets Playwright deliver the page's events

    def release(self, page: Any) -> None:
        """Lets the request go on, and returns once whatever the page had waiting on it ran."""
        try:
            self.route.continue_()
        except PlaywrightError:  # the page cancelled it, as it should
            pass
        self.wait(page, lambda: self.settled)
        # what the page still had queued has run once it answers a round trip
        page.evaluate("() => new Promise((done) => setTimeout(done))")


# The search page has loaded all it loads: its traces and the suggestions for the tags field.
SEARCH_READY = (".trace-row", "#f-query-list option")

# (the page left, the API path held as it loads, the page opened, the mark of the new page ready)
LEFT_WHILE_LOADING = {
    "search": ("/#/", "/api/v2/services", "/#/dependencies", ("svg .node",)),
    "search-for-another-search": (
        "/#/?serviceName=inventory",
        "/api/v2/traces",
        "/#/?serviceName=demo-client",
        SEARCH_READY,
    ),
    "trace": ("/#/trace/0123456789abcdef", "/api/v2/trace/", "/#/", SEARCH_READY),
    "compare": ("/#/compare?a=0123456789abcdef", "/api/v2/trace/", "/#/", SEARCH_READY),
    "dependencies": (
        "/#/dependencies",
        "/api/v2/dependencies",
        "/#/operations?serviceName=inventory",
        ("#ops-table tbody tr",),
    ),
    "operations": ("/#/operations", "/api/v2/services", "/#/", SEARCH_READY),
    "operations-table": (
        "/#/operations?serviceName=inventory",
        "/api/v2/tomograph/operations",
        "/#/?serviceName=inventory",
        SEARCH_READY,
    ),
}


@pytest.mark.parametrize("left", list(LEFT_WHILE_LOADING))
def test_a_page_left_while_loading_stops_and_leaves_the_new_page_alone(
    collector: str, tab: Tab, left: str
) -> None:
    address, path, opened, ready = LEFT_WHILE_LOADING[left]
    page = tab.page
    held = HeldRequest(page, path)
    page.goto(collector + address)
    held.wait(page, lambda: held.route is not None)
    page.evaluate("(hash) => { location.hash = hash; }", opened.removeprefix("/"))
    for mark in ready:
        page.wait_for_selector(mark, state="attached")
    shown = page.inner_html("#view")
    held.release(page)
    assert page.inner_html("#view") == shown
    assert held.settled == ["net::ERR_ABORTED"], "leaving the page cancels its requests"
    assert tab.console_errors == []
    assert tab.errors == []


# (the page, its mark of ready, the API path the choice loads, the select, the choice left while
# it loads, the choice made, the mark of that choice's answer shown)
CHOSEN_AGAIN_WHILE_LOADING = {
    "operations": (
        "/#/operations?serviceName=inventory",
        ("#ops-table tbody tr",),
        "/api/v2/tomograph/operations",
        "#o-service",
        "demo-server",
        "demo-client",
        "#ops-status:has-text('1 operation of demo-client.')",
    ),
    "span-names": (
        "/#/",
        SEARCH_READY,
        "/api/v2/spans",
        "#f-service",
        "demo-server",
        "inventory",
        "#f-span option[value='get /items']",
    ),
}


@pytest.mark.parametrize("part", list(CHOSEN_AGAIN_WHILE_LOADING))
def test_the_answer_for_a_choice_already_replaced_is_not_shown(
    collector: str, tab: Tab, part: str
) -> None:
    address, ready, path, select, left, chosen, answered = CHOSEN_AGAIN_WHILE_LOADING[part]
    page = tab.page
    page.goto(collector + address)
    for mark in ready:
        page.wait_for_selector(mark, state="attached")
    held = HeldRequest(page, path)
    page.select_option(select, left)
    held.wait(page, lambda: held.route is not None)
    page.select_option(select, chosen)
    page.wait_for_selector(answered, state="attached")
    shown = page.inner_html("#view")
    held.release(page)
    assert held.settled == ["finished"]  # the old answer did arrive...
    assert page.inner_html("#view") == shown  # ...and was not shown
