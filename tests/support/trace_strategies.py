"""Hypothesis strategies for trace contexts and header text, shared by the propagation tests."""

from __future__ import annotations

import string

from hypothesis import strategies as st

from tomograph.model import TraceContext

trace_ids = st.one_of(
    st.integers(min_value=1, max_value=2**64 - 1),
    st.integers(min_value=1, max_value=2**128 - 1),
)
span_ids = st.integers(min_value=1, max_value=2**64 - 1)
parent_ids = st.none() | span_ids

#: sampled True/False/None and debug, as the formats that carry all of them see them.
decisions = st.sampled_from([(True, False), (False, False), (None, False), (True, True)])


@st.composite
def contexts(draw: st.DrawFn, deferred: bool = True, parents: bool = True) -> TraceContext:
    """A trace context with random ids and a sampling decision."""
    sampled, debug = draw(decisions.filter(lambda d: deferred or d[0] is not None))
    return TraceContext(
        draw(trace_ids),
        draw(span_ids),
        draw(parent_ids) if parents else None,
        sampled,
        debug,
    )


hex_chars = st.sampled_from("0123456789abcdef")
#: Header-ish text: mostly the characters trace headers use, sometimes anything at all.
header_text = st.one_of(
    st.text(alphabet="0123456789abcdefABCDEF-;:,=%dvtrue \t", max_size=120),
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


@st.composite
def mutations(draw: st.DrawFn, valid: str) -> str:
    """``valid`` with one near-miss change: a character replaced, deleted, inserted or the
    value cut, doubled or upper-cased."""
    kind = draw(st.sampled_from(["replace", "delete", "insert", "cut", "double", "upper"]))
    if not valid:
        return draw(header_text)
    index = draw(st.integers(min_value=0, max_value=len(valid) - 1))
    char = draw(st.sampled_from(string.printable + "\x00\u00e9\u2028"))
    if kind == "replace":
        return valid[:index] + char + valid[index + 1 :]
    if kind == "delete":
        return valid[:index] + valid[index + 1 :]
    if kind == "insert":
        return valid[:index] + char + valid[index:]
    if kind == "cut":
        return valid[:index]
    if kind == "double":
        return valid + "," + valid
    return valid.upper()


def assert_valid_or_none(context: TraceContext | None) -> None:
    """What every parser promises: None, or a context with usable ids."""
    if context is None:
        return
    assert isinstance(context, TraceContext)
    assert 0 < context.trace_id < 2**128
    assert 0 < context.span_id < 2**64
    assert context.parent_id is None or 0 < context.parent_id < 2**64
    assert context.sampled in (True, False, None)
    assert context.debug in (True, False)
    if context.debug:
        assert context.sampled is True
