"""The trace analyses in a real headless chromium, against a real ``tomograph serve``.

The critical path and clock-skew marks in the waterfall, two traces compared as one merged tree,
and trace files (Zipkin v2 JSON, OTLP/JSON) opened without being stored. Screenshots go to
``test-artifacts/collector-<feature>.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn", reason="the collector extra is not installed")
pytest.importorskip("playwright", reason="playwright is a test dependency")

from tests.support.browser import accessibility_violations, post_spans, shot
from tests.support.collector import DEMO_WATERFALL, http, running_collector
from tests.support.servers import REPO_ROOT

from tomograph.demo import run_demo
from tomograph.encoding import zipkin_json

pytestmark = [pytest.mark.integration, pytest.mark.browser]

FIXTURES = REPO_ROOT / "tests" / "ui" / "fixtures"
NOW = int(time.time() * 1_000_000)
HOST_A = {"serviceName": "frontend", "ipv4": "10.0.0.1"}
HOST_B = {"serviceName": "backend", "ipv4": "10.0.0.2"}
SKEWED = "5ce0000000000001"
COMPARE_A = "c0a0000000000001"
COMPARE_B = "c0b0000000000001"
XSS = '<img src=x onerror="window.__xss=1">'


def span(trace_id: str, span_id: str, name: str, at: int, duration: int, **fields: Any) -> Any:
    return {
        "traceId": trace_id,
        "id": span_id,
        "name": name,
        "timestamp": NOW + at,
        "duration": duration,
        **fields,
    }


def skewed_trace() -> list[Any]:
    # the backend's clock is 30ms behind: its server span seems to start before the client's
    return [
        span(SKEWED, "a000000000000001", "checkout", 0, 100_000, localEndpoint=HOST_A),
        span(
            SKEWED,
            "a000000000000002",
            "get /stock",
            10_000,
            60_000,
            parentId="a000000000000001",
            kind="CLIENT",
            localEndpoint=HOST_A,
        ),
        span(
            SKEWED,
            "a000000000000002",
            "get /stock",
            -15_000,
            40_000,
            parentId="a000000000000001",
            kind="SERVER",
            shared=True,
            localEndpoint=HOST_B,
        ),
        span(
            SKEWED,
            "a000000000000003",
            "select stock",
            -10_000,
            30_000,
            parentId="a000000000000002",
            localEndpoint=HOST_B,
        ),
    ]


def endpoint_trace(trace_id: str, cache: bool, query_ms: int) -> list[Any]:
    root = trace_id[:3] + "0000000000001"
    spans = [
        span(
            trace_id,
            root,
            "get /cart",
            0,
            50_000 + query_ms * 1000,
            kind="SERVER",
            localEndpoint=HOST_A,
        ),
        span(
            trace_id,
            root[:-1] + "2",
            "select cart",
            2_000,
            query_ms * 1000,
            parentId=root,
            kind="CLIENT",
            localEndpoint=HOST_A,
            remoteEndpoint={"serviceName": "db"},
        ),
    ]
    if cache:
        spans.append(
            span(
                trace_id,
                root[:-1] + "3",
                "cache get",
                1_000,
                500,
                parentId=root,
                localEndpoint=HOST_A,
            )
        )
    return spans


def wait_for_trace(url: str, trace_id: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body = http("GET", f"{url}/api/v2/trace/{trace_id}")
        if status == 200 and len(json.loads(body)) == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"trace {trace_id} was not stored")


@pytest.fixture(scope="module")
def demo_spans() -> list[Any]:
    memory, _ = run_demo()
    spans: list[Any] = json.loads(zipkin_json.encode_spans(memory.spans))
    return spans


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory, demo_spans: list[Any]) -> Iterator[str]:
    with running_collector(tmp_path_factory.mktemp("ui-analysis")) as url:
        post_spans(url, demo_spans)
        post_spans(url, skewed_trace())
        post_spans(url, endpoint_trace(COMPARE_A, cache=False, query_ms=5))
        post_spans(url, endpoint_trace(COMPARE_B, cache=True, query_ms=40))
        for trace_id, count in (
            (demo_spans[0]["traceId"], 5),
            (SKEWED, 4),
            (COMPARE_A, 2),
            (COMPARE_B, 3),
        ):
            wait_for_trace(url, trace_id, count)
        yield url


def bar_box(page: Any, name: str, nth: int = 0) -> Any:
    return page.locator(".wf-row", has_text=name).nth(nth).locator(".lane .bar").bounding_box()


def test_the_critical_path_is_highlighted_in_the_waterfall(
    collector: str, page: Any, demo_spans: list[Any]
) -> None:
    page.goto(f"{collector}/#/trace/{demo_spans[0]['traceId']}")
    page.wait_for_selector(".wf-row")
    critical = page.locator(".wf-row.mark-critical .span-name").all_inner_texts()
    # the server worked in sequence: the cart (with its query), then the card
    for name in ("get /checkout", "load cart", "select cart_items", "charge card"):
        assert name in critical, (name, critical)
    # each row on the path has dark stretches over its bar, inside the bar
    charge = page.locator(".wf-row", has_text="charge card")
    stretch = charge.locator(".lane .critical").first.bounding_box()
    bar = charge.locator(".lane .bar").bounding_box()
    assert (
        bar["x"] - 1 <= stretch["x"]
        and stretch["x"] + stretch["width"] <= bar["x"] + bar["width"] + 1
    )
    assert "critical path" in charge.locator(".lane .critical").first.get_attribute("title")
    shot(page, "critical-path")


def test_a_skewed_server_span_is_shown_inside_its_client_and_marked_adjusted(
    collector: str, page: Any
) -> None:
    page.goto(f"{collector}/#/trace/{SKEWED}")
    page.wait_for_selector(".wf-row")
    rows = page.locator(".wf-row")
    assert rows.count() == 4
    client, server = rows.nth(1), rows.nth(2)
    assert server.locator(".badge.adjusted").count() == 1
    assert client.locator(".badge.adjusted").count() == 0
    assert "clock skew" in server.locator(".badge.adjusted").get_attribute("title")
    assert rows.nth(3).locator(".badge.adjusted").count() == 1, "the server's own query moved too"
    client_bar = client.locator(".lane .bar").bounding_box()
    server_bar = server.locator(".lane .bar").bounding_box()
    assert client_bar["x"] < server_bar["x"]
    assert server_bar["x"] + server_bar["width"] < client_bar["x"] + client_bar["width"]
    assert "2 spans adjusted" in page.inner_text("#t-facts")
    shot(page, "clock-skew")
    # the stored spans are as sent
    status, body = http("GET", f"{collector}/api/v2/trace/{SKEWED}")
    assert status == 200
    stored = [s for s in json.loads(body) if s.get("kind") == "SERVER"]
    assert stored[0]["timestamp"] == NOW - 15_000


def test_two_traces_of_one_endpoint_compare_as_one_tree(collector: str, page: Any) -> None:
    page.goto(f"{collector}/#/trace/{COMPARE_A}")
    page.click("#t-compare")
    page.wait_for_selector("#compare-candidates .trace-row")
    candidates = page.locator("#compare-candidates .trace-row")
    assert candidates.count() == 1, "only the other trace of get /cart is offered"
    candidates.first.click()
    page.wait_for_selector("#compare-tree .cmp-row:not(.cmp-header)")
    assert f"b={COMPARE_B}" in page.url
    rows = page.locator("#compare-tree .cmp-row:not(.cmp-header)")
    texts = [" ".join(row.split()) for row in rows.all_inner_texts()]
    assert len(texts) == 3, texts
    cache = page.locator(".cmp-row", has_text="cache get")
    assert "only in B" in cache.inner_text()
    assert cache.locator(".chg.only").count() == 1
    assert cache.locator(".cmp-lane.empty-lane").count() == 1, "A's side is empty"
    query = page.locator(".cmp-row", has_text="select cart")
    change = query.locator(".chg")
    assert "slower" in (change.get_attribute("class") or "")
    assert "+35.0ms" in change.inner_text() and "(+700%)" in change.inner_text()
    facts = page.inner_text("#c-facts")
    assert "Only in B\n1" in facts or "Only in B 1" in " ".join(facts.split())
    shot(page, "compare")


def test_compare_says_what_is_wrong_with_its_ids(collector: str, page: Any) -> None:
    page.goto(f"{collector}/#/compare?a=nothex&b={COMPARE_B}")
    page.wait_for_selector("#compare-status.error")
    assert "not a trace id" in page.inner_text("#compare-status")
    page.goto(f"{collector}/#/compare?a=00000000000000ff&b={COMPARE_B}")
    page.wait_for_selector("#compare-status.error")
    assert "00000000000000ff not found" in page.inner_text("#compare-status")


def open_file(page: Any, collector: str, path: Path) -> None:
    page.goto(f"{collector}/#/upload")
    page.set_input_files("#u-file", str(path))


def test_an_otlp_file_opens_in_the_trace_view_without_being_stored(
    collector: str, page: Any
) -> None:
    document = json.loads((FIXTURES / "demo-otlp-base64.json").read_text())
    open_file(page, collector, FIXTURES / "demo-otlp-base64.json")
    page.wait_for_selector(".wf-row")
    names = page.locator(".wf-row .span-name").all_inner_texts()
    assert names == DEMO_WATERFALL
    assert page.locator(".wf-row.error .span-name").all_inner_texts() == ["charge card"]
    assert "demo-otlp-base64.json" in page.inner_text("#t-title")
    assert page.locator("#t-compare").count() == 0, "a trace from a file is not in the collector"
    assert page.locator(".wf-row.mark-critical").count() >= 4
    shot(page, "upload-otlp")
    trace_id = json.loads((FIXTURES / "demo-otlp-decoded.json").read_text())[0]["traceId"]
    assert document["resourceSpans"], "the file is OTLP/JSON"
    status, _ = http("GET", f"{collector}/api/v2/trace/{trace_id}")
    assert status == 404, "the file's spans were not sent to the collector"


def test_a_zipkin_file_with_several_traces_offers_a_choice_and_shows_names_as_text(
    collector: str, page: Any, tmp_path: Path
) -> None:
    hostile = endpoint_trace("f11e000000000001", cache=True, query_ms=3)
    hostile[2]["name"] = XSS
    hostile[2]["tags"] = {"error": XSS}
    other = endpoint_trace("f11e000000000002", cache=False, query_ms=9)
    path = tmp_path / "shared-traces.json"
    path.write_text(json.dumps([hostile, other]))
    open_file(page, collector, path)
    page.wait_for_selector(".upload-choice")
    assert page.locator(".upload-choice").count() == 2
    assert "holds 2 traces" in page.inner_text("#u-status")
    page.locator(".upload-choice").first.click()
    page.wait_for_selector(".wf-row")
    row = page.locator(".wf-row.error")
    assert row.locator(".span-name").inner_text() == XSS.lower()
    assert images_once_settled(page) == ["/ui/favicon.svg"]  # the brand, no planted one
    assert page.evaluate("window.__xss") is None
    row.click()
    assert XSS in page.inner_text("#details")
    assert images_once_settled(page) == ["/ui/favicon.svg"]
    assert page.evaluate("window.__xss") is None


def images_once_settled(page: Any) -> list[str]:
    """The src attributes of the document's images once each has loaded or failed (and its
    onerror, had it one, has run): right after drawing, a planted onerror has not fired yet."""
    return page.evaluate(
        """async () => {
            await Promise.all([...document.images].map((image) => image.complete ? null
                : new Promise((done) => {
                    image.addEventListener("load", done, { once: true });
                    image.addEventListener("error", done, { once: true });
                })));
            await new Promise((done) => setTimeout(done, 50));
            return [...document.images].map((image) => image.getAttribute("src"));
        }"""
    )


def test_a_bad_file_says_what_is_wrong(collector: str, page: Any, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps([{"traceId": "xyz", "id": "0000000000000001"}]))
    open_file(page, collector, path)
    page.wait_for_selector("#u-status.error")
    assert "broken.json: span 0: traceId must be 16 or 32 hex characters" in page.inner_text(
        "#u-status"
    )
    shot(page, "upload-error")
    other = tmp_path / "notes.json"
    other.write_text("not json")
    page.set_input_files("#u-file", str(other))
    page.wait_for_selector("#u-status.error:has-text('not JSON')")


def choices_offered(page: Any) -> None:
    page.set_input_files(
        "#u-file",
        files=[
            {
                "name": "two.json",
                "mimeType": "application/json",
                "buffer": json.dumps(
                    [
                        endpoint_trace("f11e000000000003", True, 1),
                        endpoint_trace("f11e000000000004", False, 2),
                    ]
                ).encode(),
            }
        ],
    )
    page.wait_for_selector(".upload-choice")


def file_refused(page: Any) -> None:
    page.set_input_files(
        "#u-file", files=[{"name": "bad.json", "mimeType": "application/json", "buffer": b"[1]"}]
    )
    page.wait_for_selector("#u-status.error")


PAGES: dict[str, tuple[str, Callable[[Any], None]]] = {
    "critical-path": ("/#/", lambda page: None),  # the path is set per test from the demo's id
    "clock-skew": (f"/#/trace/{SKEWED}", lambda page: page.wait_for_selector(".badge.adjusted")),
    "compare": (
        f"/#/compare?a={COMPARE_A}&b={COMPARE_B}",
        lambda page: page.wait_for_selector("#compare-tree .chg.only"),
    ),
    "compare-pick": (
        f"/#/compare?a={COMPARE_A}",
        lambda page: page.wait_for_selector("#compare-candidates .trace-row"),
    ),
    "compare-bad-id": (
        "/#/compare?a=zz",
        lambda page: page.wait_for_selector("#compare-status.error"),
    ),
    "upload": ("/#/upload", lambda page: page.wait_for_selector("#u-file")),
    "upload-choices": ("/#/upload", choices_offered),
    "upload-refused": ("/#/upload", file_refused),
}


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", list(PAGES))
def test_no_serious_or_critical_accessibility_violations(
    collector: str, browser: Any, demo_spans: list[Any], name: str, scheme: str
) -> None:
    path, ready = PAGES[name]
    if name == "critical-path":
        path = f"/#/trace/{demo_spans[0]['traceId']}"
        ready = lambda page: page.wait_for_selector(".lane .critical")  # noqa: E731
    assert accessibility_violations(browser, collector + path, ready, scheme=scheme) == []
