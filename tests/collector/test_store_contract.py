"""The contract every span store keeps, run against SQLite and PostgreSQL alike.

Idempotent batches, Zipkin's search semantics, lenient ids, response caps, retention. What is
particular to one engine (SQLite's file, PostgreSQL's sharing between collectors) is tested
in that engine's own file.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.collector.conftest import StoreFactory
from tests.support.collector import decoded, make_span, now_us
from tests.support.postgres import fresh_database

from tomograph.collector import sqlite_store
from tomograph.collector.storage import QueryRequest, SpanStore

T1 = "a" * 16 + "0000000000000001"
T2 = "b" * 16 + "0000000000000002"


@pytest.fixture(
    params=[
        "sqlite, probe newest traces",
        "sqlite, intersect indexes",
        "sqlite, spans of a rare name",
        "sqlite, rows of the rarest term",
        "sqlite, probe the whole window",
        "postgresql",
    ]
)
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreFactory]:
    """Each test runs on SQLite under each of its search plans, then on PostgreSQL."""
    if request.param.startswith("sqlite"):
        # a service and span name counts as rare below _RARE_NAME_SPANS spans: every one does
        # in these tests, unless that is zero
        if not request.param.endswith("rare name"):
            monkeypatch.setattr(sqlite_store, "_RARE_NAME_SPANS", 0)
        if not request.param.endswith(("newest traces", "rare name")):  # no first probe
            monkeypatch.setattr(sqlite_store, "_PROBE_TRACES", 0)
        # a term search goes on from the rarest term's rows when they cost less than probing
        # the traces left in the window: free, or dearer than any window
        if request.param.endswith("rarest term"):
            monkeypatch.setattr(sqlite_store, "_TERM_ROW_COST", 0.0)
        if request.param.endswith("whole window"):
            monkeypatch.setattr(sqlite_store, "_TERM_ROW_COST", 1e18)
        factory = StoreFactory("sqlite", str(tmp_path / "traces.db"))
    else:
        factory = StoreFactory("postgresql", request.getfixturevalue("postgres_url"))
    yield factory
    factory.close_all()


@pytest.fixture
def store(open_store: StoreFactory) -> SpanStore:
    store: SpanStore = open_store()
    return store


def window(**criteria: object) -> QueryRequest:
    return dataclasses.replace(
        QueryRequest(end_ts=now_us() // 1000 + 1000, lookback=3_600_000), **criteria
    )


def checkout_trace(trace_id: str = T1, error: bool = False) -> list[dict[str, object]]:
    start = now_us() - 10_000
    return [
        make_span(
            trace_id,
            "0000000000000001",
            name="GET /checkout",
            service="Web",
            kind="SERVER",
            timestamp=start,
            duration=9000,
            tags={"http.method": "GET"},
        ),
        make_span(
            trace_id,
            "0000000000000002",
            parent_id="0000000000000001",
            name="charge",
            service="web",
            remote="payments",
            kind="CLIENT",
            timestamp=start + 100,
            duration=5000,
            tags={"error": "declined"} if error else None,
            annotations=[(start + 200, "retry")],
        ),
        make_span(
            trace_id,
            "0000000000000002",
            name="charge",
            service="payments",
            kind="SERVER",
            timestamp=start + 300,
            duration=4000,
            shared=True,
        ),
    ]


def test_a_batch_is_stored_and_a_retried_batch_is_not_duplicated(store: SpanStore) -> None:
    spans = checkout_trace()
    assert store.accept(decoded(spans)) == 3
    assert store.accept(decoded(spans[:2])) == 0
    assert len(store.get_trace(T1) or []) == 3


def test_names_are_lower_cased_on_ingest(store: SpanStore) -> None:
    store.accept(decoded(checkout_trace()))
    assert store.service_names() == ["payments", "web"]
    assert store.span_names("WEB") == ["charge", "get /checkout"]
    assert store.remote_service_names("web") == ["payments"]
    assert (store.get_trace(T1) or [])[0]["name"] == "get /checkout"


def test_unknown_trace_is_none(store: SpanStore) -> None:
    assert store.get_trace("1" * 16) is None
    assert store.get_trace_json("1" * 32) is None


def test_a_64_bit_id_finds_a_128_bit_trace_by_its_low_half(store: SpanStore) -> None:
    store.accept(decoded(checkout_trace()))
    assert len(store.get_trace(T1[16:]) or []) == 3


def test_a_128_bit_id_finds_spans_reported_with_only_the_low_half(store: SpanStore) -> None:
    spans = checkout_trace()
    spans[2]["traceId"] = T1[16:]  # one tracer in the path still uses 64-bit ids
    store.accept(decoded(spans))
    assert len(store.get_trace(T1) or []) == 3


def test_a_128_bit_id_does_not_find_another_128_bit_trace_with_the_same_low_half(
    store: SpanStore,
) -> None:
    store.accept(decoded(checkout_trace(T1)))
    assert store.get_trace("c" * 16 + T1[16:]) is None


def test_zero_high_bits_are_stored_as_a_64_bit_id(store: SpanStore) -> None:
    store.accept(decoded([make_span("0" * 16 + "1" * 16, "2" * 16)]))
    assert (store.get_trace("1" * 16) or [])[0]["traceId"] == "1" * 16


def test_search_by_service_span_name_and_remote_service(store: SpanStore) -> None:
    store.accept(decoded(checkout_trace(T1)))
    store.accept(decoded([make_span(T2, "3" * 16, name="other", service="batch")]))
    assert store.find_trace_ids(window(service_name="web")) == [T1]
    assert store.find_trace_ids(window(service_name="web", span_name="charge")) == [T1]
    assert store.find_trace_ids(window(service_name="web", remote_service_name="payments")) == [T1]
    assert store.find_trace_ids(window(service_name="batch", span_name="charge")) == []
    assert sorted(store.find_trace_ids(window())) == sorted([T1, T2])


def test_criteria_only_match_spans_of_the_service(store: SpanStore) -> None:
    store.accept(decoded(checkout_trace(error=True)))
    # the error tag is on a web span, not on a payments span
    assert store.find_trace_ids(window(service_name="web", annotation_query={"error": ""})) == [T1]
    assert (
        store.find_trace_ids(window(service_name="payments", annotation_query={"error": ""})) == []
    )


def test_annotation_query_matches_tag_keys_values_and_annotations(store: SpanStore) -> None:
    store.accept(decoded(checkout_trace(T1, error=True)))
    store.accept(decoded(checkout_trace(T2, error=False)))
    assert store.find_trace_ids(window(annotation_query={"error": ""})) == [T1]
    assert store.find_trace_ids(window(annotation_query={"error": "declined"})) == [T1]
    assert store.find_trace_ids(window(annotation_query={"error": "other"})) == []
    found = store.find_trace_ids(window(annotation_query={"retry": "", "http.method": "GET"}))
    assert sorted(found) == sorted([T1, T2])
    assert store.find_trace_ids(window(annotation_query={"http.method": "POST"})) == []


def trace_id_of(trace_no: int) -> str:
    return f"{trace_no + 1:016x}" * 2


def tagged_trace(trace_no: int, timestamp: int, tags: dict[str, str]) -> list[dict[str, object]]:
    """A trace of two web spans, the second tagged."""
    trace_id = trace_id_of(trace_no)
    return [
        make_span(trace_id, "1" * 16, service="web", timestamp=timestamp),
        make_span(trace_id, "2" * 16, parent_id="1" * 16, service="web", tags=tags),
    ]


def test_a_rare_tag_finds_only_its_matches_in_the_window(store: SpanStore) -> None:
    now = now_us()
    # many old matches, two hours and more ago, and two in the last hour among untagged traces
    old = [tagged_trace(n, now - 7_200_000_000 - n, {"error": "boom"}) for n in range(30)]
    recent = [tagged_trace(100 + n, now - 1_000_000 * (n + 1), {}) for n in range(20)]
    recent[3] = tagged_trace(103, now - 4_000_000, {"error": "boom"})
    recent[17] = tagged_trace(117, now - 18_000_000, {"error": "boom"})
    store.accept(decoded([span for trace in old + recent for span in trace]))
    expected = [trace_id_of(103), trace_id_of(117)]
    assert store.find_trace_ids(window(annotation_query={"error": ""})) == expected
    assert store.find_trace_ids(window(annotation_query={"error": "boom"}, limit=1)) == [
        expected[0]
    ]
    scoped = window(service_name="web", annotation_query={"error": ""})
    assert store.find_trace_ids(scoped) == expected
    everything = window(lookback=4 * 3_600_000, annotation_query={"error": ""}, limit=100)
    assert len(store.find_trace_ids(everything)) == 32


def test_a_common_tag_answers_the_newest_traces_up_to_the_limit(store: SpanStore) -> None:
    now = now_us()
    traces = [tagged_trace(n, now - 1_000_000 * (n + 1), {"http.method": "GET"}) for n in range(25)]
    store.accept(decoded([span for trace in traces for span in trace]))
    newest = [trace_id_of(n) for n in range(25)]
    for limit in (1, 7, 25, 100):
        query = window(annotation_query={"http.method": "GET"}, limit=limit)
        assert store.find_trace_ids(query) == newest[:limit]
        assert (
            store.find_trace_ids(dataclasses.replace(query, service_name="web")) == (newest[:limit])
        )


def test_several_terms_must_all_match_in_one_trace(store: SpanStore) -> None:
    now = now_us()
    both = {"http.method": "PUT", "error": "boom"}
    traces = [
        tagged_trace(0, now - 1_000_000, both),
        tagged_trace(1, now - 2_000_000, {"http.method": "PUT"}),
        tagged_trace(2, now - 3_000_000, {"error": "boom"}),
        tagged_trace(3, now - 4_000_000, both),
        tagged_trace(4, now - 7_200_000_000, both),  # outside the window
    ]
    # the terms may sit on different spans of the trace
    split = tagged_trace(5, now - 5_000_000, {"http.method": "PUT"})
    split[0]["tags"] = {"error": "boom"}
    store.accept(decoded([span for trace in [*traces, split] for span in trace]))
    query = window(annotation_query={"http.method": "PUT", "error": ""})
    assert store.find_trace_ids(query) == [trace_id_of(0), trace_id_of(3), trace_id_of(5)]
    assert store.find_trace_ids(dataclasses.replace(query, limit=2)) == [
        trace_id_of(0),
        trace_id_of(3),
    ]
    query = window(annotation_query={"http.method": "PUT", "error": "boom", "nowhere": ""})
    assert store.find_trace_ids(query) == []


def test_duration_criteria_are_inclusive(store: SpanStore) -> None:
    store.accept(decoded(checkout_trace()))
    assert store.find_trace_ids(window(min_duration=9000)) == [T1]
    assert store.find_trace_ids(window(min_duration=9001)) == []
    assert store.find_trace_ids(window(min_duration=4000, max_duration=4000)) == [T1]
    assert store.find_trace_ids(window(min_duration=4001, max_duration=4999)) == []


def test_search_uses_the_root_timestamp_and_returns_newest_first(store: SpanStore) -> None:
    now = now_us()
    old = [make_span(T1, "1" * 16, timestamp=now - 7_200_000_000)]  # two hours ago
    new = [make_span(T2, "2" * 16, timestamp=now - 1_000_000)]
    third = "c" * 32
    newest = [make_span(third, "3" * 16, timestamp=now - 500_000)]
    store.accept(decoded(old + new + newest))
    assert store.find_trace_ids(window()) == [third, T2]
    assert store.find_trace_ids(window(limit=1)) == [third]
    everything = window(lookback=3 * 3_600_000)
    assert store.find_trace_ids(everything) == [third, T2, T1]
    past = QueryRequest(end_ts=(now - 3_600_000_000) // 1000, lookback=3_600_000 * 2)
    assert store.find_trace_ids(past) == [T1]


def test_late_root_span_sets_the_trace_timestamp(store: SpanStore) -> None:
    now = now_us()
    store.accept(decoded([make_span(T1, "2" * 16, parent_id="1" * 16, timestamp=now - 10)]))
    store.accept(decoded([make_span(T1, "1" * 16, timestamp=now - 7_200_000_000)]))
    assert store.find_trace_ids(window()) == []  # the trace started two hours ago


def test_many_traces_answer_stops_at_the_response_byte_cap(open_store: StoreFactory) -> None:
    store = open_store(max_response_bytes=1 << 20)
    try:
        store.accept(decoded(checkout_trace(T1) + checkout_trace(T2)))
        one_trace = len(store.get_traces_json([T2]))
        assert [len(trace) for trace in json.loads(store.get_traces_json([T2, T1]))] == [3, 3]
        store.max_response_bytes = one_trace + 10  # room for one trace, not two
        assert [len(trace) for trace in json.loads(store.get_traces_json([T2, T1]))] == [3]
    finally:
        store.close()


def test_a_trace_answer_stops_at_the_response_byte_cap(open_store: StoreFactory) -> None:
    # one trace can be far larger than an answer should be: its latest spans are left out
    store = open_store(max_response_bytes=1)
    try:
        store.accept(decoded(checkout_trace(T1)))
        first = min(checkout_trace(T1), key=lambda span: span["timestamp"])
        [span] = json.loads(store.get_trace_json(T1) or b"")
        assert span["id"] == first["id"]
        [[span]] = json.loads(store.get_traces_json([T1, T2]))
        assert span["id"] == first["id"]
        assert len(store.get_trace(T1) or []) == 3  # what is stored is whole
    finally:
        store.close()


def test_a_failing_batch_writes_nothing(store: SpanStore) -> None:
    [good] = decoded([make_span(T1, "1" * 16)])
    with pytest.raises(KeyError):
        store.accept([good, {"traceId": T2}])  # the second span has no id
    assert store.get_trace(T1) is None
    assert store.service_names() == []


def test_names_longer_than_an_index_entry_are_stored_and_found(store: SpanStore) -> None:
    # 1,024 characters (the span limits' longest name) of 4-byte UTF-8: 4 KB, more than one
    # PostgreSQL B-tree entry holds
    name = "\U0001f600" * 1024
    span = make_span(T1, "1" * 16, name=name, service=name, remote=name, tags={name: "v"})
    assert store.accept(decoded([span])) == 1
    assert store.find_trace_ids(window(service_name=name, span_name=name)) == [T1]
    assert store.find_trace_ids(window(service_name=name, remote_service_name=name)) == [T1]
    assert store.find_trace_ids(window(annotation_query={name: "v"})) == [T1]
    assert store.span_names(name) == [name]
    assert store.remote_service_names(name) == [name]
    assert store.tag_values(name) == ["v"]


def test_nul_characters_are_kept_in_the_span_and_searchable(store: SpanStore) -> None:
    span = make_span(
        T1, "1" * 16, name="a\x00b", tags={"k\x00": "v\x00"}, annotations=[(now_us(), "n\x00")]
    )
    assert store.accept(decoded([span])) == 1
    [stored] = store.get_trace(T1) or []
    assert (stored["name"], stored["tags"]) == ("a\x00b", {"k\x00": "v\x00"})
    assert store.find_trace_ids(window(span_name="a\x00b")) == [T1]
    assert store.find_trace_ids(window(annotation_query={"k\x00": "v\x00"})) == [T1]
    assert store.find_trace_ids(window(annotation_query={"n\x00": ""})) == [T1]


def test_a_lone_surrogate_is_replaced_in_its_span_only(store: SpanStore) -> None:
    spans = [
        make_span(T1, "1" * 16, name="first", tags={"k": "v"}),
        make_span(T1, "2" * 16, name="a\ud800b", service="s\udfffv", tags={"k\ud800": "v"}),
        make_span(T1, "3" * 16, name="third", remote="db", tags={"error": ""}),
    ]
    assert store.accept(decoded(spans)) == 3
    stored = {span["id"]: span for span in store.get_trace(T1) or []}
    assert stored["1" * 16]["name"] == "first"
    assert (stored["2" * 16]["name"], stored["2" * 16]["tags"]) == ("a?b", {"k?": "v"})
    assert stored["2" * 16]["localEndpoint"] == {"serviceName": "s?v"}
    assert stored["3" * 16]["tags"] == {"error": ""}
    assert store.service_names() == ["s?v", "svc"]
    assert store.span_names("s?v") == ["a?b"]
    assert store.find_trace_ids(window(annotation_query={"k?": "v"})) == [T1]


def test_names_and_terms_holding_the_term_list_separators_are_found(store: SpanStore) -> None:
    # the SQLite store lists a trace's terms separated by these control characters
    odd = "a\x1fb\x1ec\x1bd"
    spans = [
        make_span(T1, "1" * 16, service=odd, remote=odd, tags={odd: odd, "error": "x"}),
        make_span(T1, "2" * 16, service="svc", annotations=[(now_us(), odd)]),
    ]
    assert store.accept(decoded(spans)) == 2
    assert store.service_names() == sorted([odd, "svc"])
    assert store.remote_service_names(odd) == [odd]
    assert store.find_trace_ids(window(service_name=odd, annotation_query={odd: odd})) == [T1]
    assert store.find_trace_ids(window(service_name="svc", annotation_query={odd: ""})) == [T1]
    assert store.find_trace_ids(window(service_name="svc", annotation_query={odd: odd})) == []
    assert store.tag_values(odd) == [odd]
    [stats] = store.operations(odd, now_us() // 1000 + 1000, 3_600_000)
    assert stats["errorCount"] == 1


def test_the_largest_times_are_stored(store: SpanStore) -> None:
    largest = (1 << 63) - 1  # what the span limits let through
    span = make_span(T1, "1" * 16, timestamp=largest, duration=largest)
    assert store.accept(decoded([span])) == 1
    [stored] = store.get_trace(T1) or []
    assert (stored["timestamp"], stored["duration"]) == (largest, largest)


def test_tag_values_are_distinct_and_sorted(store: SpanStore) -> None:
    store.accept(decoded([make_span(T1, "1" * 16, tags={"http.method": "POST"})]))
    store.accept(decoded([make_span(T1, "2" * 16, tags={"http.method": "GET"})]))
    store.accept(decoded([make_span(T2, "3" * 16, tags={"http.method": "GET"})]))
    assert store.tag_values("http.method") == ["GET", "POST"]


def test_operations_give_percentiles_and_error_rate(store: SpanStore) -> None:
    spans = [
        make_span(
            f"{i + 1:032x}",
            "1" * 16,
            name="get",
            duration=(i + 1) * 10,
            tags={"error": ""} if i % 10 == 0 else None,
        )
        for i in range(100)
    ]
    store.accept(decoded(spans))
    [stats] = store.operations("svc", now_us() // 1000 + 1000, 3_600_000)
    assert (stats["spanName"], stats["kind"]) == ("get", None)
    assert stats["count"] == 100
    assert stats["errorCount"] == 10
    assert stats["errorRate"] == pytest.approx(0.1)
    assert (stats["p50"], stats["p90"], stats["p99"], stats["max"]) == (500, 900, 990, 1000)


def test_operations_count_client_and_server_spans_of_a_name_apart(store: SpanStore) -> None:
    # a service calling itself, or a proxy: "get" 3 times as a server, twice as a client
    now = now_us()
    spans = [
        make_span(f"{i + 1:032x}", "1" * 16, name="get", kind="SERVER", timestamp=now - i)
        for i in range(3)
    ] + [
        make_span(
            f"{i + 1:032x}",
            "2" * 16,
            name="get",
            kind="CLIENT",
            timestamp=now - i,
            duration=70,
            tags={"error": "timeout"},
        )
        for i in range(2)
    ]
    spans.append(make_span(T1, "3" * 16, name="get", timestamp=now, duration=5))
    spans.append(make_span(T1, "4" * 16, name="put", kind="PRODUCER", timestamp=now))
    store.accept(decoded(spans))
    stats = store.operations("svc", now // 1000 + 1, 3_600_000)
    assert [(s["spanName"], s["kind"], s["count"], s["errorCount"], s["max"]) for s in stats] == [
        ("get", None, 1, 0, 5),
        ("get", "CLIENT", 2, 2, 70),
        ("get", "SERVER", 3, 0, 1000),
        ("put", "PRODUCER", 1, 0, 1000),
    ]


def test_operations_order_durations_as_numbers_whatever_their_order_of_arrival(
    store: SpanStore,
) -> None:
    # as text, 10 < 9 and 100 < 99; the largest duration a span can have is kept exactly
    durations = [100, 9, 2**63 - 1, 10, 99, 9, 1]
    now = now_us()
    spans = [
        make_span(f"{i + 1:032x}", "1" * 16, name="get", timestamp=now - i, duration=duration)
        for i, duration in enumerate(durations)
    ]
    store.accept(decoded(spans))
    [stats] = store.operations("svc", now // 1000 + 1, 3_600_000)
    assert stats["count"] == 7
    assert (stats["p50"], stats["p90"], stats["max"]) == (10, 2**63 - 1, 2**63 - 1)


def test_operation_samples_are_the_newest_spans_of_one_name_and_kind(store: SpanStore) -> None:
    now = now_us()
    spans = [
        make_span(
            f"{i + 1:032x}",
            "1" * 16,
            name="Get",
            kind="SERVER",
            timestamp=now - i * 1000,
            duration=100 + i,
            tags={"error": ""} if i == 1 else None,
        )
        for i in range(5)
    ]
    spans += [
        make_span(T1, "2" * 16, name="get", kind="CLIENT", timestamp=now),  # another kind
        make_span(T1, "3" * 16, name="get", timestamp=now),  # local
        make_span(T1, "4" * 16, name="get", service="other", kind="SERVER", timestamp=now),
        make_span(T1, "5" * 16, name="getter", kind="SERVER", timestamp=now),
        # an hour and a bit ago: outside the window
        make_span(T2, "6" * 16, name="get", kind="SERVER", timestamp=now - 3_700_000_000),
    ]
    store.accept(decoded(spans))
    end = now // 1000 + 1
    answer = store.operation_samples("SVC", "GET", "SERVER", end, 3_600_000, 10)
    assert answer == {
        "samples": [
            (now - i * 1000, 100 + i, 1 if i == 1 else 0, f"{i + 1:016x}") for i in range(5)
        ],
        "truncated": False,
    }
    newest = store.operation_samples("svc", "get", "SERVER", end, 3_600_000, 2)
    assert newest == {
        "samples": [(now, 100, 0, f"{1:016x}"), (now - 1000, 101, 1, f"{2:016x}")],
        "truncated": True,
    }
    local = store.operation_samples("svc", "get", None, end, 3_600_000, 10)
    assert local == {"samples": [(now, 1000, 0, T1[16:])], "truncated": False}
    assert store.operation_samples("svc", "get", "PRODUCER", end, 3_600_000, 10) == {
        "samples": [],
        "truncated": False,
    }


def test_operation_samples_of_the_empty_name_and_of_odd_names(store: SpanStore) -> None:
    now = now_us()
    odd = "caf\u00e9 \ufffd \U0001f600 " + "x" * 300
    spans = [
        make_span(T1, "1" * 16, name="", timestamp=now, duration=3),
        make_span(T1, "2" * 16, name=odd, timestamp=now, duration=4),
    ]
    store.accept(decoded(spans))
    end = now // 1000 + 1
    empty_name = store.operation_samples("svc", "", None, end, 60_000, 10)["samples"]
    assert empty_name == [(now, 3, 0, T1[16:])]
    odd_name = store.operation_samples("svc", odd, None, end, 60_000, 10)["samples"]
    assert odd_name == [(now, 4, 0, T1[16:])]
    # the id given opens the trace (ids with the high bit set too: T2's low half is negative
    # as SQLite's signed integer)
    store.accept(decoded([make_span("f" * 32, "3" * 16, name="high", timestamp=now)]))
    [[*_, trace_id]] = store.operation_samples("svc", "high", None, end, 60_000, 10)["samples"]
    assert trace_id == "f" * 16
    assert len(store.get_trace(trace_id) or []) == 1
    # a name sharing the indexed prefix of the long one is another name
    other = odd[:250]
    assert store.operation_samples("svc", other, None, end, 60_000, 10)["samples"] == []


def test_retention_by_age_deletes_old_traces_and_their_names(open_store: StoreFactory) -> None:
    store = open_store(max_age=3600)
    try:
        store.accept(decoded([make_span(T1, "1" * 16, service="old")]))
        later = now_us() + 2 * 3600 * 1_000_000
        store.accept(decoded([make_span(T2, "2" * 16, service="new")]))
        assert store.enforce_retention(now_us()).traces_deleted == 0
        result = store.enforce_retention(later)
        assert result.traces_deleted == 2
        assert result.spans_deleted == 2
        assert store.service_names() == []
        assert store.find_trace_ids(window()) == []
    finally:
        store.close()


def test_retention_by_age_keeps_recent_traces(open_store: StoreFactory) -> None:
    store = open_store(max_age=3600)
    try:
        store.accept(decoded([make_span(T1, "1" * 16, service="old")]))
        store.accept(decoded([make_span(T2, "2" * 16, service="new")]))
        open_store.backdate(T1, 7200)  # T1 arrived two hours ago
        assert store.enforce_retention().traces_deleted == 1
        assert store.service_names() == ["new"]
        assert store.get_trace(T2) is not None
    finally:
        store.close()


def test_a_store_reopens_an_existing_file(open_store: StoreFactory) -> None:
    first = open_store()
    first.accept(decoded(checkout_trace()))
    first.close()
    second = open_store()
    try:
        assert len(second.get_trace(T1) or []) == 3
    finally:
        second.close()


@pytest.mark.parametrize("max_age", [1e300, float("inf")])
def test_a_max_age_before_1970_keeps_everything(open_store: StoreFactory, max_age: float) -> None:
    store = open_store(max_age=max_age)
    try:
        store.accept(decoded(checkout_trace()))
        assert store.enforce_retention().traces_deleted == 0  # not OverflowError
        assert store.get_trace(T1) is not None
    finally:
        store.close()


def test_retention_stops_between_chunks_once_the_server_stops(open_store: StoreFactory) -> None:
    store = open_store(max_age=3600)
    try:
        store.accept(decoded(checkout_trace()))
        store.interrupt_reads()
        later = now_us() + 2 * 3600 * 1_000_000
        assert store.enforce_retention(later).traces_deleted == 0
    finally:
        store.close()


def test_a_closed_store_refuses_work(open_store: StoreFactory) -> None:
    store = open_store()
    store.close()
    with pytest.raises(RuntimeError):
        store.accept(decoded([make_span(T1, "1" * 16)]))


_hex16 = st.integers(min_value=1, max_value=(1 << 64) - 1).map(lambda v: f"{v:016x}")
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)
_spans = st.fixed_dictionaries(
    {
        "traceId": st.one_of(
            _hex16,
            st.tuples(_hex16, _hex16).map("".join),
            _hex16.map(lambda low: ("0" * 16 + low).upper()),  # 128 bits, high half zero
        ),
        "id": _hex16,
        "name": _text,
        "timestamp": st.integers(min_value=1, max_value=1 << 60),
        "duration": st.integers(min_value=1, max_value=1 << 40),
        "localEndpoint": st.fixed_dictionaries({"serviceName": _text}),
        "tags": st.dictionaries(_text, st.text(max_size=300), max_size=4),
        "annotations": st.lists(
            st.fixed_dictionaries(
                {"timestamp": st.integers(min_value=1, max_value=1 << 60), "value": _text}
            ),
            max_size=3,
        ),
    },
    optional={
        "parentId": _hex16,
        "kind": st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]),
        "shared": st.booleans(),
        "debug": st.booleans(),
    },
)


# Zipkin writes span fields in this order.
_ZIPKIN_ORDER = (
    "traceId",
    "parentId",
    "id",
    "kind",
    "name",
    "timestamp",
    "duration",
    "debug",
    "shared",
    "localEndpoint",
    "remoteEndpoint",
    "annotations",
    "tags",
)


def zipkin_ingested(span: dict[str, Any]) -> dict[str, Any]:
    """A posted span as Zipkin stores it: names lower-cased, a trace id whose high half is zero
    in 16 characters, annotations a set sorted by time, empty and false fields left out, the
    fields in Zipkin's order."""
    out = dict(span)
    trace_id = out["traceId"].lower()
    out["traceId"] = trace_id[16:] if trace_id.startswith("0" * 16) else trace_id
    out["name"] = out["name"].lower()
    service = out["localEndpoint"]["serviceName"].lower()
    out["localEndpoint"] = {"serviceName": service} if service else None
    notes = {(note["timestamp"], note["value"]) for note in out["annotations"]}
    out["annotations"] = [{"timestamp": t, "value": v} for t, v in sorted(notes)]
    return {key: out[key] for key in _ZIPKIN_ORDER if out.get(key)}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_spans, min_size=1, max_size=5))
