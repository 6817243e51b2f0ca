"""The terminal waterfall and the demo."""

from __future__ import annotations

from tomograph import cli
from tomograph.demo import run_demo
from tomograph.waterfall import WaterfallRow, render_waterfall


def row(span_id: int, parent: int | None, name: str, start: int, duration: int) -> WaterfallRow:
    return WaterfallRow(1, span_id, parent, "svc", name, None, start, duration)


def test_lines_are_indented_by_depth_and_bars_scaled() -> None:
    text = render_waterfall(
        [
            row(1, None, "root", 0, 1000),
            row(2, 1, "first half", 0, 500),
            row(3, 1, "second half", 500, 500),
            row(4, 3, "leaf", 750, 250),
        ],
        width=80,
        details=False,
    )
    lines = text.splitlines()
    assert lines[0].startswith("trace 0000000000000001")
    names = [line.split("|")[0].rstrip() for line in lines[1:5]]
    assert names == [" svc: root", "   svc: first half", "   svc: second half", "     svc: leaf"]
    bars = [line.split("|")[1] for line in lines[1:5]]
    width = len(bars[0])
    assert bars[0].count("█") == width
    assert bars[1].startswith("█") and bars[1].count("█") == width // 2
    assert bars[2].rstrip().endswith("█") and bars[2].startswith(" " * (width // 2 - 1))
    assert bars[3].index("█") >= width * 3 // 4 - 1


def test_orphans_are_shown_as_roots() -> None:
    text = render_waterfall([row(5, 99, "orphan", 0, 10)], details=False)
    assert "svc: orphan" in text


def test_demo_trace_has_the_expected_tree_and_failure() -> None:
    memory, text = run_demo()
    spans = memory.spans
    assert len({s.trace_id for s in spans}) == 1
    by_name = {(s.service_name, s.name): s for s in spans}
    client = by_name[("demo-client", "GET /checkout")]
    server = by_name[("demo-server", "GET /checkout")]
    charge = by_name[("demo-server", "charge card")]
    load = by_name[("demo-server", "load cart")]
    assert server.parent_id == client.span_id
    assert load.parent_id == server.span_id and charge.parent_id == server.span_id
    assert charge.error and not load.error
    assert "!demo-server: charge card" in text
    assert "PaymentDeclined: card declined" in text


def test_demo_command_prints_the_waterfall(capsys: object) -> None:
    assert cli.main(["demo", "--offline", "--no-color"]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "demo-client: GET /checkout [client]" in out
    assert "█" in out
