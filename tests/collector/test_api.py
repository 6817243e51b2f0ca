"""The collector's HTTP API over real HTTP (uvicorn), checked against Zipkin's OpenAPI spec."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.collector.conftest import ServedApp
from tests.support.collector import http, make_span, now_us, validate_response

from tomograph.encoding import zipkin_proto

T1 = "4e441824ec2b6a44ffdc9bb9a6453df3"
T2 = "5af7183fb1d4cf5f"
JSON = {"Content-Type": "application/json"}


def post_spans(app: ServedApp, spans: list[dict[str, Any]], **headers: str) -> tuple[int, bytes]:
    return http("POST", f"{app.url}/api/v2/spans", json.dumps(spans).encode(), {**JSON, **headers})


def get(app: ServedApp, path: str, **headers: str) -> tuple[int, Any]:
    status, body = http("GET", f"{app.url}{path}", headers=headers)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def rpc_trace(trace_id: str = T1, error: bool = False) -> list[dict[str, Any]]:
    start = now_us() - 50_000
    return [
        make_span(
            trace_id,
            "0000000000000001",
            name="GET /cart",
            service="frontend",
            kind="SERVER",
            timestamp=start,
            duration=40_000,
            tags={"http.method": "GET"},
        ),
        make_span(
            trace_id,
            "0000000000000002",
            parent_id="0000000000000001",
            name="get cart",
            service="frontend",
            remote="backend",
            kind="CLIENT",
            timestamp=start + 10,
            duration=30_000,
            tags={"error": "timeout"} if error else None,
        ),
        make_span(
            trace_id,
            "0000000000000002",
            parent_id="0000000000000001",
            name="get cart",
            service="backend",
            kind="SERVER",
            timestamp=start + 20,
            duration=20_000,
            shared=True,
            annotations=[(start + 30, "cache miss")],
        ),
        make_span(
            trace_id,
            "0000000000000003",
            parent_id="0000000000000002",
            name="select",
            service="backend",
            remote="postgres",
            kind="CLIENT",
            timestamp=start + 40,
            duration=5_000,
        ),
    ]


# -- ingest ------------------------------------------------------------------------------------


def test_json_spans_are_accepted_with_202(served: ServedApp) -> None:
    assert post_spans(served, rpc_trace()) == (202, b"")
    status, trace = get(served, f"/api/v2/trace/{T1}")
    assert status == 200
    assert len(trace) == 4
    validate_response("/trace/{traceId}", 200, trace)


def test_proto3_spans_are_accepted(served: ServedApp) -> None:
    body = zipkin_proto.encode_dicts(rpc_trace())
    status, _ = http(
        "POST", f"{served.url}/api/v2/spans", body, {"Content-Type": "application/x-protobuf"}
    )
    assert status == 202
    assert len(get(served, f"/api/v2/trace/{T1}")[1]) == 4


def test_gzip_bodies_are_accepted(served: ServedApp) -> None:
    body = gzip.compress(json.dumps(rpc_trace()).encode())
    status, _ = http(
        "POST", f"{served.url}/api/v2/spans", body, {**JSON, "Content-Encoding": "gzip"}
    )
    assert status == 202
    assert get(served, f"/api/v2/trace/{T1}")[0] == 200


def test_malformed_body_gets_400_naming_the_field(served: ServedApp) -> None:
    bad = rpc_trace()
    bad[1]["traceId"] = "not-hex"
    status, body = post_spans(served, bad)
    assert status == 400
    error = json.loads(body)["error"]
    assert "span 1" in error and "traceId" in error


def test_a_rejected_batch_stores_nothing(served: ServedApp) -> None:
    bad = rpc_trace()
    bad[3]["duration"] = -5
    assert post_spans(served, bad)[0] == 400
    assert get(served, f"/api/v2/trace/{T1}")[0] == 404
    assert get(served, "/api/v2/services")[1] == []


def test_lone_surrogates_are_stored_replaced(served: ServedApp) -> None:
    body = b'[{"traceId":"' + T2.encode() + b'","id":"0000000000000001","name":"a\\ud800b",'
    body += b'"localEndpoint":{"serviceName":"s\\udfffv"},"tags":{"k\\ud800":"v"}}]'
    status, _ = http("POST", f"{served.url}/api/v2/spans", body, JSON)
    assert status == 202
    [span] = get(served, f"/api/v2/trace/{T2}")[1]
    assert span["name"] == "a?b"
    assert span["localEndpoint"]["serviceName"] == "s?v"
    assert span["tags"] == {"k?": "v"}


def test_bad_gzip_gets_400(served: ServedApp) -> None:
    status, body = http(
        "POST", f"{served.url}/api/v2/spans", b"not gzip", {**JSON, "Content-Encoding": "gzip"}
    )
    assert status == 400
    assert "gzip" in json.loads(body)["error"]


def test_unsupported_content_type_gets_415(served: ServedApp) -> None:
    status, body = http(
        "POST", f"{served.url}/api/v2/spans", b"[]", {"Content-Type": "application/x-thrift"}
    )
    assert status == 415
    assert "application/x-thrift" in json.loads(body)["error"]


def test_bodies_over_the_limit_get_413(tmp_path: Path) -> None:
    with ServedApp(tmp_path, max_body_bytes=2048) as app:
        big = [make_span(T2, f"{i + 1:016x}") for i in range(40)]
        status, body = post_spans(app, big)
        assert status == 413
        assert "2048" in json.loads(body)["error"]
        # a small gzip body that inflates past the limit is refused as well
        bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
        assert len(bomb) < 2048
        status, _ = http(
            "POST", f"{app.url}/api/v2/spans", bomb, {**JSON, "Content-Encoding": "gzip"}
        )
        assert status == 413
        assert get(app, "/api/v2/services")[1] == []


# -- queries -------------------------------------------------------------------------------------


@pytest.fixture
def loaded(served: ServedApp) -> ServedApp:
    assert post_spans(served, rpc_trace(T1, error=True))[0] == 202
    assert (
        post_spans(
            served,
            [
                make_span(
                    T2,
                    "0000000000000009",
                    name="Nightly Job",
                    service="Batch",
                    tags={"env": "prod"},
                )
            ],
        )[0]
        == 202
    )
    return served


def test_services_and_names_match_the_spec(loaded: ServedApp) -> None:
    status, services = get(loaded, "/api/v2/services")
    validate_response("/services", 200, services)
    assert services == ["backend", "batch", "frontend"]
    status, names = get(loaded, "/api/v2/spans?serviceName=Batch")
    assert (status, names) == (200, ["nightly job"])
    validate_response("/services", 200, names)
    assert get(loaded, "/api/v2/remoteServices?serviceName=backend")[1] == ["postgres"]
    assert get(loaded, "/api/v2/spans?serviceName=nobody")[1] == []


def test_names_need_a_service(loaded: ServedApp) -> None:
    status, body = get(loaded, "/api/v2/spans")
    assert status == 400
    assert "serviceName" in body["error"]
    assert get(loaded, "/api/v2/remoteServices")[0] == 400


def test_traces_search_matches_the_spec(loaded: ServedApp) -> None:
    status, traces = get(loaded, "/api/v2/traces?serviceName=frontend&annotationQuery=error")
    assert status == 200
    validate_response("/traces", 200, traces)
    assert [t[0]["traceId"] for t in traces] == [T1]
    assert len(traces[0]) == 4


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("serviceName=frontend", [T1]),
        ("serviceName=batch&spanName=nightly%20job", [T2]),
        ("spanName=all", [T1, T2]),
        ("serviceName=backend&remoteServiceName=postgres", [T1]),
        ("annotationQuery=error%20and%20http.method%3DGET", [T1]),
        ("annotationQuery=env%3Dprod", [T2]),
        ("annotationQuery=cache%20miss", [T1]),
        ("serviceName=frontend&annotationQuery=cache%20miss", []),
        ("minDuration=40000", [T1]),
        ("minDuration=1&maxDuration=1000", [T2]),
        ("minDuration=40001", []),
        ("limit=1", [T1]),
        ("endTs=1000&lookback=1000", []),
    ],
)
def test_traces_search_criteria(loaded: ServedApp, query: str, expected: list[str]) -> None:
    status, traces = get(loaded, f"/api/v2/traces?{query}")
    assert status == 200, traces
    found = [t[0]["traceId"] for t in traces]
    if query == "limit=1":
        assert len(found) == 1
    else:
        assert sorted(found) == sorted(expected)


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=0",
        "limit=-3",
        "endTs=yesterday",
        "lookback=0",
        "maxDuration=10",
        "minDuration=10&maxDuration=5",
        "minDuration=0",
        "annotationQuery=%3Dvalue",
    ],
)
def test_bad_search_parameters_get_400(loaded: ServedApp, query: str) -> None:
    status, body = get(loaded, f"/api/v2/traces?{query}")
    assert status == 400
    assert body["error"]


def test_trace_lookup_is_lenient_on_64_bit_ids(loaded: ServedApp) -> None:
    status, trace = get(loaded, f"/api/v2/trace/{T1[16:]}")
    assert status == 200
    assert {span["traceId"] for span in trace} == {T1}
    assert get(loaded, f"/api/v2/trace/{T1.upper()}")[0] == 200


def test_unknown_trace_is_404_and_a_bad_id_400(loaded: ServedApp) -> None:
    status, body = get(loaded, "/api/v2/trace/1111111111111111")
    assert status == 404
    assert "1111111111111111" in body["error"]
    assert get(loaded, "/api/v2/trace/xyz")[0] == 400
    assert get(loaded, "/api/v2/trace/" + "a" * 33)[0] == 400
    assert get(loaded, "/api/v2/trace/" + "0" * 16)[0] == 400


def test_trace_many_returns_the_known_traces(loaded: ServedApp) -> None:
    status, traces = get(loaded, f"/api/v2/traceMany?traceIds={T1},{T2},1234567812345678")
    assert status == 200
    validate_response("/traceMany", 200, traces)
    assert sorted(t[0]["traceId"] for t in traces) == sorted([T1, T2])


@pytest.mark.parametrize("ids", ["", T2, f"{T2},{T2}", f"{T2},zz"])
def test_trace_many_needs_two_distinct_valid_ids(loaded: ServedApp, ids: str) -> None:
    assert get(loaded, f"/api/v2/traceMany?traceIds={ids}")[0] == 400


def test_dependencies_merge_shared_client_and_server_spans(loaded: ServedApp) -> None:
    end_ts = now_us() // 1000 + 1000
    status, links = get(loaded, f"/api/v2/dependencies?endTs={end_ts}&lookback=3600000")
    assert status == 200
    validate_response("/dependencies", 200, links)
    assert links == [
        {"parent": "backend", "child": "postgres", "callCount": 1, "errorCount": 0},
        # one call, not two, although client and server both reported span 2; the client failed
        {"parent": "frontend", "child": "backend", "callCount": 1, "errorCount": 1},
    ]


def test_dependencies_need_end_ts(loaded: ServedApp) -> None:
    status, body = get(loaded, "/api/v2/dependencies")
    assert status == 400
    assert "endTs" in body["error"]


def test_autocomplete(loaded: ServedApp) -> None:
    status, keys = get(loaded, "/api/v2/autocompleteKeys")
    assert status == 200
    validate_response("/autocompleteKeys", 200, keys)
    assert "http.method" in keys
    status, values = get(loaded, "/api/v2/autocompleteValues?key=http.method")
    assert status == 200
    validate_response("/autocompleteValues", 200, values)
    assert values == ["GET"]
    assert get(loaded, "/api/v2/autocompleteValues?key=env")[1] == []  # not a configured key
    assert get(loaded, "/api/v2/autocompleteValues")[0] == 400


def test_operations_endpoint(loaded: ServedApp) -> None:
    status, ops = get(loaded, "/api/v2/tomograph/operations?serviceName=frontend")
    assert status == 200
    by_name = {op["spanName"]: op for op in ops}
    assert by_name["get cart"]["errorCount"] == 1
    assert by_name["get /cart"]["p99"] == 40_000
    assert get(loaded, "/api/v2/tomograph/operations")[0] == 400


def test_operations_name_the_kind_of_each_operation(loaded: ServedApp) -> None:
    status, ops = get(loaded, "/api/v2/tomograph/operations?serviceName=backend")
    assert status == 200
    assert [(op["spanName"], op["kind"], op["count"]) for op in ops] == [
        ("get cart", "SERVER", 1),
        ("select", "CLIENT", 1),
    ]


def test_operation_samples_endpoint(loaded: ServedApp) -> None:
    base = "/api/v2/tomograph/operationSamples?serviceName=Frontend&spanName=Get%20Cart"
    status, answer = get(loaded, base + "&kind=client")
    assert status == 200
    [[timestamp, duration, error, trace_id]] = answer["samples"]
    assert (duration, error, trace_id, answer["truncated"]) == (30_000, 1, T1[16:], False)
    assert abs(timestamp - now_us()) < 3_600_000_000
    # the same name as a server span is another operation
    assert get(loaded, base + "&kind=SERVER")[1] == {"samples": [], "truncated": False}
    local = "/api/v2/tomograph/operationSamples?serviceName=batch&spanName=nightly%20job&kind=LOCAL"
    assert [d for _, d, _, _ in get(loaded, local)[1]["samples"]] == [1000]
    assert get(loaded, local + "&limit=1")[1]["truncated"] is False


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("spanName=a&kind=SERVER", "serviceName"),
        ("serviceName=a&kind=SERVER", "spanName"),
        ("serviceName=a&spanName=a", "kind"),
        ("serviceName=a&spanName=a&kind=", "kind"),
        ("serviceName=a&spanName=a&kind=internal", "kind"),
        ("serviceName=a&spanName=a&kind=%C5%BFerver", "kind"),  # long s: upper() is SERVER
        ("serviceName=a&spanName=a&kind=SERVER&limit=100001", "limit"),
        ("serviceName=a&spanName=a&kind=SERVER&limit=NaN", "limit"),
        ("serviceName=a&spanName=a&kind=SERVER&limit=0", "limit"),
        ("serviceName=a&spanName=a&kind=SERVER&endTs=9223372036854775808", "endTs"),
        ("serviceName=a&spanName=a&kind=SERVER&lookback=-1", "lookback"),
        ("serviceName=a&spanName=" + "x" * 1025 + "&kind=SERVER", "spanName"),
    ],
)
def test_operation_samples_refuse_bad_parameters_with_400(
    served: ServedApp, query: str, named: str
) -> None:
    status, body = get(served, f"/api/v2/tomograph/operationSamples?{query}")
    assert status == 400
    assert named in body["error"]


@pytest.mark.parametrize(
    "query",
    [
        "serviceName=%ED%A0%80&spanName=%ED%A0%80&kind=LOCAL",  # a lone surrogate, UTF-8 encoded
        "serviceName=a&spanName=%00%FF&kind=LOCAL",
        "serviceName=a&spanName=&kind=LOCAL&lookback=9223372036854775",  # a huge lookback
        "serviceName=a&spanName=&kind=LOCAL&endTs=1&lookback=1",
    ],
)
def test_operation_samples_of_odd_names_and_windows_are_empty(
    served: ServedApp, query: str
) -> None:
    status, body = get(served, f"/api/v2/tomograph/operationSamples?{query}")
    assert (status, body) == (200, {"samples": [], "truncated": False})


def test_unknown_path_is_a_json_404(served: ServedApp) -> None:
    status, body = get(served, "/api/v2/nothing")
    assert status == 404
    assert "error" in body


def test_the_ui_is_served(served: ServedApp) -> None:
    status, body = http("GET", f"{served.url}/")
    assert status == 200
    assert b"<title>tomograph</title>" in body
    for asset in ("app.js", "style.css", "favicon.svg"):
        assert http("GET", f"{served.url}/ui/{asset}")[0] == 200


# -- security --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/ui/app.js", "/api/v2/services", "/api/v2/nothing"])
def test_every_answer_forbids_framing_and_content_sniffing(served: ServedApp, path: str) -> None:
    try:
        with urllib.request.urlopen(f"{served.url}{path}", timeout=20) as response:
            headers = response.headers
    except urllib.error.HTTPError as error:
        headers = error.headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_a_token_protects_ingest_and_query(tmp_path: Path) -> None:
    with ServedApp(tmp_path, token="s3cret") as app:
        assert post_spans(app, rpc_trace())[0] == 401
        assert get(app, "/api/v2/services")[0] == 401
        assert get(app, "/api/v2/services", Authorization="Bearer wrong")[0] == 401
        for path in (
            "operations?serviceName=a",
            "operationSamples?serviceName=a&spanName=&kind=LOCAL",
        ):
            assert get(app, f"/api/v2/tomograph/{path}")[0] == 401
            assert get(app, f"/api/v2/tomograph/{path}", Authorization="Bearer s3cret")[0] == 200
        assert post_spans(app, rpc_trace(), Authorization="Bearer s3cret")[0] == 202
        status, services = get(app, "/api/v2/services", Authorization="Bearer s3cret")
        assert (status, services) == (200, ["backend", "frontend"])
        status, _ = http(
            "POST", f"{app.url}/v1/traces", b"", {"Content-Type": "application/x-protobuf"}
        )
        assert status == 401


def test_cors_is_off_by_default_and_cross_origin_writes_are_refused(served: ServedApp) -> None:
    status, _ = http(
        "GET", f"{served.url}/api/v2/services", headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    status, _ = post_spans(served, rpc_trace(), Origin="http://evil.example")
    assert status == 403
    assert get(served, "/api/v2/services")[1] == []
    # the UI's own origin is fine
    assert post_spans(served, rpc_trace(), Origin=served.url)[0] == 202


def test_a_cors_origin_can_be_allowed(tmp_path: Path) -> None:
    with ServedApp(tmp_path, cors_origins=("http://ui.example",)) as app:
        import urllib.request

        request = urllib.request.Request(
            f"{app.url}/api/v2/services", headers={"Origin": "http://ui.example"}
        )
        with urllib.request.urlopen(request) as response:
            assert response.headers["Access-Control-Allow-Origin"] == "http://ui.example"
        preflight = urllib.request.Request(
            f"{app.url}/api/v2/spans",
            method="OPTIONS",
            headers={
                "Origin": "http://ui.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        with urllib.request.urlopen(preflight) as response:
            assert response.status == 200
        assert post_spans(app, rpc_trace(), Origin="http://other.example")[0] == 403


def test_a_foreign_host_header_is_refused_on_loopback(served: ServedApp) -> None:
    # what a DNS-rebinding page would send
    assert get(served, "/api/v2/services", Host="attacker.example")[0] == 400
    assert get(served, "/api/v2/services", Host=f"localhost:{served.port}")[0] == 200


def test_the_server_applies_retention_periodically(tmp_path: Path) -> None:
    import time

    with ServedApp(tmp_path, max_age=0.5, retention_interval=0.2) as app:
        assert post_spans(app, rpc_trace())[0] == 202
        assert get(app, f"/api/v2/trace/{T1}")[0] == 200
        deadline = time.monotonic() + 15
        while get(app, f"/api/v2/trace/{T1}")[0] != 404:
            assert time.monotonic() < deadline, "retention never removed the old trace"
            time.sleep(0.1)
        assert get(app, "/api/v2/services")[1] == []


def test_concurrent_uploads_and_queries_all_land(served: ServedApp) -> None:
    import threading

    errors: list[object] = []

    def upload(worker: int) -> None:
        for batch in range(10):
            spans = [
                make_span(
                    f"{'a' * 16}{worker + 1:04x}{batch + 1:04x}{i + 1:08x}",
                    "0000000000000001",
                    service=f"w{worker}",
                )
                for i in range(20)
            ]
            status, body = post_spans(served, spans)
            if status != 202:
                errors.append(body)
            if get(served, "/api/v2/services")[0] != 200:
                errors.append("query failed")

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    traces = get(served, "/api/v2/traces?limit=1000")[1]
    assert len(traces) == 4 * 10 * 20
    assert get(served, "/api/v2/services")[1] == ["w0", "w1", "w2", "w3"]
