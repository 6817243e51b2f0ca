"""new_context builds exactly what TraceContext() builds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import parent_ids, span_ids, trace_ids

from tomograph.model import TraceContext
from tomograph.propagation._context import new_context


@given(
    trace_ids,
    span_ids,
    parent_ids,
    st.sampled_from([True, False, None]),
    st.booleans(),
    st.none() | st.just({"tracestate": (("a", "1"),)}),
    st.booleans(),
)
def test_new_context_equals_the_constructor(
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    sampled: bool | None,
    debug: bool,
    extra: dict[str, object] | None,
    shared: bool,
) -> None:
    made = new_context(trace_id, span_id, parent_id, sampled, debug, extra, shared)
    expected = TraceContext(trace_id, span_id, parent_id, sampled, debug, shared, extra)
    assert type(made) is TraceContext
    for name in TraceContext.__slots__:  # every slot set, so a new field is noticed here
        assert getattr(made, name) == getattr(expected, name), name
    assert made == expected and hash(made) == hash(expected)
