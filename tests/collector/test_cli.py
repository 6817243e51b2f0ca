"""``tomograph serve`` arguments."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from tomograph.cli import _duration, _size, build_parser


def test_serve_defaults_bind_loopback_on_zipkins_port() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.db, args.token, args.cors_origin) == (
        "127.0.0.1",
        9411,
        None,
        None,
        None,
    )


def test_serve_options() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--db",
            "/tmp/x.db",
            "--token",
            "t",
            "--cors-origin",
            "http://a",
            "--cors-origin",
            "http://b",
            "--max-age",
            "2d",
            "--max-size",
            "500M",
            "--max-body",
            "1M",
        ]
    )
    assert args.cors_origin == ["http://a", "http://b"]
    assert args.max_age == 2 * 86400
    assert args.max_size == 500 << 20
    assert args.max_body == 1 << 20


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("2k", 2048), ("1.5G", 3 << 29), ("10MiB", 10 << 20), ("64MB", 64 << 20)],
)
def test_sizes(text: str, value: int) -> None:
    assert _size(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("90", 90.0), ("30m", 1800.0), ("12h", 43200.0), ("7d", 604800.0), ("1w", 604800.0)],
)
def test_durations(text: str, value: float) -> None:
    assert _duration(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "5x", "inf", "nan", "1e400"])
def test_bad_sizes_and_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _size(text)
    with pytest.raises(argparse.ArgumentTypeError):
        _duration(text)


def test_demo_still_parses() -> None:
    assert build_parser().parse_args(["demo", "--no-color"]).no_color is True


def test_span_limits_are_options() -> None:
    args = build_parser().parse_args(["serve", "--max-value", "4K", "--max-span", "1M"])
    assert (args.max_value, args.max_span) == (4096, 1 << 20)
    defaults = build_parser().parse_args(["serve"])
    assert (defaults.max_value, defaults.max_span) == (65_536, 262_144)


def test_span_limits_too_small_are_one_clear_line(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "tomograph", "serve", "--port", "0", "--max-value", "10"]
    done = subprocess.run(
        [*argv, "--db", str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "tomograph serve: --max-value/--max-span: max_value_length must be at least 64 characters"
    ]
