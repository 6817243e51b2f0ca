"""v1 -> v2 conversion, checked case by case against Zipkin's conversion rules.

The expected spans are written out by hand from Zipkin's documented behaviour (its
V1SpanConverter and the cases its tests pin), not produced by the code under test.
"""

from __future__ import annotations

from tomograph.encoding.zipkin_v1 import V1Annotation, V1BinaryAnnotation, V1Span, to_v2

FRONTEND = {"serviceName": "frontend", "ipv4": "172.17.0.13"}
BACKEND = {"serviceName": "backend", "ipv4": "172.17.0.9", "port": 8080}
KAFKA = {"serviceName": "kafka"}
T = 1472470996199000
TRACE, PARENT, ID = "0000000000000001", "0000000000000002", "0000000000000003"


def v1(
    *annotations: V1Annotation, binary: tuple[V1BinaryAnnotation, ...] = (), **fields: object
) -> V1Span:
    span = V1Span(TRACE, ID, parent_id=PARENT, name="get", **fields)  # type: ignore[arg-type]
    span.annotations = list(annotations)
    span.binary_annotations = list(binary)
    return span


def ids(**fields: object) -> dict[str, object]:
    return {"traceId": TRACE, "parentId": PARENT, "id": ID, **fields}


def test_client_span_takes_kind_times_and_server_address() -> None:
    span = v1(
        V1Annotation(T, "cs", FRONTEND),
        V1Annotation(T + 39000, "ws", FRONTEND),
        V1Annotation(T + 204000, "wr", FRONTEND),
        V1Annotation(T + 207000, "cr", FRONTEND),
        binary=(
            V1BinaryAnnotation("http.path", "/api", FRONTEND),
            V1BinaryAnnotation("sa", None, BACKEND),
        ),
        timestamp=T,
        duration=207000,
    )
    assert to_v2(span) == [
        ids(
            kind="CLIENT",
            name="get",
            timestamp=T,
            duration=207000,
            localEndpoint=FRONTEND,
            remoteEndpoint=BACKEND,
            annotations=[
                {"timestamp": T + 39000, "value": "ws"},
                {"timestamp": T + 204000, "value": "wr"},
            ],
            tags={"http.path": "/api"},
        )
    ]


def test_times_come_from_core_annotations_when_the_span_has_none() -> None:
    span = v1(V1Annotation(T, "sr", BACKEND), V1Annotation(T + 500, "ss", BACKEND))
    # sr without the span's timestamp: the server joined its client's span id
    assert to_v2(span) == [
        ids(
            kind="SERVER", name="get", timestamp=T, duration=500, localEndpoint=BACKEND, shared=True
        )
    ]


def test_server_span_with_timestamp_is_not_shared_and_gets_the_client_address() -> None:
    span = v1(
        V1Annotation(T, "sr", BACKEND),
        V1Annotation(T + 207000, "ss", BACKEND),
        binary=(V1BinaryAnnotation("ca", None, FRONTEND),),
        timestamp=T,
        duration=207000,
    )
    assert to_v2(span) == [
        ids(
            kind="SERVER",
            name="get",
            timestamp=T,
            duration=207000,
            localEndpoint=BACKEND,
            remoteEndpoint=FRONTEND,
        )
    ]


def test_one_span_logged_by_client_and_server_splits_in_two() -> None:
    span = v1(
        V1Annotation(T, "cs", FRONTEND),
        V1Annotation(T + 10, "sr", BACKEND),
        V1Annotation(T + 90, "ss", BACKEND),
        V1Annotation(T + 100, "cr", FRONTEND),
        binary=(
            V1BinaryAnnotation("ca", None, FRONTEND),
            V1BinaryAnnotation("sa", None, BACKEND),
        ),
        timestamp=T,
        duration=100,
    )
    assert to_v2(span) == [
        ids(
            kind="CLIENT",
            name="get",
            timestamp=T,
            duration=100,
            localEndpoint=FRONTEND,
            remoteEndpoint=BACKEND,
        ),
        ids(
            kind="SERVER",
            name="get",
            timestamp=T + 10,
            duration=80,
            localEndpoint=BACKEND,
            remoteEndpoint=FRONTEND,
            shared=True,
        ),
    ]


def test_loopback_call_still_makes_a_client_and_a_server_span() -> None:
    span = v1(
        V1Annotation(T, "cs", FRONTEND),
        V1Annotation(T + 10, "sr", FRONTEND),
        V1Annotation(T + 90, "ss", FRONTEND),
        V1Annotation(T + 100, "cr", FRONTEND),
    )
    assert to_v2(span) == [
        ids(kind="CLIENT", name="get", timestamp=T, duration=100, localEndpoint=FRONTEND),
        ids(
            kind="SERVER",
            name="get",
            timestamp=T + 10,
            duration=80,
            localEndpoint=FRONTEND,
            shared=True,
        ),
    ]


def test_incomplete_client_keeps_its_end_as_an_annotation() -> None:
    span = v1(V1Annotation(T, "cr", FRONTEND), binary=(V1BinaryAnnotation("sa", None, BACKEND),))
    assert to_v2(span) == [
        ids(
            kind="CLIENT",
            name="get",
            localEndpoint=FRONTEND,
            remoteEndpoint=BACKEND,
            annotations=[{"timestamp": T, "value": "cr"}],
        )
    ]


