"""Plain data: TraceContext, Endpoint, kinds."""

from __future__ import annotations

import pytest

from tomograph import Endpoint, SpanKind, TraceContext
from tomograph.model import ExceptionNote, coerce_kind, endpoint_for


def test_trace_context_is_immutable() -> None:
    context = TraceContext(1, 2)
    with pytest.raises(AttributeError, match="immutable"):
        context.sampled = True  # type: ignore[misc]


def test_trace_context_replace_and_equality() -> None:
    context = TraceContext(1, 2, sampled=True, extra={"baggage": "a=1"})
    changed = context.replace(span_id=3)
    assert changed.span_id == 3 and changed.trace_id == 1 and changed.extra == {"baggage": "a=1"}
    assert context == TraceContext(1, 2, sampled=True, extra={"baggage": "a=1"})
    assert context != changed
    assert hash(context) == hash(TraceContext(1, 2, sampled=True))


def test_debug_implies_sampled() -> None:
    assert TraceContext(1, 2, sampled=False, debug=True).sampled is True


def test_repr_shows_hex_ids() -> None:
    assert "span_id=00000000000000ff" in repr(TraceContext(1, 255))


def test_endpoint_defaults() -> None:
    assert Endpoint("svc") == Endpoint("svc", None, None, None)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("client", SpanKind.CLIENT), ("SERVER", SpanKind.SERVER), (None, None), ("local", None)],
)
def test_coerce_kind(given: str | None, expected: SpanKind | None) -> None:
    assert coerce_kind(given) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.0.0.7", Endpoint("db", "10.0.0.7", None, 5432)),
        ("::1", Endpoint("db", None, "::1", 5432)),
        ("[::1]", Endpoint("db", None, "::1", 5432)),  # as URLs write it
        ("0:0:0:0:0:0:0:1", Endpoint("db", None, "::1", 5432)),  # the short form
        ("db.example", Endpoint("db", None, None, 5432)),  # a name is never resolved
        ("", Endpoint("db", None, None, 5432)),
        (None, Endpoint("db", None, None, 5432)),
        (b"10.0.0.7", Endpoint("db", None, None, 5432)),  # not text: no address
    ],
)
def test_endpoint_for_keeps_ip_addresses_only(host: object, expected: Endpoint) -> None:
    assert endpoint_for("db", host, 5432) == expected


def test_endpoint_for_gives_the_same_endpoint_for_the_same_peer() -> None:
    assert endpoint_for("svc", "127.0.0.1", 80) is endpoint_for("svc", "127.0.0.1", 80)
    assert endpoint_for("svc", "127.0.0.1", 0).port is None


def test_an_exception_marked_first_line_only_is_noted_so_and_so_are_those_raised_from_it() -> None:
    database_error = RuntimeError("duplicate key\nDETAIL:  Key (email)=(secret@example.org)")
    ExceptionNote.first_line_only(database_error)
    assert ExceptionNote.of(database_error).message == "duplicate key"
    try:
        try:
            raise database_error
        except RuntimeError as error:
            raise ValueError(f"signup failed:\n{error}") from error
    except ValueError as wrapped:
        assert ExceptionNote.of(wrapped) == "ValueError: signup failed:"
    unmarked = RuntimeError("first\nsecond")
    assert ExceptionNote.of(unmarked).message == "first\nsecond"
