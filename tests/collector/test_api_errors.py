"""Hostile and extreme input over real HTTP: every answer is a clear 4xx (or a retryable 503),
never a crash, always with the security headers; limits hold."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.collector.conftest import ServedApp
from tests.support.collector import make_span, otlp_sharing_attributes

from tomograph.collector.app import SECURITY_HEADERS
from tomograph.collector.span_limits import DROPPED_TAG, SpanLimits, truncation_marker
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import DependencyLink, SpanDict
from tomograph.encoding import zipkin_proto

T1 = "4e441824ec2b6a44"
T2 = "5af7183fb1d4cf5f"
JSON = {"Content-Type": "application/json"}


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    app: ServedApp,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    connection = http.client.HTTPConnection(app.settings.host, app.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        return Answer(connection.getresponse())
    finally:
        connection.close()


def post_spans(app: ServedApp, spans: Sequence[SpanDict], **headers: str) -> Answer:
    return request(app, "POST", "/api/v2/spans", json.dumps(spans).encode(), {**JSON, **headers})


def assert_security_headers(answer: Answer) -> None:
    for name, value in SECURITY_HEADERS:
        assert answer.headers[name.decode()] == value.decode(), (answer.status, name)


# -- numbers beyond what the store holds ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("timestamp", {"timestamp": 1 << 63}),
        ("duration", {"duration": 1 << 63}),
        ("timestamp", {"timestamp": (1 << 64) - 1}),
        ("annotations[0].timestamp", {"annotations": [{"timestamp": 1 << 63, "value": "x"}]}),
    ],
)
def test_times_from_2_63_get_400_naming_the_field(
    served: ServedApp, field: str, change: dict[str, Any]
) -> None:
    spans = [make_span(T1, "0000000000000001"), {**make_span(T1, "0000000000000002"), **change}]
    answer = post_spans(served, spans)
    assert answer.status == 400
    assert f"span 1: {field} must be below 2^63" in answer.json()["error"]
    assert request(served, "GET", f"/api/v2/trace/{T1}").status == 404  # nothing stored


def test_proto3_times_from_2_63_get_400(served: ServedApp) -> None:
    body = zipkin_proto.encode_dicts([{**make_span(T1, "0000000000000001"), "timestamp": 1 << 63}])
    answer = request(
        served, "POST", "/api/v2/spans", body, {"Content-Type": "application/x-protobuf"}
    )
    assert (answer.status, "timestamp" in answer.json()["error"]) == (400, True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v2/traces?endTs={}",
        "/api/v2/dependencies?endTs={}",
        "/api/v2/tomograph/operations?serviceName=svc&endTs={}",
        "/api/v2/tomograph/operationSamples?serviceName=svc&spanName=&kind=LOCAL&endTs={}",
        "/api/v2/traces?lookback={}",
    ],
)
@pytest.mark.parametrize("value", [9223372036854776, (1 << 63) - 1, 1 << 63, 10**30])
def test_times_the_store_cannot_compare_get_400(served: ServedApp, path: str, value: int) -> None:
    answer = request(served, "GET", path.format(value))
    assert answer.status == 400
    assert "must be at most 9223372036854775" in answer.json()["error"]


def test_the_largest_end_ts_is_accepted(served: ServedApp) -> None:
    assert request(served, "GET", "/api/v2/traces?endTs=9223372036854775").status == 200
    assert request(served, "GET", "/api/v2/dependencies?endTs=9223372036854775").status == 200


@pytest.mark.parametrize("value", ["%205", "+5", "1_0", "%D9%A5", "5%0A", "0x10", "-1"])
def test_integer_parameters_are_plain_digits(served: ServedApp, value: str) -> None:
    answer = request(served, "GET", f"/api/v2/traces?limit={value}")
    assert answer.status == 400
    assert "limit must be" in answer.json()["error"]


# -- OTLP/JSON text protobuf cannot hold ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        rb'{"resourceSpans":[{"resource":"\ud800"}]}',  # a string where a message is expected
        rb'{"resourceSpans":[{"\ud800":1}]}',  # in a key
        rb'{"resourceSpans":[{"scopeSpans":[{"spans":[{"\udfff":{}}]}]}]}',
        rb'{"resourceSpans":[{"resource":{"attributes":[{"key":"k",'
        rb'"value":{"stringValue":"a\ud800"}}]}}]}',
    ],
)
def test_otlp_json_with_lone_surrogates_gets_400(served: ServedApp, body: bytes) -> None:
    answer = request(served, "POST", "/v1/traces", body, JSON)
    assert answer.status == 400
    assert "lone surrogate" in answer.json()["error"]


# -- sizes: what one span may hold, what one answer may cost --------------------------------------


def test_a_10_mb_tag_is_stored_cut_with_a_marker(served: ServedApp) -> None:
    huge = "x" * 10_000_000  # under the 10 MiB body limit, and 21 KB gzipped
    span = make_span(T1, "0000000000000001", tags={"payload": huge, "small": "kept"})
    span["annotations"] = [{"timestamp": span["timestamp"] + 1, "value": "x" * 400_000}]
    body = gzip.compress(json.dumps([span]).encode())
    answer = request(served, "POST", "/api/v2/spans", body, {**JSON, "Content-Encoding": "gzip"})
    assert answer.status == 202
    [stored] = request(served, "GET", f"/api/v2/trace/{T1}").json()
    limit = SpanLimits().max_value_length
    for value, length in (
        (stored["tags"]["payload"], 10_000_000),
        (stored["annotations"][0]["value"], 400_000),
    ):
        assert len(value) == limit
        assert value.endswith(truncation_marker(length))
        assert value.startswith("x" * (limit - 64))
    assert stored["tags"]["small"] == "kept"


def test_otlp_senders_are_told_what_was_cut(served: ServedApp) -> None:
    trace = "4e441824ec2b6a44ffdc9bb9a6453df3"
    span = {
        "traceId": trace,
        "spanId": "ffdc9bb9a6453df3",
        "name": "big",
        "attributes": [{"key": "sql", "value": {"stringValue": "s" * 100_000}}],
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    answer = request(served, "POST", "/v1/traces", json.dumps(document).encode(), JSON)
    assert answer.status == 200
    assert "1 texts were cut" in answer.json()["partialSuccess"]["errorMessage"]
    [stored] = request(served, "GET", f"/api/v2/trace/{trace}").json()
    assert stored["tags"]["sql"].endswith(truncation_marker(100_000))


def test_a_span_over_the_span_limit_is_cut_to_fit(tmp_path: Path) -> None:
    limits = SpanLimits(max_value_length=10_000, max_span_length=20_000)
    with ServedApp(tmp_path, span_limits=limits) as app:
        tags = {f"t{i}": "v" * 10_000 for i in range(5)}
        tags.update({f"small{i}": "s" for i in range(3)})
        assert post_spans(app, [make_span(T1, "0000000000000001", tags=tags)]).status == 202
        [stored] = request(app, "GET", f"/api/v2/trace/{T1}").json()
        assert sum(len(k) + len(v) for k, v in stored["tags"].items()) <= 20_000
        assert all(stored["tags"][f"small{i}"] == "s" for i in range(3))
        assert DROPPED_TAG not in stored["tags"]  # cutting was enough: nothing dropped


def test_a_trace_answer_is_bounded_whatever_the_trace_holds(tmp_path: Path) -> None:
    store = SqliteSpanStore(tmp_path / "bounded.db", max_response_bytes=300_000)
    with ServedApp(tmp_path, store=store) as app:
        for batch in range(4):
            spans = [
                make_span(T1, f"{batch * 10 + i + 1:016x}", tags={"v": "x" * 60_000})
                for i in range(10)
            ]
            assert post_spans(app, spans).status == 202
        assert len(store.get_trace(T1) or []) == 40  # all stored...
        for path in (f"/api/v2/trace/{T1}", "/api/v2/traces?limit=1", "/api/v2/traces?limit=10"):
            answer = request(app, "GET", path)
            assert answer.status == 200
            assert 60_000 < len(answer.body) <= 300_000 + 100  # ...but an answer is bounded
            json.loads(answer.body)


# -- gzip -----------------------------------------------------------------------------------------


def test_every_gzip_member_is_read(served: ServedApp) -> None:
    # proto3 messages concatenate: two ListOfSpans make one with both traces
    first = zipkin_proto.encode_dicts([make_span(T1, "0000000000000001")])
    second = zipkin_proto.encode_dicts([make_span(T2, "0000000000000002")])
    body = gzip.compress(first) + gzip.compress(second)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert request(served, "POST", "/api/v2/spans", body, headers).status == 202
    assert request(served, "GET", f"/api/v2/trace/{T1}").status == 200
    assert request(served, "GET", f"/api/v2/trace/{T2}").status == 200


def test_a_json_body_split_across_gzip_members_is_read_whole(served: ServedApp) -> None:
    text = json.dumps([make_span(T1, "0000000000000001"), make_span(T2, "0000000000000002")])
    middle = len(text) // 2
    body = gzip.compress(text[:middle].encode()) + gzip.compress(text[middle:].encode())
    answer = request(served, "POST", "/api/v2/spans", body, {**JSON, "Content-Encoding": "gzip"})
    assert answer.status == 202
    assert request(served, "GET", f"/api/v2/trace/{T2}").status == 200


def test_two_json_documents_in_two_members_are_refused_not_half_read(served: ServedApp) -> None:
    first = gzip.compress(json.dumps([make_span(T1, "0000000000000001")]).encode())
    second = gzip.compress(json.dumps([make_span(T2, "0000000000000002")]).encode())
    answer = request(
        served, "POST", "/api/v2/spans", first + second, {**JSON, "Content-Encoding": "gzip"}
    )
    assert answer.status == 400
    assert request(served, "GET", f"/api/v2/trace/{T1}").status == 404


def test_garbage_after_a_gzip_member_gets_400(served: ServedApp) -> None:
    body = gzip.compress(b"[]") + b"\x00\x00garbage"
    answer = request(served, "POST", "/api/v2/spans", body, {**JSON, "Content-Encoding": "gzip"})
    assert answer.status == 400
    assert "member 2" in answer.json()["error"]


def test_members_that_inflate_past_the_limit_together_get_413(tmp_path: Path) -> None:
    with ServedApp(tmp_path, max_body_bytes=100_000) as app:
        member = gzip.compress(b" " * 60_000)  # each under the limit, both together over it
        body = gzip.compress(b"[") + member + member + gzip.compress(b"]")
        headers = {**JSON, "Content-Encoding": "gzip"}
        assert request(app, "POST", "/api/v2/spans", body, headers).status == 413


def test_otlp_attributes_shared_by_many_spans_are_copied_up_to_a_bound(tmp_path: Path) -> None:
    # each span gets its resource's attributes as tags: 1,000 spans under a 10 KB attribute make
    # a 40 KB request decode to 10 MB (a 2 MB one, to gigabytes), so a request may copy at most
    # 16 times the body limit; the spans past it are stored without them, and the sender told
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    protobuf = {"Content-Type": "application/x-protobuf"}
    with ServedApp(tmp_path, max_body_bytes=100_000) as app:
        body = otlp_sharing_attributes(bytes(8) + bytes.fromhex(T1), 1000, "x" * 10_000)
        answer = request(app, "POST", "/v1/traces", body, protobuf)
        assert answer.status == 200
        warning = ExportTraceServiceResponse.FromString(answer.body).partial_success
        assert warning.rejected_spans == 0
        assert "without their resource and scope attributes" in warning.error_message
        trace = request(app, "GET", f"/api/v2/trace/{T1}").json()
        assert len(trace) == 1000  # every span kept
        with_labels = [span for span in trace if span["tags"].get("k8s.labels") == "x" * 10_000]
        uncopied = [span for span in trace if "tomograph.uncopied" in span["tags"]]
        assert len(with_labels) + len(uncopied) == 1000
        assert 100 < len(with_labels) < 200  # 1.6 MB of copies, about 10 KB each
        assert int(warning.error_message.split()[0]) == len(uncopied)
        # within the bound, every span gets them
        body = otlp_sharing_attributes(bytes(8) + bytes.fromhex(T2), 100, "x" * 10_000)
        answer = request(app, "POST", "/v1/traces", body, protobuf)
        assert (
            ExportTraceServiceResponse.FromString(answer.body).partial_success.error_message == ""
        )
        trace = request(app, "GET", f"/api/v2/trace/{T2}").json()
        assert len(trace) == 100
        assert {span["tags"]["k8s.labels"] for span in trace} == {"x" * 10_000}


# -- a full disk --------------------------------------------------------------------------------


def test_a_full_disk_gets_503_with_retry_after_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    store = SqliteSpanStore(tmp_path / "full.db", max_age=None)
    with ServedApp(tmp_path, store=store) as app:
        assert post_spans(app, [make_span(T1, "0000000000000001")]).status == 202
        # SQLite's page cap fails writes the way a full disk does (SQLITE_FULL)
        pages = store._writer.execute("PRAGMA page_count").fetchone()[0]
        store._writer.execute(f"PRAGMA max_page_count = {pages + 2}")
        spans = [make_span(T2, f"{i + 1:016x}", tags={"v": f"{i:05d}" * 2000}) for i in range(50)]
        answer = post_spans(app, spans)
        assert answer.status == 503
        assert answer.headers["Retry-After"].isdigit()
        assert "full" in answer.json()["error"]
        assert_security_headers(answer)
        # what was acknowledged is there, the refused batch left nothing half-written
        assert len(request(app, "GET", f"/api/v2/trace/{T1}").json()) == 1
        assert request(app, "GET", f"/api/v2/trace/{T2}").status == 404
        assert store.span_count() == 1
        # once there is room again, the sender's retry lands whole
        store._writer.execute("PRAGMA max_page_count = 1073741823")
        assert post_spans(app, spans).status == 202
        assert len(request(app, "GET", f"/api/v2/trace/{T2}").json()) == 50


# -- every answer carries the security headers --------------------------------------------------


class BrokenStore(SqliteSpanStore):
    """A store with a bug in one query: the collector must still answer JSON 500, with headers."""

    def dependencies(self, end_ts: int, lookback: int) -> list[DependencyLink]:
        raise ZeroDivisionError("a bug")


@pytest.fixture
def broken(tmp_path: Path) -> Any:
    with ServedApp(
        tmp_path, store=BrokenStore(tmp_path / "broken.db"), token="s3cret", max_body_bytes=1000
    ) as app:
        yield app


AUTH = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    ("status", "method", "path", "body", "headers"),
    [
        (200, "GET", "/api/v2/services", None, AUTH),
        (200, "GET", "/", None, {}),
        (202, "POST", "/api/v2/spans", b"[]", {**AUTH, **JSON}),
        (400, "GET", "/api/v2/traces?limit=x", None, AUTH),
        (400, "GET", "/api/v2/services", None, {**AUTH, "Host": "evil.example"}),
        (401, "GET", "/api/v2/services", None, {}),
        (403, "GET", "/api/v2/services", None, {**AUTH, "Origin": "http://evil.example"}),
        (404, "GET", "/api/v2/nothing", None, AUTH),
        (404, "GET", "/ui/nothing.js", None, {}),
        (405, "DELETE", "/api/v2/spans", None, AUTH),
        (413, "POST", "/api/v2/spans", b" " * 2000, {**AUTH, **JSON}),
        (415, "POST", "/api/v2/spans", b"[]", {**AUTH, "Content-Type": "text/plain"}),
        (500, "GET", "/api/v2/dependencies?endTs=1", None, AUTH),
    ],
)
def test_every_status_carries_the_security_headers(
    broken: ServedApp,
    status: int,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    answer = request(broken, method, path, body, headers)
    assert answer.status == status
    assert_security_headers(answer)
    if path.startswith("/api/") and status >= 400:
        assert answer.headers["Content-Type"] == "application/json"
        assert "error" in answer.json()


def test_a_handler_bug_answers_json_500_without_details(broken: ServedApp) -> None:
    answer = request(broken, "GET", "/api/v2/dependencies?endTs=1", headers=AUTH)
    assert answer.status == 500
    assert "a bug" not in answer.json()["error"]
    assert request(broken, "GET", "/health").status == 200  # and keeps serving


# -- DNS rebinding, whatever the loopback address ------------------------------------------------


def test_a_server_on_another_loopback_address_refuses_foreign_host_headers(
    tmp_path: Path,
) -> None:
    with ServedApp(tmp_path, host="127.0.0.2") as app:
        spans = [make_span(T1, "0000000000000001")]
        for host in ("evil.example", f"evil.example:{app.port}", "127.0.0.2.evil.example", ""):
            assert post_spans(app, spans, Host=host).status == 400
            assert request(app, "GET", "/api/v2/services", headers={"Host": host}).status == 400
        assert request(app, "GET", "/api/v2/services").json() == []  # nothing was written
        for host in (
            f"127.0.0.2:{app.port}",
            "127.0.0.2",
            f"localhost:{app.port}",
            "localhost",
            f"[::1]:{app.port}",
        ):
            assert request(app, "GET", "/api/v2/services", headers={"Host": host}).status == 200
        assert post_spans(app, spans, Host=f"localhost:{app.port}").status == 202
