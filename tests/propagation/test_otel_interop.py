"""Cross-checks against the OpenTelemetry SDK's own propagators, in both directions.

A context injected by OpenTelemetry is extracted by tomograph with the same ids, decision and
tracestate/baggage, and the other way round.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.b3 import B3MultiFormat, B3SingleFormat
from opentelemetry.propagators.jaeger import JaegerPropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tests.support.trace_strategies import span_ids, trace_ids

from tomograph.model import TraceContext
from tomograph.propagation import b3, baggage, jaeger, w3c
from tomograph.propagation.baggage import BaggageEntry

tracestate_keys = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,12}", fullmatch=True).filter(
    lambda key: key != "tomograph"
)
tracestate_values = st.from_regex(r"[\x21-\x2b\x2d-\x3c\x3e-\x7e]{1,16}", fullmatch=True)
tracestates = st.dictionaries(tracestate_keys, tracestate_values, max_size=6).map(
    lambda d: tuple(d.items())
)
samples = st.booleans()


def otel_context(
    trace_id: int, span_id: int, sampled: bool, members: tuple[tuple[str, str], ...] = ()
) -> Context:
    span_context = SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=TraceState(list(members)),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def otel_span_context(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()


# -- W3C trace context -----------------------------------------------------------------------


@settings(max_examples=60)
@given(trace_ids.filter(lambda t: t < 2**128), span_ids, samples, tracestates)
def test_w3c_from_opentelemetry_to_tomograph(
    trace_id: int, span_id: int, sampled: bool, members: tuple[tuple[str, str], ...]
) -> None:
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(
        carrier, otel_context(trace_id, span_id, sampled, members)
    )
    expected = TraceContext(
        trace_id, span_id, sampled=sampled, extra={"tracestate": members} if members else None
    )
    assert w3c.extract(carrier) == expected


@settings(max_examples=60)
@given(trace_ids, span_ids, samples, tracestates)
def test_w3c_from_tomograph_to_opentelemetry(
    trace_id: int, span_id: int, sampled: bool, members: tuple[tuple[str, str], ...]
) -> None:
    carrier: dict[str, str] = {}
    extra = {"tracestate": members} if members else None
    w3c.inject(TraceContext(trace_id, span_id, sampled=sampled, extra=extra), carrier)
    found = otel_span_context(TraceContextTextMapPropagator().extract(carrier))
    assert (found.trace_id, found.span_id, found.trace_flags.sampled) == (
        trace_id,
        span_id,
        sampled,
    )
    others = [(key, value) for key, value in found.trace_state.items() if key != "tomograph"]
    assert others == list(members)
    assert found.trace_state.get("tomograph") == f"{span_id:016x};{int(sampled)}"
    assert next(iter(found.trace_state.keys())) == "tomograph"


# -- B3 --------------------------------------------------------------------------------------

B3_FORMATS = [
    pytest.param(B3MultiFormat, b3.inject, id="multi"),
    pytest.param(B3SingleFormat, b3.inject_single, id="single"),
]


@pytest.mark.parametrize(("otel_format", "inject"), B3_FORMATS)
@settings(max_examples=60)
@given(trace_ids, span_ids, samples)
def test_b3_from_opentelemetry_to_tomograph(
    otel_format: Any, inject: Any, trace_id: int, span_id: int, sampled: bool
) -> None:
    carrier: dict[str, str] = {}
    otel_format().inject(carrier, otel_context(trace_id, span_id, sampled))
    assert b3.extract(carrier) == TraceContext(trace_id, span_id, sampled=sampled)


@pytest.mark.parametrize(("otel_format", "inject"), B3_FORMATS)
@settings(max_examples=60)
@given(trace_ids, span_ids, st.none() | span_ids, samples, st.booleans())
def test_b3_from_tomograph_to_opentelemetry(
    otel_format: Any,
    inject: Any,
    trace_id: int,
    span_id: int,
    parent_id: int | None,
    sampled: bool,
    debug: bool,
) -> None:
    carrier: dict[str, str] = {}
    inject(TraceContext(trace_id, span_id, parent_id, sampled, debug), carrier)
    found = otel_span_context(otel_format().extract(carrier))
    assert (found.trace_id, found.span_id) == (trace_id, span_id)
    assert found.trace_flags.sampled is (sampled or debug)


@pytest.mark.parametrize("otel_format", [B3MultiFormat, B3SingleFormat])
def test_b3_deny_from_tomograph_is_not_sampled_in_opentelemetry(otel_format: Any) -> None:
    carrier: dict[str, str] = {}
    b3.inject(TraceContext(1, 2, sampled=False), carrier)
    b3.inject_single(TraceContext(1, 2, sampled=False), carrier)
    assert not otel_span_context(otel_format().extract(carrier)).trace_flags.sampled


# -- W3C baggage -----------------------------------------------------------------------------

# Keys both sides leave as they are (OpenTelemetry percent-encodes keys, W3C keys are tokens).
baggage_keys = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=10
)
# OpenTelemetry strips whitespace around values and decodes "+" as a space (form encoding), so
# values sent from OpenTelemetry avoid those; values we send may hold anything.
otel_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=20
)
our_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20).filter(
    lambda v: v == v.strip()
)


@settings(max_examples=60)
@given(st.dictionaries(baggage_keys, otel_values, min_size=1, max_size=8))
def test_baggage_from_opentelemetry_to_tomograph(items: dict[str, str]) -> None:
    context = Context()
    for key, value in items.items():
        context = otel_baggage.set_baggage(key, value, context)
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, context)
    assert baggage.extract(carrier) == tuple(BaggageEntry(k, v) for k, v in items.items())


@settings(max_examples=60)
@given(st.dictionaries(baggage_keys, our_values, min_size=1, max_size=8))
def test_baggage_from_tomograph_to_opentelemetry(items: dict[str, str]) -> None:
    carrier: dict[str, str] = {}
    entries = tuple(BaggageEntry(k, v) for k, v in items.items())
    baggage.inject(TraceContext(1, 2, extra={"baggage": entries}), carrier)
    assert dict(otel_baggage.get_all(W3CBaggagePropagator().extract(carrier))) == items


# -- Jaeger baggage (uberctx-*) ------------------------------------------------------------------

# Jaeger header names are lower case on both sides; OpenTelemetry strips whitespace around the
# values it reads.
jaeger_keys = st.text(
    alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=10
)


def otel_jaeger_context(items: dict[str, str]) -> Context:
    context = otel_context(0xABC, 0xDEF, True)
    for key, value in items.items():
        context = otel_baggage.set_baggage(key, value, context)
    return context


@settings(max_examples=60)
@given(st.dictionaries(jaeger_keys, otel_values, min_size=1, max_size=8))
def test_jaeger_baggage_from_opentelemetry_to_tomograph(items: dict[str, str]) -> None:
    carrier: dict[str, str] = {}
    JaegerPropagator().inject(carrier, otel_jaeger_context(items))
    context = jaeger.extract(carrier)
    assert context is not None and context.span_id == 0xDEF
    assert baggage.get_baggage(context) == items


@settings(max_examples=60)
@given(
    # OpenTelemetry's Jaeger propagator removes every "uberctx-" from a header name, not only the
    # prefix (its str.replace), so it reads "uberctx-uberctx-x" as "x": such keys do not cross.
    st.dictionaries(
        jaeger_keys.filter(lambda key: "uberctx-" not in key), our_values, min_size=1, max_size=8
    )
)
def test_jaeger_baggage_from_tomograph_to_opentelemetry(items: dict[str, str]) -> None:
    carrier: dict[str, str] = {}
    entries = tuple(BaggageEntry(k, v) for k, v in items.items())
    jaeger.inject(TraceContext(0xABC, 0xDEF, sampled=True, extra={"baggage": entries}), carrier)
    assert dict(otel_baggage.get_all(JaegerPropagator().extract(carrier))) == items
