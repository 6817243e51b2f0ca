"""Driving the collector's web UI in a real headless chromium (Playwright), and checking it.

``axe_violations`` runs axe-core (npm ``axe-core``, installed into ``.deps/npm`` by
scripts/install-system-deps.sh) in the page. It is injected as an init script, which the page's
Content-Security-Policy does not apply to, so the UI is checked with its CSP on.
"""

from __future__ import annotations

import json
import random
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.servers import NPM_PREFIX, REPO_ROOT, require

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a browser Playwright downloads)."""
    executable = require("/usr/bin/chromium", "the web UI tests drive a real browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A fresh browser context and page, which fails the test on a JavaScript error.

    ``answers`` are typed into the page's prompts, in order (a prompt beyond them is
    dismissed) and every dialog's message is kept in ``dialogs``; without ``answers`` a dialog
    fails the test. ``requests`` are the page's requests with their Authorization header, and
    ``console_errors`` what the page logged as errors (a failed resource load logs one too, so
    that is for a test to check). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        browser: Any,
        *,
        answers: list[str] | None = None,
        init_scripts: tuple[Path, ...] = (),
        **options: Any,
    ) -> None:
        options.setdefault("viewport", {"width": 1400, "height": 900})
        self.context = browser.new_context(**options)
        for script in init_scripts:
            self.context.add_init_script(path=str(script))
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[tuple[str, str | None]] = []
        self._expects_dialogs = answers is not None
        unanswered = list(answers or [])

        def answer(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            if unanswered:
                dialog.accept(unanswered.pop(0))
            else:
                dialog.dismiss()

        def console(message: Any) -> None:
            if message.type == "error":
                self.console_errors.append(message.text)

        self.page.on("dialog", answer)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", console)
        self.page.on(
            "request",
            lambda request: self.requests.append(
                (request.url, request.headers.get("authorization"))
            ),
        )

    def api_requests(self) -> list[tuple[str, str | None]]:
        """The requests to the collector's API, with their Authorization header."""
        return [(url, auth) for url, auth in self.requests if "/api/" in url]

    def close(self) -> None:
        """Closes the context; fails on a JavaScript error or a dialog nobody expected."""
        self.context.close()
        assert self.errors == [], f"JavaScript errors: {self.errors}"
        if not self._expects_dialogs:
            assert self.dialogs == [], f"unexpected dialogs: {self.dialogs}"

    def __enter__(self) -> Tab:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:  # the test's own failure says more than what the page did after it
            self.context.close()


def axe_script() -> Path:
    """axe-core's browser build."""
    return Path(require(str(NPM_PREFIX / "node_modules/axe-core/axe.min.js"), "npm axe-core"))


def axe_violations(page: Any, impacts: tuple[str, ...] = ("serious", "critical")) -> list[str]:
    """axe-core's violations of these impacts on the page as it is now, one line per node."""
    result = page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.target.join(" ") + ": " + n.failureSummary) }));
        }"""
    )
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at {node}"
        for violation in result
        if violation["impact"] in impacts
        for node in violation["nodes"]
    ]


def accessibility_violations(
    browser: Any, url: str, ready: Callable[[Any], object], *, scheme: str
) -> list[str]:
    """axe-core's serious and critical violations on ``url`` in this colour scheme, once
    ``ready(page)`` has brought the page to the state to check."""
    with Tab(
        browser,
        init_scripts=(axe_script(),),
        viewport={"width": 1280, "height": 900},
        color_scheme=scheme,
    ) as tab:
        tab.page.goto(url)
        ready(tab.page)
        return axe_violations(tab.page)


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """A screenshot in test-artifacts/collector-NAME.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"collector-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def post_spans(url: str, spans: list[dict[str, Any]], *, batch: int = 2000) -> None:
    """POSTs Zipkin v2 JSON spans to a collector, in batches under its body limit."""
    for first in range(0, len(spans), batch):
        request = urllib.request.Request(
            f"{url}/api/v2/spans",
            data=json.dumps(spans[first : first + batch]).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 202


SERVICES = [
    f"svc-{name}" for name in ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
]


def big_trace(trace_id: str, count: int, start_us: int, *, seed: int = 7) -> list[dict[str, Any]]:
    """A trace of ``count`` spans as a busy request makes: fan-out, depth up to 12, some errors.

    Span i's id is ``f"{i + 1:016x}"`` and its name ``op-{i}``; every 97th span has an
    ``error`` tag, every 10th a note; timestamps nest inside their parents.
    """
    rng = random.Random(seed)
    spans: list[dict[str, Any]] = []
    window: list[tuple[int, int, int, int]] = []  # (index, depth, start, duration) of parents
    for index in range(count):
        span_id = f"{index + 1:016x}"
        if not window:
            parent, depth, start, duration = None, 0, start_us, 10_000_000
        else:
            parent_index, parent_depth, parent_start, parent_duration = rng.choice(window[-40:])
            parent = f"{parent_index + 1:016x}"
            depth = parent_depth + 1
            duration = max(1, int(parent_duration * rng.uniform(0.05, 0.6)))
            start = parent_start + int((parent_duration - duration) * rng.random())
        service = SERVICES[(index * 7 + depth) % len(SERVICES)] if index else "svc-gateway"
        span: dict[str, Any] = {
            "traceId": trace_id,
            "id": span_id,
            "name": f"op-{index}",
            "timestamp": start,
            "duration": duration,
            "localEndpoint": {"serviceName": service},
            "tags": {"index": str(index), "shard": str(index % 16)},
        }
        if parent:
            span["parentId"] = parent
        if index % 97 == 96:
            span["tags"]["error"] = f"failure {index}"
        if index % 10 == 5:
            span["annotations"] = [{"timestamp": start + duration // 2, "value": f"note {index}"}]
        spans.append(span)
        if depth < 12:
            window.append((index, depth, start, duration))
    return spans
