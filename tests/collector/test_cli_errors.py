"""Bad input to ``tomograph serve`` and ``tomograph demo``: one clear line on stderr, no traceback.

Each case runs the real command in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.servers import free_port


def tomograph(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tomograph", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert result.stdout == "", result.stdout


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on (it never answers)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def serve(*args: str) -> list[str]:
    return ["serve", "--port", str(free_port()), *args]


def test_db_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    result = tomograph(*serve("--db", str(tmp_path / "notes.txt" / "traces.db")))
    assert_one_line_error(result, "tomograph serve:", "notes.txt is a file, not a folder")


def test_db_that_is_a_directory(tmp_path: Path) -> None:
    result = tomograph(*serve("--db", str(tmp_path)))
    assert_one_line_error(result, "tomograph serve:", "is a folder, not a database file")


def test_db_that_is_not_a_database(tmp_path: Path) -> None:
    garbage = tmp_path / "traces.db"
    garbage.write_bytes(b"this is no database, just text that happens to be long enough" * 64)
    result = tomograph(*serve("--db", str(garbage)))
    assert_one_line_error(result, "tomograph serve:", "is not a SQLite database")


def test_db_of_another_program(tmp_path: Path) -> None:
    other = tmp_path / "inventory.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE items (sku TEXT PRIMARY KEY, count INTEGER)")
    result = tomograph(*serve("--db", str(other)))
    assert_one_line_error(result, "tomograph serve:", "a SQLite database of another program")
    with sqlite3.connect(other) as db:  # and it was left as it was
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [
            ("items",),
            ("sqlite_autoindex_items_1",),
        ]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)


def test_port_in_use_fails_before_claiming_to_listen(tmp_path: Path, taken_port: int) -> None:
    result = tomograph("serve", "--port", str(taken_port), "--db", str(tmp_path / "t.db"))
    assert_one_line_error(
        result, "tomograph serve:", f"is another program using port {taken_port}?"
    )
    assert "collector on http" not in result.stderr


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--port", "99999"], "argument --port: not a port: '99999'"),
        (["--port", "-1"], "argument --port: not a port: '-1'"),
        (["--port", "http"], "argument --port: not a port: 'http'"),
        (["--port", "9" * 5000], "argument --port: not a port"),
        (["--foo"], "unrecognized arguments: --foo"),
        (["--max-age", "0"], "argument --max-age"),
        (["--max-age", "nan"], "argument --max-age"),
        (["--max-size", "lots"], "argument --max-size"),
        (["--max-body", "-5"], "argument --max-body"),
        (["--retention-interval", "0.001"], "must be at least 1s"),
        (["--query-timeout", "0"], "argument --query-timeout"),
        (["--max-concurrent-queries", "0"], "argument --max-concurrent-queries"),
    ],
)
def test_bad_serve_arguments(tmp_path: Path, args: list[str], phrase: str) -> None:
    result = tomograph("serve", "--db", str(tmp_path / "t.db"), *args)
    assert_one_line_error(result, "tomograph serve: error:", phrase, "tomograph serve --help")
    assert result.returncode == 2
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize(
    ("host", "phrase"),
    [("192.0.2.1", "is not an address of this machine"), ("", "host must not be empty")],
)
def test_bad_hosts(tmp_path: Path, host: str, phrase: str) -> None:
    result = tomograph("serve", "--host", host, "--port", "0", "--db", str(tmp_path / "t.db"))
    assert_one_line_error(result, "tomograph serve:", phrase)


def test_a_query_timeout_longer_than_a_day(tmp_path: Path) -> None:
    result = tomograph("serve", "--query-timeout", "2d", "--db", str(tmp_path / "t.db"))
    assert_one_line_error(result, "tomograph serve:", "at most a day")


@pytest.mark.parametrize("token", ["two words", "tab\there", "naïve", " "])
def test_a_token_that_cannot_travel_in_a_header(tmp_path: Path, token: str) -> None:
    result = tomograph(
        "serve",
        "--port",
        "0",
        "--db",
        str(tmp_path / "t.db"),
        env={"TOMOGRAPH_COLLECTOR_TOKEN": token},
    )
    assert_one_line_error(result, "tomograph serve:", "token must be printable ASCII")
    assert token.strip() == "" or token not in result.stderr  # a secret is never echoed


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--port", "99999"], "tomograph demo: error: argument --port: not a port"),
        (["--bar"], "tomograph demo: error: unrecognized arguments: --bar"),
    ],
)
def test_bad_demo_arguments(args: list[str], phrase: str) -> None:
    assert_one_line_error(tomograph("demo", "--no-wait", *args), phrase)


def test_demo_with_its_port_taken(tmp_path: Path, taken_port: int) -> None:
    result = tomograph(
        "demo", "--no-wait", "--port", str(taken_port), "--db", str(tmp_path / "t.db")
    )
    assert_one_line_error(result, "tomograph demo:", f"is another program using port {taken_port}?")


def test_demo_with_a_db_under_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    result = tomograph(
        "demo",
        "--no-wait",
        "--port",
        str(free_port()),
        "--db",
        str(tmp_path / "notes.txt" / "traces.db"),
    )
    assert_one_line_error(result, "tomograph demo:", "notes.txt is a file, not a folder")


def test_unreachable_postgresql_is_named_without_its_password() -> None:
    port = free_port()  # nothing listens there
    result = tomograph(*serve("--db", f"postgres://spans:hunter2-secret@127.0.0.1:{port}/traces"))
    assert_one_line_error(
        result, "tomograph serve:", f"cannot connect to postgresql://spans@127.0.0.1:{port}/traces"
    )
    assert "hunter2" not in result.stderr
