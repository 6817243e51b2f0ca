"""Plain data: TraceContext, Endpoint, kinds."""

from __future__ import annotations

import pytest

from tomograph import Endpoint, SpanKind, TraceContext
from tomograph.model import coerce_kind


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
