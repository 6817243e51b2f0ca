"""Time for the web UI to show a big trace, in headless chromium: this UI against another one.

Opens ``#/trace/ID`` for traces of 3,001 and 10,000 spans and measures, in the page, from the
navigation's start to the first paint after the first waterfall row appeared (a
MutationObserver and two animation frames, so any UI can be measured the same way), and how
much of it came after the trace's spans had arrived. Best of ``--runs``. ``--before DIR`` serves
another UI folder side by side (for example an older checkout's ``src/tomograph/ui``).

    python benchmarks/bench_ui_trace.py --before ../old/src/tomograph/ui
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import big_trace, post_spans  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

MEASURE = """
(() => {
  new MutationObserver((changes, observer) => {
    if (!document.querySelector(".wf-row")) return;
    observer.disconnect();
    const painted = () => { window.__painted = performance.now(); };
    requestAnimationFrame(() => requestAnimationFrame(painted));
  }).observe(document, { childList: true, subtree: true });
})();
"""


def serve(ui: Path, workdir: Path) -> tuple[str, Any]:
    """The collector app on a thread, serving the web UI from ``ui``."""
    import uvicorn

    from tomograph.collector import app as collector_app
    from tomograph.collector.settings import CollectorSettings

    collector_app.ui_directory = lambda: ui  # type: ignore[assignment]
    port = free_port()
    settings = CollectorSettings(port=port, db_path=workdir / f"{port}.db")
    server = uvicorn.Server(
        uvicorn.Config(collector_app.create_app(settings), port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit("the collector did not start")
        time.sleep(0.01)
    return f"http://127.0.0.1:{port}", server


def measure(browser: Any, url: str, trace_id: str, runs: int) -> tuple[float, float]:
    """Best (navigation to painted, spans received to painted) in ms over ``runs`` fresh tabs."""
    best = (float("inf"), float("inf"))
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.add_init_script(MEASURE)
        page.goto(f"{url}/#/trace/{trace_id}")
        page.wait_for_function("() => window.__painted !== undefined", timeout=120_000)
        painted, received = page.evaluate(
            """() => [window.__painted, performance.getEntriesByType("resource")
                .find((r) => r.name.includes("/api/v2/trace/")).responseEnd]"""
        )
        context.close()
        best = (min(best[0], painted), min(best[1], painted - received))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another UI folder to measure side by side")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--spans", default="3001,10000")
    args = parser.parse_args()
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        print("bench_ui_trace: skipped, /usr/bin/chromium is not installed")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("bench_ui_trace: skipped, playwright is not installed")
        return

    uis = {"tomograph": ROOT / "src/tomograph/ui"}
    if args.before:
        uis["before"] = args.before.resolve()
    sizes = [int(size) for size in args.spans.split(",")]
    now = time.time_ns() // 1000
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; best of {args.runs}")
    print(f"{'spans':>7} {'UI':<10} {'navigation to painted':>22} {'spans in to painted':>20}")
    with tempfile.TemporaryDirectory() as workdir, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        servers = {name: serve(ui, Path(workdir)) for name, ui in uis.items()}
        for size in sizes:
            trace_id = f"{size:032x}"
            for url, _ in servers.values():
                post_spans(url, big_trace(trace_id, size, now - 60_000_000))
            results = {
                name: measure(browser, url, trace_id, args.runs)
                for name, (url, _) in servers.items()
            }
            for name, (total, after) in results.items():
                ratio = ""
                if name != "tomograph":
                    now_total, now_after = results["tomograph"]
                    ratio = f"  ({total / now_total:.1f}x, {after / now_after:.1f}x)"
                print(f"{size:>7} {name:<10} {total:>19.0f} ms {after:>17.0f} ms{ratio}")
        browser.close()
        for _, server in servers.values():
            server.should_exit = True


if __name__ == "__main__":
    main()
