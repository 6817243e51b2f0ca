"""The composite propagator, its configuration and the default formats."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import assert_valid_or_none, header_text, mutations

import tomograph
from tomograph import config
from tomograph.model import TraceContext
from tomograph.propagation import Propagator, composite
from tomograph.propagation.baggage import BaggageEntry
from tomograph.reporting.memory import MemoryBackend

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
CONTEXT = TraceContext(
    int(TRACE, 16),
    int(SPAN, 16),
    7,
    True,
    extra={"tracestate": (("rojo", "1"),), "baggage": (BaggageEntry("user", "alice"),)},
)


@pytest.fixture(autouse=True)
def _reset() -> None:
    yield
    config.reset()


def test_default_injects_w3c_baggage_and_b3_but_not_x_trace_info() -> None:
    headers: dict[str, str] = {}
    Propagator().inject(CONTEXT, headers)
    assert set(headers) == {
        "traceparent",
        "tracestate",
        "baggage",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
    }


def test_default_plus_xtraceinfo_writes_the_earlier_default_set_and_reads_every_format() -> None:
    propagator = Propagator("default,xtraceinfo")
    headers: dict[str, str] = {}
    propagator.inject(CONTEXT, headers)
    assert set(headers) == {
        "traceparent",
        "tracestate",
        "baggage",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-trace-info",
    }
    assert propagator.extract_formats == ("w3c", "b3", "xtraceinfo", "jaeger", "baggage")
    assert propagator.extract({"uber-trace-id": f"{TRACE}:{SPAN}:0:1"}) is not None


def test_default_in_a_list_means_each_sides_defaults_once() -> None:
    propagator = Propagator(["b3single", "default", "w3c"])
    assert propagator.inject_formats == ("b3single", "w3c", "baggage", "b3")
    assert propagator.extract_formats == (
        "b3single",
        "w3c",
        "b3",
        "xtraceinfo",
        "jaeger",
        "baggage",
    )


def test_configure_default_plus_xtraceinfo_from_the_environment() -> None:
    tomograph.configure(environ={"TOMOGRAPH_PROPAGATION": "default, X-Trace-Info"})
    headers: dict[str, str] = {}
    composite.inject(CONTEXT, headers)
    assert "x-trace-info" in headers and "traceparent" in headers and "x-b3-traceid" in headers


def test_tomograph_to_tomograph_keeps_debug_and_parent_id_without_x_trace_info() -> None:
    # X-Trace-Info carried the debug flag and the parent id, which W3C lacks; tracestate's
    # tomograph member carries them now, and B3 carries them for Zipkin's tracers.
    context = TraceContext(int(TRACE, 16), int(SPAN, 16), parent_id=0x77, debug=True)
    headers: dict[str, str] = {}
    Propagator().inject(context, headers)
    assert "x-trace-info" not in headers
    assert Propagator().extract(headers) == context
    assert Propagator(["b3"]).extract(headers) == context


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"00-{TRACE}-{SPAN}-01"},
        {"b3": f"{TRACE}-{SPAN}-1"},
        {"X-B3-TraceId": TRACE, "X-B3-SpanId": SPAN, "X-B3-Sampled": "1"},
        {"X-Trace-Info": f"v1;{TRACE};{SPAN};1"},
        {"uber-trace-id": f"{TRACE}:{SPAN}:0:1"},
    ],
    ids=["w3c", "b3 single", "b3 multi", "x-trace-info", "jaeger"],
)
def test_default_extracts_any_format(headers: dict[str, str]) -> None:
    context = Propagator().extract(headers)
    assert context is not None
    assert (context.trace_id, context.span_id, context.sampled) == (
        int(TRACE, 16),
        int(SPAN, 16),
        True,
    )


def test_extract_takes_the_first_valid_format_in_order() -> None:
    headers = {
        "traceparent": "garbage",
        "x-b3-traceid": TRACE,
        "x-b3-spanid": "1111111111111111",
        "x-trace-info": f"v1;{TRACE};2222222222222222;1",
    }
    assert Propagator().extract(headers).span_id == 0x1111111111111111  # type: ignore[union-attr]
    only_xti = Propagator(["xtraceinfo", "b3"])
    assert only_xti.extract(headers).span_id == 0x2222222222222222  # type: ignore[union-attr]


def test_round_trip_through_every_default_format_keeps_everything() -> None:
    headers: dict[str, str] = {}
    Propagator().inject(CONTEXT, headers)
    assert Propagator().extract(headers) == CONTEXT


@pytest.mark.parametrize("name", ["w3c", "b3", "b3single", "xtraceinfo", "jaeger"])
def test_each_format_alone_round_trips_ids_and_decision(name: str) -> None:
    propagator = Propagator([name, "baggage"])
    headers: dict[str, str] = {}
    propagator.inject(CONTEXT, headers)
    context = propagator.extract(headers)
    assert context is not None
    assert (context.trace_id, context.span_id, context.sampled) == (
        CONTEXT.trace_id,
        CONTEXT.span_id,
        True,
    )
    assert context.extra is not None and context.extra["baggage"] == CONTEXT.extra["baggage"]  # type: ignore[index]


def test_baggage_is_not_read_unless_configured() -> None:
    headers = {"traceparent": f"00-{TRACE}-{SPAN}-01", "baggage": "a=1"}
    assert Propagator(["w3c"]).extract(headers).extra is None  # type: ignore[union-attr]


# -- one baggage, whatever format carries it ---------------------------------------------------

JAEGER = {"uber-trace-id": f"{TRACE}:{SPAN}:0:1"}
CARRIERS = {
    "dict": lambda headers: headers,
    "environ": lambda headers: {
        "REQUEST_METHOD": "GET",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()},
    },
    "asgi pairs": lambda headers: [(k.encode(), v.encode()) for k, v in headers.items()],
    "mixed case": lambda headers: {k.title(): v for k, v in headers.items()},
}


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
def test_with_jaeger_alone_baggage_travels_in_uberctx_headers(carrier: object) -> None:
    propagator = Propagator(["jaeger"])
    headers: dict[str, str] = {}
    propagator.inject(CONTEXT, headers)
    assert headers["uberctx-user"] == "alice" and "baggage" not in headers
    context = propagator.extract(carrier(headers))  # type: ignore[operator]
    assert context is not None and context.extra == {"baggage": (BaggageEntry("user", "alice"),)}


@pytest.mark.parametrize("carrier", CARRIERS.values(), ids=CARRIERS.keys())
def test_w3c_and_jaeger_baggage_merge_into_one(carrier: object) -> None:
    headers = {
        "traceparent": f"00-{TRACE}-{SPAN}-01",
        "baggage": "user=alice;p,plan=gold",
        **JAEGER,
        "uberctx-user": "mallory",
        "uberctx-region": "eu",
    }
    expected = (
        BaggageEntry("user", "alice", "p"),
        BaggageEntry("plan", "gold"),
        BaggageEntry("region", "eu"),
    )
    propagator = Propagator(["w3c", "baggage", "jaeger"])
    context = propagator.extract(carrier(headers))  # type: ignore[operator]
    assert context is not None and context.extra == {"baggage": expected}
    sent: dict[str, str] = {}
    propagator.inject(context, sent)
    assert sent["baggage"] == "user=alice;p,plan=gold,region=eu"
    assert {k: v for k, v in sent.items() if k.startswith("uberctx-")} == {
        "uberctx-user": "alice",
        "uberctx-plan": "gold",
        "uberctx-region": "eu",
    }


def test_default_formats_read_jaeger_baggage_and_pass_it_on_as_w3c() -> None:
    context = Propagator().extract({**JAEGER, "uberctx-user": "alice"})
    assert context is not None and context.extra == {"baggage": (BaggageEntry("user", "alice"),)}
    sent: dict[str, str] = {}
    Propagator().inject(context, sent)
    assert sent["baggage"] == "user=alice" and not any(k.startswith("uberctx") for k in sent)


def test_jaeger_baggage_is_not_read_unless_jaeger_is_configured() -> None:
    headers = {"traceparent": f"00-{TRACE}-{SPAN}-01", **JAEGER, "uberctx-user": "alice"}
    context = Propagator(["w3c", "baggage"]).extract(headers)
    assert context is not None and context.extra is None


def test_baggage_without_trace_ids_is_kept_from_every_configured_format() -> None:
    headers = {"baggage": "user=alice", "jaeger-baggage": "plan=gold", "uber-trace-id": "x"}
    found = Propagator(["w3c", "baggage", "jaeger"]).extract_baggage(headers)
    assert found == (BaggageEntry("user", "alice"), BaggageEntry("plan", "gold"))
    assert Propagator(["jaeger"]).extract_baggage(headers) == (BaggageEntry("plan", "gold"),)


def test_merged_baggage_keeps_the_limits() -> None:
    headers = {
        "traceparent": f"00-{TRACE}-{SPAN}-01",
        "baggage": ",".join(f"w{i}=1" for i in range(60)),
        **JAEGER,
        **{f"uberctx-j{i}": "1" for i in range(60)},
    }
    context = Propagator(["w3c", "baggage", "jaeger"]).extract(headers)
    assert context is not None and context.extra is not None
    entries = context.extra["baggage"]
    assert len(entries) == 64 and [e.key for e in entries[:60]] == [f"w{i}" for i in range(60)]


def test_nothing_found_is_none_and_hostile_carriers_do_not_raise() -> None:
    assert Propagator().extract({}) is None
    assert Propagator().extract(object()) is None
    assert Propagator().extract({"traceparent": "\x00" * 10_000_000}) is None


@pytest.mark.parametrize("names", ["w3c,nope", "", " , ", ["b3", 3]])
def test_unknown_names_are_rejected(names: object) -> None:
    with pytest.raises(ValueError):
        Propagator(names)  # type: ignore[arg-type]


def test_aliases_and_case() -> None:
    assert Propagator("TraceContext, B3Multi, X-Trace-Info").inject_formats == (
        "w3c",
        "b3",
        "xtraceinfo",
    )


def test_configure_sets_the_default_propagator() -> None:
    tomograph.configure(backends=[MemoryBackend()], propagation=["b3single"], environ={})
    headers: dict[str, str] = {}
    composite.inject(CONTEXT, headers)
    assert list(headers) == ["b3"]


def test_configure_reads_the_environment_variable() -> None:
    tomograph.configure(environ={"TOMOGRAPH_PROPAGATION": "jaeger"})
    assert composite.default_propagator().inject_formats == ("jaeger",)


def test_a_bad_environment_variable_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(tomograph.ConfigurationError, match=r"TOMOGRAPH_PROPAGATION.*'zipkin'"):
        tomograph.configure(environ={"TOMOGRAPH_PROPAGATION": "w3c,zipkin"})


def test_a_bad_argument_is_a_configuration_error() -> None:
    with pytest.raises(tomograph.ConfigurationError, match="propagation"):
        tomograph.configure(environ={}, propagation=["nope"])


def test_without_configure_a_bad_variable_is_logged_and_defaults_are_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TOMOGRAPH_PROPAGATION", "nope")
    composite.set_default_propagator(None)
    with caplog.at_level(logging.ERROR, logger="tomograph.propagation"):
        propagator = composite.default_propagator()
    assert propagator.inject_formats == composite.DEFAULT_INJECT
    assert "TOMOGRAPH_PROPAGATION" in caplog.text


def test_a_propagator_object_can_be_configured() -> None:
    propagator = Propagator(inject=["w3c"], extract=["w3c", "jaeger"])
    tomograph.configure(environ={}, propagation=propagator)
    assert composite.default_propagator() is propagator


def test_round_trip_through_a_wsgi_environ() -> None:
    headers: dict[str, str] = {}
    Propagator().inject(CONTEXT, headers)
    environ = {"REQUEST_METHOD": "GET", "wsgi.version": (1, 0)}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    assert Propagator().extract(environ) == CONTEXT


HEADER_NAMES = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-trace-info",
    "uber-trace-id",
]


@given(
    st.dictionaries(
        st.sampled_from(HEADER_NAMES).map(lambda n: n.upper() if len(n) % 2 else n),
        st.one_of(header_text, st.binary(max_size=80), st.lists(header_text, max_size=3)),
        max_size=8,
    )
)
def test_random_headers_in_every_format_never_raise(headers: dict[str, object]) -> None:
    context = Propagator().extract(headers)
    assert_valid_or_none(context)


@given(st.data())
def test_one_mutated_header_among_valid_ones_never_raises(data: st.DataObject) -> None:
    headers: dict[str, str] = {}
    Propagator(composite.DEFAULT_EXTRACT).inject(CONTEXT, headers)
    name = data.draw(st.sampled_from(sorted(headers)))
    headers[name] = data.draw(mutations(headers[name]))
    context = Propagator().extract(headers)
    assert_valid_or_none(context)


def test_extract_formats_follow_inject_formats_or_the_defaults() -> None:
    assert Propagator(["b3"]).extract_formats == ("b3",)
    only_extract = Propagator(extract=["jaeger"])
    assert only_extract.inject_formats == composite.DEFAULT_INJECT
    assert only_extract.extract_formats == ("jaeger",)


OVERSIZED = {
    "traceparent": f"01-{TRACE}-{SPAN}-01-" + "x" * 600,
    "b3": f"{TRACE}-{SPAN}-1" + " " * 200,
    "x-trace-info": f"v2;{TRACE};{SPAN};1;;" + "x" * 300,
    "uber-trace-id": f"{TRACE}:{SPAN}:0:1" + " " * 200,
}


@pytest.mark.parametrize(("name", "value"), OVERSIZED.items(), ids=list(OVERSIZED))
def test_oversized_headers_are_ignored_and_logged(
    name: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tomograph.propagation"):
        assert Propagator().extract({name: value}) is None
    assert f"ignoring {name} header" in caplog.text


MALFORMED = {
    "traceparent": f"00-{TRACE.upper()}-{SPAN}-01",
    "b3": f"{TRACE}-{SPAN}-x",
    "x-trace-info": f"v1;{TRACE};{SPAN};x",
    "uber-trace-id": f"{TRACE}:{SPAN}:0",
}


@pytest.mark.parametrize(("name", "value"), MALFORMED.items(), ids=list(MALFORMED))
def test_malformed_headers_are_ignored_and_logged(
    name: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="tomograph.propagation"):
        assert Propagator().extract({name: value}) is None
    assert "ignoring" in caplog.text and value in caplog.text


def test_inject_replaces_the_same_headers_written_in_another_case() -> None:
    headers = {"Traceparent": "old", "X-B3-TraceId": "old", "Accept": "*/*"}
    Propagator(["w3c", "b3"]).inject(CONTEXT, headers)
    assert "Traceparent" not in headers and "X-B3-TraceId" not in headers
    assert headers["Accept"] == "*/*"
    assert Propagator(["w3c"]).extract(headers) is not None
