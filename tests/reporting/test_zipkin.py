"""The Zipkin backend against a real HTTP endpoint that validates bodies with Zipkin's spec."""

from __future__ import annotations

import json

import pytest

import tomograph
from support.zipkin_server import RecordingZipkinServer, validate_list_of_spans
from tomograph import ConfigurationError, Tracer, config
from tomograph.model import Endpoint
from tomograph.reporting import zipkin_json
from tomograph.reporting.zipkin import ZipkinBackend

from .conftest import finished_spans

pytestmark = pytest.mark.integration


def _trace(tracer: Tracer) -> None:
    with tracer.span("checkout", kind="server", tags={"items": 3, "vip": True}) as root:
        root.annotate("validated")
        with tracer.span("charge", kind="client", remote_endpoint=Endpoint("bank", "10.0.0.9")):
            pass


@pytest.mark.parametrize("query", ["", "?encoding=proto", "?gzip=1", "?encoding=proto&gzip=true"])
def test_spans_arrive_valid_in_every_encoding(query: str) -> None:
    with RecordingZipkinServer() as server:
        url = f"zipkin+{server.url}{query}".replace("zipkin+http://", "zipkin+http://")
        backend = config.backend_from_url(url)
        tracer = Tracer("Shop", backends=[backend])
        _trace(tracer)
        assert backend.flush(5)
        spans = server.wait_for(2)
        backend.close(1)
    assert server.invalid == []
    by_name = {span["name"]: span for span in spans}
    assert by_name["charge"]["parentId"] == by_name["checkout"]["id"]
    assert by_name["checkout"]["tags"] == {"items": "3", "vip": "true"}
    assert by_name["checkout"]["annotations"][0]["value"] == "validated"
    assert by_name["charge"]["remoteEndpoint"] == {"serviceName": "bank", "ipv4": "10.0.0.9"}
    assert by_name["charge"]["localEndpoint"] == {"serviceName": "shop"}
    headers = server.requests[0]["headers"]
    assert headers["Content-Type"] == (
        "application/x-protobuf" if "proto" in query else "application/json"
    )
    assert ("gzip" in query) == (headers.get("Content-Encoding") == "gzip")


def test_spans_reach_zipkin_through_configure_and_stats_count_them() -> None:
    with RecordingZipkinServer() as server:
        tomograph.configure(
            service="web", backends=[f"zipkin+{server.url}?interval=0.05"], environ={}
        )
        try:
            for _ in range(5):
                with tomograph.span("request"):
                    pass
            assert tomograph.flush(5)
            stats = tomograph.stats()
        finally:
            config.reset()
        assert len(server.wait_for(5)) == 5
    assert (stats["queued"], stats["sent"], stats["dropped"], stats["failed"]) == (5, 5, 0, 0)
    assert stats["batches"] >= 1 and stats["bytes"] > 0
    (backend_stats,) = stats["backends"].values()
    assert backend_stats["sent"] == 5


def test_large_batches_are_split_to_fit_max_bytes() -> None:
    with RecordingZipkinServer() as server:
        backend = ZipkinBackend(server.url, max_bytes=2000, batch_size=500, interval=0.05)
        tracer = Tracer("svc", backends=[backend])
        for index in range(100):
            with tracer.span(f"operation number {index}"):
                pass
        assert backend.flush(5)
        assert len(server.wait_for(100)) == 100
        backend.close(1)
    assert len(server.requests) > 1
    assert all(request["size"] <= 2000 for request in server.requests)


def test_encoded_spans_validate_against_zipkin_openapi() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=100, deadline=None)
    @given(st.lists(finished_spans(), min_size=1, max_size=3))
    def check(spans: list[tomograph.Span]) -> None:
        validate_list_of_spans(json.loads(zipkin_json.encode_spans(spans)))

    check()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("zipkin+http://127.0.0.1:9411?encoding=xml", "encoding must be json or proto"),
        ("zipkin+http://127.0.0.1:9411?colour=red", "unknown parameter 'colour'"),
        ("zipkin+http://127.0.0.1:9411?timeout=soon", "timeout must be a number"),
        ("zipkin+http://127.0.0.1:9411?gzip=maybe", "gzip must be true or false"),
        ("zipkin+http://127.0.0.1:9411?queue_size=0", "at least 1"),
        ("zipkin+http://?x", "unknown parameter"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config.backend_from_url(url)


def test_url_path_prefix_is_kept() -> None:
    backend = config.backend_from_url("zipkin+https://gateway.example/zipkin/?timeout=1")
    assert isinstance(backend, ZipkinBackend)
    assert backend.endpoint == "https://gateway.example/zipkin/api/v2/spans"
    backend.close(0)