def test_stored_spans_come_back_as_zipkin_ingests_them(
    open_store: StoreFactory, spans: list[dict[str, Any]]
) -> None:
    store = open_store(max_age=None)
    try:
        store.accept(decoded(spans))
        for span in spans:
            expected = zipkin_ingested(span)
            trace = store.get_trace(str(span["traceId"])) or []
            assert expected in trace
            stored = trace[trace.index(expected)]
            assert list(stored) == list(expected)  # the field order too
    finally:
        store.close()


_ids = st.sampled_from(["1" * 16, "2" * 16, "3" * 16, "4" * 16])
_services = st.sampled_from(["web", "api", "db", ""])
_linked_span = st.fixed_dictionaries(
    {
        "id": _ids,
        "kind": st.sampled_from([None, "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]),
        "service": _services,
        "remote": _services,
        "parent": st.one_of(st.none(), _ids),
        "shared": st.booleans(),
        "error": st.booleans(),
        "offset": st.integers(min_value=0, max_value=3),  # ties are common
    }
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    traces=st.lists(st.lists(_linked_span, min_size=1, max_size=6), min_size=1, max_size=6),
    split=st.integers(min_value=1, max_value=6),
)
def test_both_stores_derive_the_same_dependency_links(
    tmp_path: Path, postgres_server: str, traces: list[list[dict[str, Any]]], split: int
) -> None:
    # PostgreSQL keeps links per trace as batches arrive, SQLite derives them when asked:
    # the same spans, however they were split into batches, give the same answer
    start = now_us() - 1_000_000
    spans = []
    for number, trace in enumerate(traces):
        trace_id = f"{uuid.uuid4().hex[:16]}{number + 1:016x}"
        for span in trace:
            made = make_span(
                trace_id,
                span["id"],
                parent_id=span["parent"] if span["parent"] != span["id"] else None,
                service=span["service"],
                remote=span["remote"] or None,
                kind=span["kind"],
                timestamp=start + span["offset"],
                tags={"error": ""} if span["error"] else None,
                shared=span["shared"] and span["kind"] == "SERVER",
            )
            if not span["service"]:
                del made["localEndpoint"]
            spans.append(made)
    with fresh_database(postgres_server) as postgres_url:
        sqlite = StoreFactory("sqlite", str(tmp_path / f"{uuid.uuid4().hex}.db"))
        postgres = StoreFactory("postgresql", postgres_url)
        try:
            stores = [sqlite(), postgres()]
            for store in stores:
                for first in range(0, len(spans), split):
                    store.accept(decoded(spans[first : first + split]))
            end, lookback = now_us() // 1000 + 1000, 3_600_000
            assert stores[0].dependencies(end, lookback) == stores[1].dependencies(end, lookback)
        finally:
            sqlite.close_all()
            postgres.close_all()


def test_tag_values_stop_at_the_limit_and_skip_unindexed_values(store: SpanStore) -> None:
    spans = [
        make_span(f"{'a' * 16}{n + 1:016x}", "1" * 16, tags={"k": value})
        for n, value in enumerate(["b", "a", "c", "a", "x" * 300, "d"] * 3)
    ]
    store.accept(decoded(spans))
    assert store.tag_values("k") == ["a", "b", "c", "d"]
    assert store.tag_values("k", limit=2) == ["a", "b"]
    assert store.tag_values("unknown") == []


def test_operations_count_each_name_of_the_service_in_the_window_only(
    store: SpanStore,
) -> None:
    now = now_us()
    spans = [
        make_span(T1, "1" * 16, name="get", service="web", timestamp=now - 10, duration=5),
        make_span(T1, "2" * 16, name="", service="web", timestamp=now - 20, duration=7),
        make_span(T1, "3" * 16, name="put", service="web", timestamp=now - 30, duration=9),
        make_span(T1, "4" * 16, name="get", service="db", timestamp=now - 40, duration=11),
        # an hour and a bit ago: outside the window
        make_span(T2, "5" * 16, name="get", service="web", timestamp=now - 3_700_000_000),
    ]
    store.accept(decoded(spans))
    stats = store.operations("Web", now // 1000 + 1, 3_600_000)
    assert [(s["spanName"], s["count"], s["max"]) for s in stats] == [
        ("", 1, 7),
        ("get", 1, 5),
        ("put", 1, 9),
    ]


def test_names_deleted_by_retention_come_back_with_new_spans(open_store: StoreFactory) -> None:
    store = open_store(max_age=3600)
    store.accept(decoded([make_span(T1, "1" * 16, service="web", name="get", remote="db")]))
    later = now_us() + 2 * 3600 * 1_000_000
    assert store.enforce_retention(later).traces_deleted == 1
    assert store.service_names() == []
    store.accept(decoded([make_span(T2, "2" * 16, service="web", name="get", remote="db")]))
    assert (store.service_names(), store.span_names("web")) == (["web"], ["get"])
    assert store.remote_service_names("web") == ["db"]


def test_names_deleted_by_another_store_on_the_same_data_come_back(
    open_store: StoreFactory,
) -> None:
    writer, cleaner = open_store(), open_store(max_age=3600)
    writer.accept(decoded([make_span(T1, "1" * 16, service="web", name="get", remote="db")]))
    later = now_us() + 2 * 3600 * 1_000_000
    assert cleaner.enforce_retention(later).traces_deleted == 1
    assert writer.service_names() == []
    writer.accept(decoded([make_span(T2, "2" * 16, service="web", name="get", remote="db")]))
    assert (writer.service_names(), writer.span_names("web")) == (["web"], ["get"])
    assert writer.remote_service_names("web") == ["db"]
