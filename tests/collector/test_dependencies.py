"""Dependency links with Zipkin's rules."""

from __future__ import annotations

from typing import Any

from tomograph.collector.dependencies import DependencyLinker, build_span_tree

T = "a" * 16


def span(span_id: str, parent: str | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": T, "id": span_id * 16}
    if parent:
        out["parentId"] = parent * 16
    for key in ("service", "remote"):
        if key in fields:
            name = fields.pop(key)
            out["localEndpoint" if key == "service" else "remoteEndpoint"] = {"serviceName": name}
    out.update(fields)
    return out


def links(*traces: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    linker = DependencyLinker()
    for trace in traces:
        linker.put_trace(trace)
    return [(k["parent"], k["child"], k["callCount"], k["errorCount"]) for k in linker.links()]


def test_shared_server_span_is_the_child_of_its_client() -> None:
    root = build_span_tree(
        [
            span("2", "1", kind="SERVER", shared=True, service="b"),
            span("1", kind="SERVER", service="a"),
            span("2", "1", kind="CLIENT", service="a", remote="b"),
        ]
    )
    assert root.span is not None and root.span["id"] == "1" * 16
    [client] = root.children
    assert client.span is not None and client.span["kind"] == "CLIENT"
    assert [c.span["kind"] for c in client.children if c.span] == ["SERVER"]


def test_client_and_shared_server_count_as_one_call() -> None:
    trace = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", remote="b"),
        span("2", "1", kind="SERVER", shared=True, service="b"),
    ]
    assert links(trace) == [("a", "b", 1, 0)]


def test_split_rpc_with_different_ids_counts_once() -> None:
    trace = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", remote="b"),
        span("3", "2", kind="SERVER", service="b"),
    ]
    assert links(trace) == [("a", "b", 1, 0)]


def test_leaf_client_links_to_an_uninstrumented_service() -> None:
    trace = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", remote="db", tags={"error": "x"}),
    ]
    assert links(trace) == [("a", "db", 1, 1)]


def test_root_server_with_known_client_links_from_it() -> None:
    assert links([span("1", kind="SERVER", service="a", remote="browser")]) == [
        ("browser", "a", 1, 0)
    ]
    assert links([span("1", kind="SERVER", service="a")]) == []


def test_messaging_links_through_the_broker() -> None:
    trace = [
        span("1", kind="PRODUCER", service="a", remote="kafka"),
        span("2", "1", kind="CONSUMER", service="b", remote="kafka"),
    ]
    assert links(trace) == [("a", "kafka", 1, 0), ("kafka", "b", 1, 0)]


def test_local_spans_between_server_and_client_are_skipped_over() -> None:
    trace = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", service="a"),  # local work
        span("3", "2", kind="CLIENT", service="a", remote="b"),
    ]
    assert links(trace) == [("a", "b", 1, 0)]


def test_counts_add_up_across_traces() -> None:
    trace = [span("1", kind="CLIENT", service="a", remote="b")]
    failed = [span("1", kind="CLIENT", service="a", remote="b", tags={"error": ""})]
    assert links(trace, trace, failed) == [("a", "b", 3, 1)]


def test_headless_trace_still_links() -> None:
    trace = [span("3", "2", kind="CLIENT", service="b", remote="c")]
    assert links(trace) == [("b", "c", 1, 0)]
