"""X-Trace-Info, tomograph's own header."""

from __future__ import annotations

import base64
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import (
    assert_valid_or_none,
    contexts,
    header_text,
    mutations,
)

from tomograph.model import TraceContext
from tomograph.propagation import xtraceinfo

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "0000000000000007"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"v1;{TRACE};{SPAN};1", TraceContext(int(TRACE, 16), int(SPAN, 16), sampled=True)),
        (
            f"v1;{TRACE[:16]};{SPAN};0",
            TraceContext(int(TRACE[:16], 16), int(SPAN, 16), sampled=False),
        ),
        (f"v1;{TRACE};{SPAN};", TraceContext(int(TRACE, 16), int(SPAN, 16), sampled=None)),
        (f"v1;{TRACE};{SPAN};d", TraceContext(int(TRACE, 16), int(SPAN, 16), debug=True)),
        (f"v1;{TRACE};{SPAN};1;{PARENT}", TraceContext(int(TRACE, 16), int(SPAN, 16), 7, True)),
        # later versions: the five fields of v1, then anything
        (
            f"v2;{TRACE};{SPAN};1;;more;fields",
            TraceContext(int(TRACE, 16), int(SPAN, 16), sampled=True),
        ),
        (f"v17;{TRACE};{SPAN};1;{PARENT};x", TraceContext(int(TRACE, 16), int(SPAN, 16), 7, True)),
    ],
)
def test_valid_values(value: str, expected: TraceContext) -> None:
    assert xtraceinfo.parse_trace_info(value) == expected
    assert xtraceinfo.extract({"X-Trace-Info": value}) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "v1",
        f"v1;{TRACE};{SPAN}",
        f"v1;{TRACE};{SPAN};1;",  # v1 has no empty fifth field
        f"v1;{TRACE};{SPAN};1;{PARENT};x",  # v1 has at most five fields
        f"v0;{TRACE};{SPAN};1",
        f"v01;{TRACE};{SPAN};1",
        f"V1;{TRACE};{SPAN};1",
        f"1;{TRACE};{SPAN};1",
        f"v1;{TRACE.upper()};{SPAN};1",
        f"v1;{'0' * 32};{SPAN};1",
        f"v1;{TRACE};{'0' * 16};1",
        f"v1;{TRACE};{SPAN};true",
        f"v1;{TRACE};{SPAN};2",
        f"v2;{TRACE};{SPAN};1;nothex",
        f"v1;{TRACE};{SPAN};1" + " " * 300,
    ],
)
def test_malformed_values_are_rejected(value: str) -> None:
    assert xtraceinfo.parse_trace_info(value) is None


def test_a_pickled_header_from_the_original_tomograph_is_never_unpickled() -> None:
    class Explode:
        def __reduce__(self) -> tuple[object, ...]:
            return (pytest.fail, ("the header was unpickled",))

    hostile = base64.b64encode(pickle.dumps(Explode())).decode()
    assert xtraceinfo.extract({"X-Trace-Info": hostile}) is None
    assert (
        xtraceinfo.extract({"X-Trace-Info": base64.b64encode(pickle.dumps((1, 2))).decode()})
        is None
    )


def test_inject_writes_one_lower_case_header() -> None:
    headers: dict[str, str] = {}
    xtraceinfo.inject(TraceContext(int(TRACE, 16), int(SPAN, 16), 7, sampled=True), headers)
    assert headers == {"x-trace-info": f"v1;{TRACE};{SPAN};1;{PARENT}"}


@given(contexts())
def test_round_trip(context: TraceContext) -> None:
    headers: dict[str, str] = {}
    xtraceinfo.inject(context, headers)
    assert xtraceinfo.extract(headers) == context


@given(header_text)
def test_parser_never_raises(value: str) -> None:
    assert_valid_or_none(xtraceinfo.parse_trace_info(value))


@given(st.data())
def test_near_valid_values_parse_or_are_rejected(data: st.DataObject) -> None:
    valid = xtraceinfo.format_trace_info(data.draw(contexts()))
    assert_valid_or_none(xtraceinfo.parse_trace_info(data.draw(mutations(valid))))
