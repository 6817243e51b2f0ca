"""Shared timing and table printing for the side-by-side benchmarks.

Each case is a zero-argument callable doing one operation. Timing takes the best of several
repeats of many iterations (the minimum is the least disturbed by other work on the machine).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Result:
    case: str
    library: str
    us_per_op: float


def time_per_op(
    operation: Callable[[], object], *, min_time: float = 0.2, repeats: int = 5
) -> float:
    """Best-of-``repeats`` microseconds per call of ``operation``."""
    number = 1
    while True:  # calibrate so one repeat lasts about min_time seconds
        start = time.perf_counter()
        for _ in range(number):
            operation()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time / 4:
            break
        number *= 4
    number = max(1, int(number * (min_time / max(elapsed, 1e-9))))
    best = float("inf")
    gc_was_enabled = gc.isenabled()
    try:
        for _ in range(repeats):
            gc.collect()
            gc.disable()
            start = time.perf_counter()
            for _ in range(number):
                operation()
            best = min(best, (time.perf_counter() - start) / number)
            if gc_was_enabled:
                gc.enable()
    finally:
        if gc_was_enabled:
            gc.enable()
    return best * 1e6


def print_table(
    title: str, results: Sequence[Result], baseline: str = "tomograph", unit: str = "µs"
) -> None:
    """Print ``unit`` per op (µs, or instructions) per case and library, with each peer's
    figure as a multiple of ``baseline``'s."""
    cases = list(dict.fromkeys(r.case for r in results))
    libraries = list(dict.fromkeys(r.library for r in results))
    by_key = {(r.case, r.library): r.us_per_op for r in results}
    peers = [lib for lib in libraries if lib != baseline]
    header = ["case", *[f"{lib} {unit}" for lib in libraries], *[f"{p}/{baseline}" for p in peers]]
    rows = []
    for case in cases:
        row = [case]
        for lib in libraries:
            value = by_key.get((case, lib))
            row.append(
                "-" if value is None else f"{value:.2f}" if unit == "µs" else f"{value:,.0f}"
            )
        base = by_key.get((case, baseline))
        for peer in peers:
            value = by_key.get((case, peer))
            row.append("-" if value is None or not base else f"{value / base:.1f}x")
        rows.append(row)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    print(f"\n## {title}\n")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def wsgi_request(
    app: Callable[..., Any], make_environ: Callable[[], dict[str, Any]]
) -> Callable[[], None]:
    """One request through a WSGI ``app``, as a server makes it: a fresh environ, the whole
    body read, then ``close()`` (where tracing middlewares end their span)."""

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
        return None

    def request() -> None:
        body = app(make_environ(), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    return request
