"""httpx: sync and async transports and the patch, against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio

import httpx
from tests.integrations.http_client_checks import check_traced_request, client_spans
from tests.support.http_recorder import RecordingServer

import tomograph
from tomograph.integrations.httpx import AsyncTracingTransport, TracingTransport, patch, unpatch
from tomograph.reporting.memory import MemoryBackend


def test_sync_transport(memory: MemoryBackend, recorder: RecordingServer) -> None:
    with httpx.Client(transport=TracingTransport()) as client, tomograph.span("p") as parent:
        assert client.get(f"{recorder.url}/sync").status_code == 200
    check_traced_request(memory, recorder, parent)


def test_async_transport_keeps_concurrent_requests_apart(
    memory: MemoryBackend, recorder: RecordingServer
) -> None:
    async def one(client: httpx.AsyncClient, index: int) -> tomograph.Span:
        with tomograph.span(f"task {index}") as parent:
            await client.get(f"{recorder.url}/async/{index}")
        return parent

    async def run() -> list[tomograph.Span]:
        async with httpx.AsyncClient(transport=AsyncTracingTransport()) as client:
            return await asyncio.gather(*(one(client, i) for i in range(3)))

    parents = asyncio.run(run())
    spans = client_spans(memory)
    assert len(spans) == 3
    by_parent = {s.parent_id: s for s in spans}
    assert set(by_parent) == {p.span_id for p in parents}
    for request in recorder.requests:
        index = int(request.path.rsplit("/", 1)[1])
        child = by_parent[parents[index].span_id]
        assert request.headers["x-b3-spanid"] == f"{child.span_id:016x}"


def test_patch_and_server_error(memory: MemoryBackend, recorder: RecordingServer) -> None:
    assert patch()
    try:
        with tomograph.span("p") as parent:
            assert httpx.get(f"{recorder.url}/status/503").status_code == 503
    finally:
        assert unpatch()
    span = check_traced_request(memory, recorder, parent, status=503)
    assert span.error
