"""The ``tomograph`` command: ``tomograph demo`` (and, with the collector extra, ``serve``)."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from tomograph.demo import run_demo
    from tomograph.waterfall import render_waterfall, rows_from_spans

    memory, _ = run_demo()
    width = shutil.get_terminal_size((100, 24)).columns
    color = sys.stdout.isatty() and not args.no_color
    print(render_waterfall(rows_from_spans(memory.spans), width=min(width, 140), color=color))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (exposed for tests and documentation)."""
    parser = argparse.ArgumentParser(prog="tomograph", description="tomograph tracing toolkit")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a small traced workload and show its trace")
    demo.add_argument("--no-color", action="store_true", help="plain text output")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tomograph`` console script and ``python -m tomograph``."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
