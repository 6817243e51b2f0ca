"""The dependency graph and the operations page in a real chromium, against ``tomograph serve``.

The graph: edge labels that never overlap (the reported "80 (9 err)" over "1"), a colour per
service, a click on a service or a link that leads to its traces, a time window. Operations:
client and server spans of one name apart, sortable columns, the busiest service first, a latency
histogram whose buckets list their traces. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")
pytest.importorskip("playwright", reason="playwright is a test dependency")

from tests.support.browser import post_spans, shot
from tests.support.collector import make_span, now_us, running_collector, send_demo_trace

pytestmark = [pytest.mark.integration, pytest.mark.browser]

HOSTILE = '<img src=x onerror="window.pwned=1">'
#: (caller, callee, calls, failed calls): "frontend -> shop" and its way back are the labels that
#: printed over each other; five services call "db", so their edges converge there
LINKS = [
    ("frontend", "shop", 80, 9),
    ("shop", "frontend", 1, 0),
    ("shop", "db", 30, 0),
    ("inventory", "db", 12, 0),
    ("payments", "db", 5, 2),
    ("auth", "db", 7, 0),
    ("frontend", "auth", 7, 0),
    ("shop", "inventory", 12, 0),
    ("shop", "payments", 5, 1),
    (HOSTILE, "db", 2, 0),
]


def rpc_spans(number: int, caller: str, callee: str, failed: bool, start: int) -> list[Any]:
    trace_id = f"{number + 1:032x}"
    return [
        make_span(
            trace_id,
            "1" * 16,
            name="call",
            service=caller,
            remote=callee,
            kind="CLIENT",
            timestamp=start,
            duration=900,
            tags={"error": "refused"} if failed else None,
        ),
        make_span(
            trace_id,
            "1" * 16,
            name="call",
            service=callee,
            kind="SERVER",
            timestamp=start + 10,
            duration=800,
            shared=True,
        ),
    ]


def cart_spans(start: int) -> list[Any]:
    """14 calls of shop's "get /cart" as a server and 14 as a client (durations 1 ms to 100 ms)."""
    spans = []
    for i in range(14):
        trace_id = f"{0xCA000 + i:032x}"
        spans.append(
            make_span(
                trace_id,
                "2" * 16,
                name="GET /cart",
                service="shop",
                kind="SERVER",
                timestamp=start - i * 60_000_000,
                duration=1000 * (1 + i * i // 2),
                tags={"error": "500"} if i % 5 == 0 else None,
            )
        )
        spans.append(
            make_span(
                trace_id,
                "3" * 16,
                parent_id="2" * 16,
                name="GET /cart",
                service="shop",
                kind="CLIENT",
                timestamp=start - i * 60_000_000 + 100,
                duration=500,
            )
        )
    return spans


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_collector(tmp_path_factory.mktemp("ui-graphs")) as url:
        send_demo_trace(url)
        start = now_us() - 5_000_000
        spans: list[Any] = []
        number = 0
        for caller, callee, calls, failed in LINKS:
            for call in range(calls):
                spans += rpc_spans(number, caller, callee, call < failed, start - number * 1000)
                number += 1
        spans += cart_spans(start)
        for name, duration in (("", 3000), (HOSTILE, 4000)):  # odd span names of shop
            spans.append(
                make_span("f" * 32, "4" * 16, name=name, service="shop", duration=duration)
            )
        post_spans(url, spans)
        yield url


def boxes(page: Any, selector: str) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        selector,
        """items => items.map(item => {
            const r = item.getBoundingClientRect();
            return {text: item.textContent, x: r.x, y: r.y, w: r.width, h: r.height};
        })""",
    )


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return min(a["x"] + a["w"], b["x"] + b["w"]) > max(a["x"], b["x"]) and min(
        a["y"] + a["h"], b["y"] + b["h"]
    ) > max(a["y"], b["y"])


def open_graph(page: Any, url: str, route: str = "/#/dependencies") -> None:
    page.goto(url + route)
    page.wait_for_selector("svg .node")


def test_graph_edge_labels_overlap_neither_each_other_nor_services(
    collector: str, page: Any
) -> None:
    open_graph(page, collector)
    labels = boxes(page, "svg .edge-label")
    texts = sorted(label["text"] for label in labels)
    assert "80 (9 err)" in texts and "1" in texts and "5 (2 err)" in texts
    nodes = boxes(page, "svg .node .node-box")
    for i, label in enumerate(labels):
        for other in labels[i + 1 :]:
            assert not overlap(label, other), (label, other)
        for node in nodes:
            assert not overlap(label, node), (label, node)
    shot(page, "dependencies-labels")


