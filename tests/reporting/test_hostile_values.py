"""Every encoder writes every value it may meet, the same way on every backend, and one span it
cannot write never takes its batch down with it."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

import tomograph
from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer, TracingError
from tomograph.encoding import otlp, zipkin_json, zipkin_proto
from tomograph.encoding import zipkin_v1_thrift as zipkin_thrift
from tomograph.model import Endpoint, TraceContext
from tomograph.reporting.log import LogBackend
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.statsd import StatsdSender
from tomograph.reporting.zipkin import ZipkinBackend
from tomograph.span import Span

# -- what each backend makes of one span ------------------------------------------------------


def _span(
    name: object = "op",
    tags: dict[Any, Any] | None = None,
    note: object = None,
    service: str = "svc",
    remote: Endpoint | None = None,
) -> Span:
    memory = MemoryBackend()
    span = Tracer(service, backends=[memory]).start_span(
        name,  # type: ignore[arg-type]
        kind="client",
        remote_endpoint=remote,
    )
    for key, value in (tags or {}).items():
        span.tag(key, value)
    if note is not None:
        span.annotate(note)  # type: ignore[arg-type]
    span.finish()
    return span


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("tomograph.test.hostile")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def zipkin_views(span: Span, log_lines: _Lines) -> dict[str, dict[str, Any]]:
    """The span as each Zipkin-shaped backend writes it: name, tags (strings) and notes."""
    views: dict[str, dict[str, Any]] = {}
    for codec in (zipkin_json, zipkin_proto):
        decoded = codec.decode_spans(codec.encode_spans([span]))[0]
        views[codec.__name__.rsplit(".", 1)[1]] = {
            "name": decoded.get("name", ""),
            "tags": decoded.get("tags", {}),
            "notes": [note["value"] for note in decoded.get("annotations", ())],
        }
    thrift = zipkin_thrift.decode_span(zipkin_thrift.encode_span(span))
    views["thrift"] = {
        "name": thrift["name"],
        "tags": {
            item["key"]: item["value"].decode()
            for item in thrift["binary_annotations"]
            if item["key"] != "sa"
        },
        "notes": [a["value"] for a in thrift["annotations"] if a["value"] not in ("cs", "cr")],
    }
    LogBackend(logger="tomograph.test.hostile").report(span)
    logged = json.loads(log_lines.lines.pop())
    views["log"] = {
        "name": logged["name"],
        "tags": logged.get("tags", {}),
        "notes": [note["value"] for note in logged.get("annotations", ())],
    }
    return views


def otlp_view(span: Span) -> Any:
    request = ExportTraceServiceRequest()
    request.ParseFromString(otlp.encode_spans([span]))
    return request.resource_spans[0].scope_spans[0].spans[0]


def otlp_attribute(span: Span, key: str) -> AnyValue:
    (value,) = [kv.value for kv in otlp_view(span).attributes if kv.key == key]
    return value


# -- tag values -------------------------------------------------------------------------------

# (value, its Zipkin text, its OTLP AnyValue fields)
TAG_VALUES: list[tuple[Any, str, dict[str, Any]]] = [
    ([1, 2, 3], '["1","2","3"]', {"ints": [1, 2, 3]}),
    (("a", "b"), '["a","b"]', {"strings": ["a", "b"]}),
    ([True, False], '["true","false"]', {"bools": [True, False]}),
    ([1.5, 2.5], '["1.5","2.5"]', {"doubles": [1.5, 2.5]}),
    ([1, "a"], '["1","a"]', {"strings": ["1", "a"]}),
    ([], "[]", {"ints": []}),
    ({"a": 1}, "{'a': 1}", {"string": "{'a': 1}"}),
    (None, "", {"string": ""}),
    (b"caf\xc3\xa9", "café", {"string": "café"}),
    (2**63, "9223372036854775808", {"string": "9223372036854775808"}),
    (-(2**63) - 1, "-9223372036854775809", {"string": "-9223372036854775809"}),
    (2**63 - 1, "9223372036854775807", {"int": 2**63 - 1}),
    (10**5000, hex(10**5000), {"string": hex(10**5000)}),
    (math.inf, "inf", {"double": math.inf}),
    ("a\ud800b", "a\ufffdb", {"string": "a\ufffdb"}),
    ("\ud83d\ude00", "\U0001f600", {"string": "\U0001f600"}),
]


def _otlp_fields(value: AnyValue) -> dict[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        items = [_otlp_fields(item) for item in value.array_value.values]
        kinds = {next(iter(item)) for item in items}
        name = {"int": "ints", "string": "strings", "bool": "bools", "double": "doubles"}
        return {name[kinds.pop()] if kinds else "ints": [next(iter(i.values())) for i in items]}
    return {kind.removesuffix("_value"): getattr(value, kind)}


def _short(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"int of {value.bit_length()} bits"
    return ascii(value)[:30]


@pytest.mark.parametrize(("value", "text", "typed"), TAG_VALUES, ids=_short)
def test_tag_value_is_written_alike_by_every_backend(
    value: Any, text: str, typed: dict[str, Any], log_lines: _Lines
) -> None:
    span = _span(tags={"key": value})
    for backend, view in zipkin_views(span, log_lines).items():
        assert view["tags"] == {"key": text}, backend
    assert _otlp_fields(otlp_attribute(span, "key")) == typed


def test_nan_tag_is_nan_everywhere(log_lines: _Lines) -> None:
    span = _span(tags={"key": math.nan})
    for view in zipkin_views(span, log_lines).values():
        assert view["tags"] == {"key": "nan"}
    assert math.isnan(otlp_attribute(span, "key").double_value)


# -- names, keys, notes, services -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "note", "expected_name", "expected_key", "expected_note"),
    [
        ("op\ud800", "k\udfff", "n\udc80", "op\ufffd", "k\ufffd", "n\ufffd"),
        (123, 1, 42, "123", "1", "42"),
        (b"op", b"k", b"n", "op", "k", "n"),
    ],
    ids=["lone surrogates", "ints", "bytes"],
)
def test_names_keys_and_notes_that_are_not_clean_text_are_written_as_text(
    name: Any,
    key: Any,
    note: Any,
    expected_name: str,
    expected_key: str,
    expected_note: str,
    log_lines: _Lines,
) -> None:
    span = _span(name=name, tags={key: "v"}, note=note)
    for backend, view in zipkin_views(span, log_lines).items():
        assert view == {
            "name": expected_name,
            "tags": {expected_key: "v"},
            "notes": [expected_note],
        }, backend
    out = otlp_view(span)
    assert (out.name, out.attributes[0].key, out.events[0].name) == (
        expected_name,
        expected_key,
        expected_note,
    )
    lines = StatsdSender().lines(span)
    assert len(lines) == 2 and all(line.isascii() for line in lines)


def test_remote_service_with_a_lone_surrogate(log_lines: _Lines) -> None:
    span = _span(remote=Endpoint("peer\ud800", "10.0.0.1", None, 80))
    decoded = zipkin_json.decode_spans(zipkin_json.encode_spans([span]))[0]
    assert decoded["remoteEndpoint"]["serviceName"] == "peer\ufffd"
    assert (
        zipkin_proto.decode_spans(zipkin_proto.encode_spans([span]))[0]["remoteEndpoint"]
        == (decoded["remoteEndpoint"])
    )
    thrift = zipkin_thrift.decode_span(zipkin_thrift.encode_span(span))
    (address,) = [b for b in thrift["binary_annotations"] if b["key"] == "sa"]
    assert address["host"]["service_name"] == "peer\ufffd"
    assert otlp_attribute(span, "peer.service").string_value == "peer\ufffd"


def test_ten_megabyte_values_are_written_whole_and_not_cached() -> None:
    big = "x" * 10_000_000
    span = _span(name=big, tags={big: big}, note=big)
    for _ in range(3):  # caches keyed by name and tag key must not keep 10 MB keys
        body = zipkin_json.encode_spans([span])
        assert len(body) > 40_000_000
        assert len(zipkin_proto.encode_spans([span])) > 40_000_000
    assert big not in zipkin_json._static_by_name and big not in zipkin_proto._static_by_name
    assert all(key[1] != big for key in zipkin_json._static_json)
    assert all(key[1] != big for key in zipkin_proto._static_fields)
    assert big not in zipkin_json._tag_keys and big not in zipkin_proto._tag_key_fields


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(),
    key=st.text(),
    value=st.one_of(
        st.text(),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.binary(),
        st.lists(st.one_of(st.integers(), st.text(), st.booleans(), st.floats()), max_size=4),
    ),
    note=st.text(),
)
def test_any_value_is_encoded_by_every_encoder(name: str, key: str, value: Any, note: str) -> None:
    span = _span(name=name, tags={key: value}, note=note)
    from_json = zipkin_json.decode_spans(zipkin_json.encode_spans([span]))[0]
    from_proto = zipkin_proto.decode_spans(zipkin_proto.encode_spans([span]))[0]
    assert from_json == from_proto
    tags = from_json.get("tags", {})
    notes = [note["value"] for note in from_json.get("annotations", ())]
    for text in [from_json.get("name", ""), *tags, *tags.values(), *notes]:
        text.encode("utf-8")  # no lone surrogate is left
    if isinstance(value, str) and value.isascii() and key.isascii():
        assert tags == {key: value}  # clean text is written as it is
    zipkin_thrift.decode_span(zipkin_thrift.encode_span(span))
    ExportTraceServiceRequest().ParseFromString(otlp.encode_spans([span]))
    StatsdSender().encode([span])


class _IntWithoutText(int):
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


class _FloatWithoutText(float):
    def __str__(self) -> str:
        raise RuntimeError("no text")

    __repr__ = __str__


def test_numbers_of_subclasses_whose_str_fails_are_written_as_their_value() -> None:
    # An int or float subclass with a broken __str__ must not cost the span its delivery.
    span = _span(
        tags={
            "int": _IntWithoutText(7),
            "float": _FloatWithoutText(1.5),
            "list": [_IntWithoutText(1)],
        }
    )
    from_json = zipkin_json.decode_spans(zipkin_json.encode_spans([span]))[0]
    assert from_json["tags"] == {"int": "7", "float": "1.5", "list": '["1"]'}
    assert zipkin_proto.decode_spans(zipkin_proto.encode_spans([span]))[0] == from_json
    zipkin_thrift.decode_span(zipkin_thrift.encode_span(span))
    ExportTraceServiceRequest().ParseFromString(otlp.encode_spans([span]))


def test_json_and_proto_agree_on_hostile_values() -> None:
    span = _span(name="n\udc00\ud800", tags={"k": ["x\ud800", 2**70]}, note="\udfff")
    from_json = zipkin_json.decode_spans(zipkin_json.encode_spans([span]))
    from_proto = zipkin_proto.decode_spans(zipkin_proto.encode_spans([span]))
    assert from_json == from_proto
    assert from_json[0]["tags"]["k"] == '["x\ufffd","1180591620717411303424"]'


# -- values the API refuses -------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, 2**63, "1700000000000000", True])
def test_a_timestamp_no_format_can_carry_is_refused(bad: object) -> None:
    tracer = Tracer("svc")
    with pytest.raises(TracingError, match="epoch microseconds"):
        tracer.start_span("op", timestamp_us=bad)  # type: ignore[arg-type]
    span = tracer.start_span("op")
    with pytest.raises(TracingError, match="epoch microseconds"):
        span.annotate_at("note", bad)  # type: ignore[arg-type]
    with pytest.raises(TracingError, match="epoch microseconds"):
        span.finish(bad)  # type: ignore[arg-type]
    span.finish()


def test_a_float_timestamp_is_accepted() -> None:
    span = Tracer("svc").start_span("op", timestamp_us=1_700_000_000_000_000.0)
    assert span.timestamp == 1_700_000_000_000_000


@pytest.mark.parametrize(
    "ids",
    [(2**128, 1), (0, 1), (-1, 1), (1, 2**64), (1, 0), ("ab", 1), (1.0, 1)],
    ids=_short,
)
def test_a_trace_context_holds_only_ids_every_format_can_carry(ids: tuple[Any, Any]) -> None:
    with pytest.raises(ValueError, match="_id must be"):
        TraceContext(*ids)


# -- one bad span in a batch ------------------------------------------------------------------


def test_a_span_the_encoder_cannot_write_is_dropped_alone_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    memory = MemoryBackend()
    tracer = Tracer("svc", backends=[memory])
    for index in range(100):
        with tracer.span(f"op{index}"):
            pass
    spans = memory.spans
    # A span changed after it finished (not through the API) with an id proto3 cannot carry.
    spans[37].trace_id = 1 << 130
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, encoding="proto", batch_size=500)
        for span in spans:
            backend.report(span)
        assert backend.flush(10)
        arrived = server.wait_for(99)
        stats = backend.stats()
        backend.close(1)
    assert sorted(span["name"] for span in arrived) == sorted(
        f"op{index}" for index in range(100) if index != 37
    )
    assert stats["sent"] == 99 and stats["failed"] == 1
    assert stats["queued"] == stats["sent"] + stats["failed"] + stats["dropped"] + stats["pending"]
    # halving finds it: each level sends its good half, so a few requests, never one per span
    assert len(server.requests) <= 8
    (logged,) = [record for record in caplog.records if "op37" in record.getMessage()]
    assert logged.exc_info is not None and logged.exc_info[1] is not None
    assert logged.exc_info[1].__context__ is None  # one error, not the chain of every attempt


def test_default_tracer_spans_with_hostile_values_reach_zipkin_as_valid_json() -> None:
    with RecordingZipkinServer() as server:
        tomograph.configure(service="svc", backends=[ZipkinBackend(server.url)], environ={})
        try:
            with tomograph.span("bad \ud800 name", tags={"l": [1, 2], 3: None}) as span:
                span.annotate("note \udfff")
                span.tag("huge", 10**5000)
            assert tomograph.flush(10)
            (arrived,) = server.wait_for(1)
        finally:
            tomograph.configure(backends=[], environ={})
    assert not server.invalid
    assert arrived["name"] == "bad \ufffd name"
    assert arrived["tags"] == {"l": '["1","2"]', "3": "", "huge": hex(10**5000)}
    assert arrived["annotations"][0]["value"] == "note \ufffd"
