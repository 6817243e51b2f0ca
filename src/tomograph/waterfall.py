"""Render traces as a waterfall in the terminal: one line per span, bars on a shared time axis."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tomograph.ids import format_trace_id
from tomograph.span import Span

__all__ = ["WaterfallRow", "render_waterfall", "rows_from_spans"]

_RED = "\x1b[31m"
_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


@dataclass
class WaterfallRow:
    """What the waterfall needs of a span; times in epoch microseconds."""

    trace_id: int
    span_id: int
    parent_id: int | None
    service: str
    name: str
    kind: str | None
    timestamp: int
    duration: int
    error: bool = False
    notes: list[tuple[int, str]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def rows_from_spans(spans: Iterable[Span]) -> list[WaterfallRow]:
    """Waterfall rows for finished, sampled spans."""
    return [
        WaterfallRow(
            trace_id=span.trace_id,
            span_id=span.span_id,
            parent_id=span.parent_id,
            service=span.service_name or "unknown",
            name=span.name,
            kind=span.kind.value.lower() if span.kind is not None else None,
            timestamp=span.timestamp,
            duration=span.duration or 1,
            error=span.error or "error" in span.tags,
            notes=[(note.timestamp, note.value) for note in span.annotations],
            tags={key: str(value) for key, value in span.tags.items()},
        )
        for span in spans
        if span.finished and span.sampled
    ]


def _format_duration(micros: float) -> str:
    if micros >= 1_000_000:
        return f"{micros / 1_000_000:.2f}s"
    if micros >= 1000:
        return f"{micros / 1000:.2f}ms"
    return f"{micros:.0f}µs"


def _tree_order(rows: Sequence[WaterfallRow]) -> list[tuple[int, WaterfallRow]]:
    """(depth, row) in depth-first order, children by start time; orphans become roots."""
    ids = {row.span_id for row in rows}
    children: dict[int | None, list[WaterfallRow]] = {}
    for row in rows:
        parent = row.parent_id if row.parent_id in ids and row.parent_id != row.span_id else None
        children.setdefault(parent, []).append(row)
    for siblings in children.values():
        siblings.sort(key=lambda r: (r.timestamp, r.name))
    ordered: list[tuple[int, WaterfallRow]] = []
    seen: set[int] = set()
    stack = [(0, row) for row in reversed(children.get(None, []))]
    while stack:
        depth, row = stack.pop()
        if id(row) in seen:
            continue
        seen.add(id(row))
        ordered.append((depth, row))
        stack.extend((depth + 1, child) for child in reversed(children.get(row.span_id, [])))
    return ordered


def render_waterfall(
    rows: Iterable[WaterfallRow], width: int = 100, color: bool = False, details: bool = True
) -> str:
    """The traces in ``rows`` as text: a header per trace, then one line per span.

    Each line shows the span indented by depth, its service and name, a bar placed and scaled on
    the trace's time axis, and its duration; with ``details``, its notes (time since the trace
    started) and tags beneath. Failed spans are marked ``!`` (and red with ``color``).
    """
    by_trace: dict[int, list[WaterfallRow]] = {}
    for row in rows:
        by_trace.setdefault(row.trace_id, []).append(row)
    label_width = max(24, width * 2 // 5)
    bar_width = max(10, width - label_width - 12)
    out: list[str] = []
    for trace_id, trace_rows in sorted(
        by_trace.items(), key=lambda item: min(r.timestamp for r in item[1])
    ):
        start = min(r.timestamp for r in trace_rows)
        end = max(r.timestamp + r.duration for r in trace_rows)
        total = max(1, end - start)
        services = sorted({r.service for r in trace_rows})
        out.append(
            f"trace {format_trace_id(trace_id)}  {_format_duration(total)}  "
            f"{len(trace_rows)} spans  services: {', '.join(services)}"
        )
        for depth, row in _tree_order(trace_rows):
            marker = "!" if row.error else " "
            kind = f" [{row.kind}]" if row.kind else ""
            label = f"{'  ' * depth}{marker}{row.service}: {row.name}{kind}"
            if len(label) > label_width:
                label = label[: label_width - 1] + "…"
            offset = round((row.timestamp - start) / total * bar_width)
            length = max(1, round(row.duration / total * bar_width))
            offset = min(offset, bar_width - 1)
            length = min(length, bar_width - offset)
            bar = " " * offset + "█" * length + " " * (bar_width - offset - length)
            line = f"{label:<{label_width}} |{bar}| {_format_duration(row.duration):>9}"
            if color and row.error:
                line = f"{_RED}{line}{_RESET}"
            out.append(line)
            if not details:
                continue
            pad = "  " * (depth + 1) + "   "
            for timestamp, value in row.notes:
                note = f"{pad}• {value} @ +{_format_duration(timestamp - start)}"
                out.append(f"{_DIM}{note}{_RESET}" if color else note)
            for key, value in sorted(row.tags.items()):
                tag = f"{pad}{key} = {value}"
                out.append(f"{_DIM}{tag}{_RESET}" if color else tag)
        out.append("")
    return "\n".join(out)