def test_graph_services_have_distinct_colours(collector: str, page: Any) -> None:
    open_graph(page, collector)
    colours = page.eval_on_selector_all(
        "svg .node",
        """nodes => nodes.map(
            n => [n.dataset.service, n.querySelector('.node-box').getAttribute('stroke')])""",
    )
    services = {service for service, _ in colours}
    assert {"demo-client", "demo-server", "payments", "sqlite", "shop", "db"} <= services
    assert len({colour for _, colour in colours}) == len(colours)


def test_a_service_with_markup_in_its_name_is_shown_as_text(collector: str, page: Any) -> None:
    open_graph(page, collector)
    node = page.locator("svg .node", has=page.locator(f"title:text-is('{HOSTILE}')"))
    assert node.count() == 1
    node.click()
    assert page.inner_text("#deps-details h2") == HOSTILE
    assert page.evaluate("window.pwned") is None
    assert page.locator("#view img").count() == 0


def test_a_click_on_a_link_shows_its_calls_and_leads_to_its_traces(
    collector: str, page: Any
) -> None:
    open_graph(page, collector)
    page.locator("svg .edge-label", has_text="80 (9 err)").click()
    details = page.locator("#deps-details")
    details.wait_for(state="visible")
    assert details.locator("h2").inner_text() == "frontend → shop"
    facts = details.locator("table").inner_text()
    assert re.search(r"Calls\s+80", facts) and re.search(r"Errors\s+9", facts)
    assert "11.3%" in facts
    # the other links dim; this one and its two services stay
    assert page.locator("svg .edge-group:not(.dim)").count() == 1
    assert page.locator("svg .edge-label:not(.dim)").all_text_contents() == ["80 (9 err)"]
    assert page.locator("svg .node:not(.dim)").count() == 2
    shot(page, "dependencies-link")

    details.get_by_role("link", name="Traces where frontend calls shop").click()
    page.wait_for_selector(".trace-row")
    assert "serviceName=frontend" in page.url and "remoteServiceName=shop" in page.url
    assert page.locator(".trace-row").count() == 10  # the search's default limit
    page.go_back()
    page.wait_for_selector("svg .node")


def test_a_click_on_a_service_shows_who_it_calls_and_who_calls_it(
    collector: str, page: Any
) -> None:
    open_graph(page, collector)
    page.locator("svg .node[data-service=db]").click()
    details = page.locator("#deps-details")
    assert details.locator("h2").inner_text() == "db"
    facts = details.locator("table").inner_text()
    assert re.search(r"Calls received\s+56", facts)  # 30 + 12 + 5 + 7 + 2
    assert re.search(r"Errors received\s+2", facts)
    callers = details.locator(".peer-list").first.inner_text()
    for caller in ("shop", "inventory", "payments", "auth", HOSTILE):
        assert caller in callers
    # a caller in the list selects that link
    details.locator(".peer", has_text="payments").click()
    assert details.locator("h2").inner_text() == "payments → db"
    shot(page, "dependencies-service")
    # keyboard: a service is a button
    page.locator("svg .node[data-service=shop]").focus()
    page.keyboard.press("Enter")
    assert details.locator("h2").inner_text() == "shop"


def test_the_graph_shows_the_chosen_time_window(collector: str, page: Any) -> None:
    open_graph(page, collector)
    page.fill("#d-end", "2020-01-02T00:00")
    page.select_option("#d-lookback", "3600000")
    page.click("#deps-form button[type=submit]")
    page.wait_for_selector("#deps-status:has-text('No calls')")
    assert "endTs=" in page.url and "lookback=3600000" in page.url
    assert page.locator("svg .node").count() == 0
    page.reload()  # the window is in the address
    page.wait_for_selector("#deps-status:has-text('No calls')")
    assert page.input_value("#d-end") == "2020-01-02T00:00"
    page.fill("#d-end", "")
    page.click("#deps-form button[type=submit]")
    page.wait_for_selector("svg .node")


def operations_rows(page: Any) -> list[tuple[str, str, str]]:
    return [
        (row.get_attribute("data-span-name"), row.get_attribute("data-kind"), row.inner_text())
        for row in page.locator("#ops-table tbody tr.op").all()
    ]


def test_operations_open_on_the_busiest_service_and_split_kinds(collector: str, page: Any) -> None:
    page.goto(collector + "/#/operations")
    page.wait_for_selector("#ops-table tbody tr.op")
    services = page.eval_on_selector_all("#o-service option", "o => o.map(x => x.value)")
    assert services[0] != "shop"  # not the first alphabetically: the one with the most calls
    assert page.input_value("#o-service") == "shop"
    assert "serviceName=shop" in page.url
    rows = {(name, kind): text for name, kind, text in operations_rows(page)}
    # a client and a server span of one name are two operations, 14 calls each, not one of 28
    assert "\t14\t" in rows[("get /cart", "server")]
    assert "\t14\t" in rows[("get /cart", "client")]
    assert "21.4%" in rows[("get /cart", "server")]  # 3 of 14 failed
    assert "0.0%" in rows[("get /cart", "client")]
    shot(page, "operations-kinds")