def test_missing_begin_annotation_is_restored_from_the_span_times() -> None:
    span = v1(V1Annotation(T + 100, "cr", FRONTEND), timestamp=T, duration=100)
    assert to_v2(span) == [
        ids(kind="CLIENT", name="get", timestamp=T, duration=100, localEndpoint=FRONTEND)
    ]


def test_core_annotation_without_endpoint_is_an_ordinary_annotation() -> None:
    span = v1(V1Annotation(T, "sr", None), timestamp=T)
    assert to_v2(span) == [
        ids(name="get", timestamp=T, annotations=[{"timestamp": T, "value": "sr"}])
    ]


def test_span_without_endpoints_keeps_its_times() -> None:
    assert to_v2(v1(timestamp=T, duration=207000)) == [
        ids(name="get", timestamp=T, duration=207000)
    ]


def test_empty_local_component_names_the_local_endpoint_only() -> None:
    span = v1(
        binary=(
            V1BinaryAnnotation("lc", "", FRONTEND),
            V1BinaryAnnotation("sa", None, BACKEND),
        ),
        timestamp=T,
        duration=207000,
    )
    assert to_v2(span) == [
        ids(
            name="get",
            timestamp=T,
            duration=207000,
            localEndpoint=FRONTEND,
            remoteEndpoint=BACKEND,
        )
    ]


def test_local_component_with_a_value_is_also_a_tag() -> None:
    span = v1(binary=(V1BinaryAnnotation("lc", "cache", FRONTEND),), timestamp=T, duration=5)
    assert to_v2(span) == [
        ids(name="get", timestamp=T, duration=5, localEndpoint=FRONTEND, tags={"lc": "cache"})
    ]


def test_client_address_alone_makes_a_server_span() -> None:
    span = v1(binary=(V1BinaryAnnotation("ca", None, FRONTEND),))
    assert to_v2(span) == [ids(kind="SERVER", name="get", remoteEndpoint=FRONTEND)]


def test_server_address_alone_is_only_a_remote_endpoint() -> None:
    span = v1(binary=(V1BinaryAnnotation("sa", None, BACKEND),))
    assert to_v2(span) == [ids(name="get", remoteEndpoint=BACKEND)]


def test_finagle_client_address_under_the_servers_name_loses_the_name() -> None:
    socket = {"serviceName": "backend", "ipv4": "172.17.0.13", "port": 63840}
    span = v1(
        V1Annotation(T, "sr", BACKEND),
        V1Annotation(T + 10, "ss", BACKEND),
        binary=(V1BinaryAnnotation("ca", None, socket),),
    )
    assert to_v2(span) == [
        ids(
            kind="SERVER",
            name="get",
            timestamp=T,
            duration=10,
            localEndpoint=BACKEND,
            remoteEndpoint={"ipv4": "172.17.0.13", "port": 63840},
            shared=True,
        )
    ]


def test_producer_and_consumer_sides_split_and_both_get_the_broker() -> None:
    span = v1(
        V1Annotation(T, "ms", FRONTEND),
        V1Annotation(T + 5, "ws", FRONTEND),
        V1Annotation(T + 50, "wr", BACKEND),
        V1Annotation(T + 60, "mr", BACKEND),
        binary=(V1BinaryAnnotation("ma", None, KAFKA),),
    )
    assert to_v2(span) == [
        ids(
            kind="PRODUCER",
            name="get",
            timestamp=T,
            duration=5,
            localEndpoint=FRONTEND,
            remoteEndpoint=KAFKA,
        ),
        ids(
            kind="CONSUMER",
            name="get",
            timestamp=T + 50,
            duration=10,
            localEndpoint=BACKEND,
            remoteEndpoint=KAFKA,
            shared=True,
        ),
    ]


def test_consumer_alone_is_timed_by_wire_receive() -> None:
    span = v1(V1Annotation(T, "wr", BACKEND), V1Annotation(T + 7, "mr", BACKEND))
    assert to_v2(span) == [
        ids(kind="CONSUMER", name="get", timestamp=T, duration=7, localEndpoint=BACKEND)
    ]


def test_tags_go_to_the_span_of_their_endpoint_and_without_one_to_the_first() -> None:
    span = v1(
        V1Annotation(T, "cs", FRONTEND),
        V1Annotation(T + 10, "sr", BACKEND),
        V1Annotation(T + 90, "ss", BACKEND),
        V1Annotation(T + 100, "cr", FRONTEND),
        binary=(
            V1BinaryAnnotation("server.tag", "s", BACKEND),
            V1BinaryAnnotation("loose.tag", "l", None),
        ),
    )
    client, server = to_v2(span)
    assert client["tags"] == {"loose.tag": "l"}
    assert server["tags"] == {"server.tag": "s"}


def test_trace_level_fields_are_copied_to_every_split_span() -> None:
    span = V1Span(
        "0000000000000004" + TRACE, ID, name="get", debug=True,
        annotations=[V1Annotation(T, "cs", FRONTEND), V1Annotation(T + 1, "sr", BACKEND)],
    )  # fmt: skip
    for converted in to_v2(span):
        assert converted["traceId"] == "0000000000000004" + TRACE
        assert converted["debug"] is True
        assert "parentId" not in converted


def test_negative_durations_count_as_absent() -> None:
    span = v1(V1Annotation(T, "sr", BACKEND), V1Annotation(T - 5, "ss", BACKEND))
    (converted,) = to_v2(span)
    assert converted["timestamp"] == T and "duration" not in converted
