"""Dependency links with Zipkin's rules."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support import zipkin_dependency_rules as zipkin_rules

from tomograph.collector.dependencies import DependencyLinker, LinkRow, trace_links

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
    # the server half reports first, and has a client of its own: b names both links
    trace = [
        span("2", "1", kind="SERVER", shared=True, service="b"),
        span("3", "2", kind="CLIENT", service="b", remote="c"),
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", remote="x"),
    ]
    assert links(trace) == [("a", "b", 1, 0), ("b", "c", 1, 0)]


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


def test_a_span_that_names_itself_as_parent_is_a_root() -> None:
    # Zipkin's model drops such a parent id; the span used to vanish from the tree
    trace = [
        span("1", "1", kind="SERVER", service="a", remote="user"),
        span("2", "1", kind="CLIENT", service="a", remote="b"),
    ]
    assert links(trace) == [("a", "b", 1, 0), ("user", "a", 1, 0)]


def test_of_several_spans_without_a_parent_the_lowest_id_is_the_root() -> None:
    # the others hang off it, whatever their timestamps
    trace = [
        span("2", kind="SERVER", service="a", timestamp=1),
        span("1", kind="SERVER", service="b", timestamp=2),
    ]
    assert links(trace) == [("b", "a", 1, 0)]


def test_pieces_of_one_span_reported_apart_are_merged() -> None:
    trace = [
        span("1", kind="CLIENT", service="a", remote="b", timestamp=5),
        span("1", tags={"error": "timeout"}),  # a late piece: no kind, no endpoints
    ]
    assert links(trace) == [("a", "b", 1, 1)]


def test_a_server_after_a_client_of_the_same_id_counts_as_shared() -> None:
    # instrumentation that leaves out the shared flag: still one RPC, the server's error counts
    trace = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", remote="b", timestamp=5),
        span("2", "1", kind="SERVER", service="b", timestamp=6, tags={"error": ""}),
        span("3", "2", kind="CLIENT", service="b", remote="c"),
    ]
    assert links(trace) == [("a", "b", 1, 1), ("b", "c", 1, 0)]


def test_a_failed_client_makes_the_call_an_error_whether_the_rpc_is_shared_or_split() -> None:
    # Zipkin counts the client's error only for the split RPC; the shared one is our addition
    shared = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", tags={"error": ""}),
        span("2", "1", kind="SERVER", shared=True, service="b"),
    ]
    split = [
        span("1", kind="SERVER", service="a"),
        span("2", "1", kind="CLIENT", service="a", tags={"error": ""}),
        span("3", "2", kind="SERVER", service="b"),
    ]
    assert links(shared) == [("a", "b", 1, 1)]
    assert links(split) == [("a", "b", 1, 1)]


def test_a_failed_client_of_another_rpc_does_not_make_a_shared_call_an_error() -> None:
    # the client half of this RPC was not reported: the nearest client is another call's
    trace = [
        span("1", kind="CLIENT", service="a", tags={"error": ""}),
        span("3", "1", service="a"),
        span("2", "3", kind="SERVER", shared=True, service="b"),
    ]
    assert links(trace) == [("a", "b", 1, 0)]


def test_spans_that_are_each_others_parents_are_not_linked() -> None:
    trace = [
        span("1", kind="SERVER", service="a"),
        span("2", "3", kind="SERVER", service="b", remote="x"),
        span("3", "2", kind="SERVER", service="c", remote="y"),
    ]
    assert links(trace) == []


class CountingRows(list[LinkRow]):
    """Rows that count how often the linker looks one up by position."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        self.reads += 1
        return super().__getitem__(index)


def test_a_long_chain_of_local_spans_is_read_a_bounded_number_of_times_per_span() -> None:
    # a local span that names both sides looks for its nearest remote ancestor: looked up
    # anew for each span, a chain of n such spans took n * n / 2 reads (minutes at 100k spans)
    n = 2000
    rows = CountingRows(
        (f"{i + 1:016x}", f"{i:016x}" if i else None, None, 0, "a", "b", 0) for i in range(n)
    )
    assert trace_links(rows) == {("a", "b"): [n, 0]}
    assert rows.reads < 10 * n


# -- the linker against Zipkin's rules written out plainly (tests/support) ----------------------

IDS = [f"{n:016x}" for n in range(1, 6)]
SERVICES = ["web", "api", "db", None]
KINDS = [None, "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]


@st.composite
def link_spans(draw: st.DrawFn) -> dict[str, Any]:
    """A span as a store keeps it for linking: few ids, so that shared, repeated, self-parent
    and cyclic ids, missing parents and several roots all come up."""
    out: dict[str, Any] = {"traceId": T, "id": draw(st.sampled_from(IDS))}
    parent = draw(st.none() | st.sampled_from(IDS))
    if parent is not None:
        out["parentId"] = parent
    kind = draw(st.sampled_from(KINDS))
    if kind is not None:
        out["kind"] = kind
    if draw(st.booleans()):
        out["shared"] = True
    for field, endpoint in (("localEndpoint", SERVICES), ("remoteEndpoint", SERVICES)):
        service = draw(st.sampled_from(endpoint))
        if service is not None:
            out[field] = {"serviceName": service}
    if draw(st.booleans()):
        out["tags"] = {"error": ""}
    out["timestamp"] = draw(st.integers(0, 3))
    return out


def reference_links(*traces: list[dict[str, Any]]) -> list[tuple[str, str, int, int]]:
    total: dict[tuple[str, str], list[int]] = {}
    for trace in traces:
        for pair, (calls, errors) in zipkin_rules.trace_links(
            [zipkin_rules.from_dict(s) for s in trace]
        ).items():
            counts = total.setdefault(pair, [0, 0])
            counts[0] += calls
            counts[1] += errors
    return sorted((parent, child, c, e) for (parent, child), (c, e) in total.items())


@settings(max_examples=1000, deadline=None)
@given(st.lists(link_spans(), min_size=1, max_size=9))
def test_links_follow_zipkins_rules(trace: list[dict[str, Any]]) -> None:
    assert links(trace) == reference_links(trace)