def test_operations_columns_sort(collector: str, page: Any) -> None:
    page.goto(collector + "/#/operations?serviceName=shop")
    page.wait_for_selector("#ops-table tbody tr.op")

    def column(key: str) -> list[str]:
        index = page.eval_on_selector_all(
            "#ops-table thead th", f"ths => ths.findIndex(th => th.dataset.key === '{key}')"
        )
        return [
            row.locator("td").nth(index).inner_text()
            for row in page.locator("#ops-table tbody tr.op").all()
        ]

    counts = [int(c) for c in column("count")]
    assert counts == sorted(counts, reverse=True)  # busiest first
    page.click("#ops-table th[data-key=spanName] button")
    assert page.get_attribute("#ops-table th[data-key=spanName]", "aria-sort") == "ascending"
    names = column("spanName")
    assert names == sorted(names)
    page.click("#ops-table th[data-key=errorRate] button")
    rates = [float(rate.rstrip("%")) for rate in column("errorRate")]
    assert rates == sorted(rates, reverse=True) and rates[0] > 0
    page.click("#ops-table th[data-key=errorRate] button")
    assert page.get_attribute("#ops-table th[data-key=errorRate]", "aria-sort") == "ascending"
    rates = [float(rate.rstrip("%")) for rate in column("errorRate")]
    assert rates == sorted(rates)


@pytest.mark.parametrize(("name", "shown"), [("", "(unnamed)"), (HOSTILE.lower(), HOSTILE.lower())])
def test_odd_span_names_are_text_and_open_their_histogram(
    collector: str, page: Any, name: str, shown: str
) -> None:
    page.goto(collector + "/#/operations?serviceName=shop")
    page.wait_for_selector("#ops-table tr.op")
    row = page.locator("#ops-table tr.op[data-kind=local]").filter(
        has=page.locator("button", has_text=re.compile(f"^{re.escape(shown)}$"))
    )
    assert row.get_attribute("data-span-name") == name
    row.click()
    page.wait_for_selector(".histogram .bucket")
    counts = page.eval_on_selector_all(".histogram .bucket", "b => b.map(x => +x.dataset.count)")
    assert sum(counts) == 1
    assert page.evaluate("window.pwned") is None
    assert page.locator("#view img").count() == 0


def test_a_histogram_bucket_lists_its_traces(collector: str, page: Any) -> None:
    page.goto(collector + "/#/operations?serviceName=shop")
    row = page.locator("#ops-table tr.op[data-span-name='get /cart'][data-kind=server]")
    row.click()
    page.wait_for_selector(".histogram .bucket")
    counts = page.eval_on_selector_all(".histogram .bucket", "b => b.map(x => +x.dataset.count)")
    assert sum(counts) == 14
    assert page.locator(".series svg path.line").count() == 3
    assert "p50" in page.inner_text(".percentile-marks")
    search = page.get_attribute(".op-links a >> nth=0", "href")
    assert "serviceName=shop" in search and "spanName=get+%2Fcart" in search
    # the slowest bucket: the spans of 85 ms and 92 ms (i = 13 and 12... durations 1 + i*i//2 ms)
    bucket = page.locator(".histogram .bucket").last
    low, high = int(bucket.get_attribute("data-low")), int(bucket.get_attribute("data-high"))
    bucket.click()
    listing = page.locator(".bucket-traces")
    listing.wait_for(state="visible")
    links = listing.locator("a[data-trace-id]")
    trace_ids = links.evaluate_all("a => a.map(x => x.dataset.traceId)")
    expected = {f"{0xCA000 + i:016x}" for i in range(14) if low <= 1000 * (1 + i * i // 2) < high}
    assert set(trace_ids) == expected and expected
    assert "null" not in listing.inner_text()
    shot(page, "operations-histogram")

    listing.locator("a.bucket-search").click()
    page.wait_for_selector(".trace-row")
    assert f"minDuration={low}" in page.url and f"maxDuration={high - 1}" in page.url
    found = page.eval_on_selector_all(".trace-row", "rows => rows.map(r => r.dataset.traceId)")
    assert {trace_id[-16:] for trace_id in found} == expected

    page.go_back()
    page.wait_for_selector("#ops-table tr.op")
    page.locator("#ops-table tr.op[data-span-name='get /cart'][data-kind=server]").click()
    page.locator(".histogram .bucket").last.click()
    page.locator(".bucket-traces a[data-trace-id]").first.click()
    page.wait_for_selector(".wf-row")
    assert "get /cart" in page.inner_text("#waterfall")
