"""Naming SQL statements: operation and table, cheaply and never failing."""

from __future__ import annotations

import contextvars

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.integrations._sql import (
    describe_statement,
    enter_statement,
    leave_statement,
    traced_above,
)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT id FROM users WHERE id = ?", ("SELECT", "users")),
        ("select * from public.orders o join users u on o.uid = u.id", ("SELECT", "public.orders")),
        ('INSERT INTO "Order Lines" (id) VALUES (%(id)s)', ("INSERT", "Order Lines")),
        ("UPDATE users SET name = ? WHERE id = ?", ("UPDATE", "users")),
        ("update or replace users set x = 1", ("UPDATE", "users")),
        ("DELETE FROM sessions WHERE expires < now()", ("DELETE", "sessions")),
        ("/* app */ -- hint\nSELECT 1", ("SELECT", None)),
        ("SELECT count(*) FROM (SELECT 1) AS x", ("SELECT", None)),
        ("WITH t AS (SELECT 1) SELECT * FROM t", ("SELECT", None)),
        ("COMMIT", ("COMMIT", None)),
        ('PRAGMA main.table_info("users")', ("PRAGMA", None)),
        ("", ("SQL", None)),
        ("   ;", ("SQL", None)),
    ],
)
def test_operation_and_table(statement: str, expected: tuple[str, str | None]) -> None:
    assert describe_statement(statement) == expected


def test_only_the_head_of_a_huge_statement_is_read() -> None:
    statement = "INSERT INTO big VALUES " + ", ".join(["(1, 2)"] * 100_000)
    assert describe_statement(statement) == ("INSERT", "big")


@given(st.text(max_size=600))
def test_any_text_gives_a_short_name_and_never_raises(statement: str) -> None:
    operation, table = describe_statement(statement)
    assert 0 < len(operation) <= 32
    assert table is None or 0 < len(table) <= 300


@given(
    st.sampled_from(["SELECT a FROM ", "insert into ", "DELETE FROM "]),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
)
def test_table_name_round_trips(prefix: str, table: str) -> None:
    statement = prefix + table + " WHERE 1 = 1"
    assert describe_statement(statement)[1] == table


# -- statements in flight: one span per statement when database layers stack --------------------


def test_a_statement_in_flight_hides_only_that_statement_from_layers_below() -> None:
    marker = enter_statement("SELECT 1")
    try:
        assert traced_above("SELECT 1")
        assert not traced_above("SELECT 2")
        assert not traced_above(None)
    finally:
        leave_statement(marker)
    assert not traced_above("SELECT 1")


def test_an_unknown_statement_in_flight_hides_whatever_runs_below() -> None:
    marker = enter_statement(None)  # SQLAlchemy's before_execute: not compiled yet
    assert traced_above("SELECT anything")
    leave_statement(marker)
    assert not traced_above("SELECT anything")


def test_a_statement_left_in_another_context_hides_nothing_here() -> None:
    marker = enter_statement(None)
    contextvars.copy_context().run(leave_statement, marker)  # ended elsewhere
    assert not traced_above("SELECT 1")
    inner = enter_statement("SELECT 2")
    leave_statement(inner)
    assert not traced_above("SELECT 1")  # the closed one does not come back either


def test_nested_statements_restore_the_outer_one() -> None:
    outer = enter_statement("CALL outer()")
    inner = enter_statement("SELECT inner")
    leave_statement(inner)
    assert traced_above("CALL outer()")
    leave_statement(outer)
    assert not traced_above("CALL outer()")
