"""The text of a driver's statement: placeholders kept, values never, bounded whatever comes."""

from __future__ import annotations

from typing import Any

import psycopg.sql
import psycopg2.sql
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.integrations._dbapi import Database, composed_text, head_text
from tomograph.integrations._sql import MAX_STATEMENT_LENGTH

# psycopg2 writes identifiers only with a connection at hand: its composed statements are
# checked against a real server in test_psycopg2.
SQL_MODULES = [psycopg.sql]
identifiers = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20)
# Values carry a mark no identifier or SQL keyword has, so finding it means a value leaked.
values = st.one_of(
    st.text(max_size=30).map(lambda text: "VALUE-" + text),
    st.integers(min_value=2**62, max_value=2**63),
)


@pytest.mark.parametrize("module", SQL_MODULES, ids=["psycopg"])
@given(table=identifiers, column=identifiers, literals=st.lists(values, min_size=1, max_size=5))
def test_literal_values_never_reach_the_statement_text(
    module: Any, table: str, column: str, literals: list[object]
) -> None:
    query = module.SQL("SELECT {} FROM {} WHERE {} IN ({})").format(
        module.Identifier(column),
        module.Identifier(table),
        module.Identifier(column),
        module.SQL(", ").join([module.Literal(value) for value in literals]),
    )
    text = composed_text(query, None, module)
    assert text is not None
    assert "VALUE-" not in text
    assert str(2**62)[:6] not in text
    assert text.count("?") == len(literals)
    assert f'FROM "{table}"' in text


@pytest.mark.parametrize("module", SQL_MODULES, ids=["psycopg"])
def test_plain_values_mixed_into_a_composed_statement_are_hidden(module: Any) -> None:
    query = module.Composed([module.SQL("SELECT "), "VALUE-secret"])
    assert composed_text(query, None, module) == "SELECT ?"


def test_something_that_is_not_sql_gives_no_text() -> None:
    assert composed_text(object(), None, psycopg.sql) is None


def test_a_psycopg2_identifier_without_a_connection_gives_no_text() -> None:
    query = psycopg2.sql.SQL("SELECT {}").format(psycopg2.sql.Identifier("users"))
    assert composed_text(query, None, psycopg2.sql) is None


@given(st.binary(max_size=200))
def test_bytes_statements_decode_to_text_whatever_they_hold(raw: bytes) -> None:
    assert isinstance(head_text(raw), str)


def test_a_10_mb_bytes_statement_decodes_only_its_head() -> None:
    text = head_text(b"SELECT 1 /* " + b"\xff" * 10_000_000 + b" */")
    assert len(text) <= MAX_STATEMENT_LENGTH * 4


@given(port=st.one_of(st.none(), st.integers(), st.text(max_size=8)), host=st.text(max_size=40))
def test_database_description_never_fails_and_keeps_a_sane_port(port: object, host: str) -> None:
    database = Database("postgresql", None, "db", "user", host, port)
    if "server.port" in database.tags:
        assert 0 < int(database.tags["server.port"]) < 65536  # type: ignore[arg-type]
    assert database.remote.service_name == "postgresql"


@pytest.mark.parametrize("port", ["²", "٥٤٣٢", "9" * 5000, "05432", True, "+5432", " 5432"])
def test_a_port_written_oddly_is_left_out_or_read_as_written(port: object) -> None:
    database = Database("postgresql", None, "db", "user", "db.internal", port)
    expected = {"05432": 5432}.get(port) if isinstance(port, str) else None
    assert database.tags.get("server.port") == expected
    assert database.remote.port == expected
