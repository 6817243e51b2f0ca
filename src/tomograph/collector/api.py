"""The HTTP endpoints: Zipkin's v2 API (ingest and query), OTLP/HTTP ingest, and tomograph's own.

Handlers validate their input, then run the (blocking) store call on a worker thread: queries
through the :class:`~tomograph.collector.query_gate.QueryGate`, ingest on threads of its own, so
a crowd of queries never delays a batch. Errors are JSON ``{"error": "..."}`` with the status
Zipkin uses: 400 for bad input, 404 for an unknown trace, 413 for an oversized upload, 415 for an
unsupported content type, 503 with Retry-After when queries must wait (see ``app``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tomograph.collector.coalescing import CoalescingCache
from tomograph.collector.ingest import (
    BodyTooLarge,
    IngestError,
    UnsupportedMediaType,
    decode_otlp_body,
    decode_zipkin_body,
    decompress,
    read_body,
)
from tomograph.collector.params import (
    BadRequest,
    parse_query_request,
    parse_trace_id,
    parse_trace_ids,
    positive_int,
    required_text,
)
from tomograph.collector.query_gate import QueryGate
from tomograph.collector.settings import CollectorSettings
from tomograph.collector.storage import DependencyLink, SpanStore

__all__ = ["error_response", "json_response", "routes"]

_JSON = "application/json"


def json_response(content: Any, status_code: int = 200) -> Response:
    """``content`` (already-encoded bytes, or anything :mod:`json` encodes) as a JSON response."""
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    return Response(body, status_code=status_code, media_type=_JSON)


def error_response(status_code: int, message: str) -> Response:
    """A JSON error body naming what is wrong.

    >>> error_response(400, "limit must be an integer").body
    b'{"error": "limit must be an integer"}'
    """
    return json_response({"error": message}, status_code)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


#: Batches decoded and stored at once; more wait for a thread (they are short).
_INGEST_THREADS = 8
#: ``/dependencies`` counts the traces of its window rounded out to whole minutes, so that
#: clients asking "the last hour, now" within the same minute share one computation.
_LINK_WINDOW_MS = 60_000
#: The largest end of a window in epoch milliseconds (its microseconds fit SQLite's integers).
_MAX_END_MS = (2**63 - 1) // 1000


class _Api:
    def __init__(self, store: SpanStore, settings: CollectorSettings, gate: QueryGate) -> None:
        self.store = store
        self.settings = settings
        self.query = gate.run
        self._ingest_threads = anyio.CapacityLimiter(_INGEST_THREADS)
        self._links: CoalescingCache[tuple[int, int], list[DependencyLink]] = CoalescingCache(
            store.data_version, maxsize=32
        )

    # -- ingest -----------------------------------------------------------------------------

    async def _upload(self, request: Request) -> bytes:
        return await read_body(
            request.stream(),
            request.headers.get("content-length"),
            request.headers.get("content-encoding"),
            self.settings.max_body_bytes,
        )

    def _inflate(self, request: Request, body: bytes) -> bytes:
        encoding = request.headers.get("content-encoding")
        return decompress(body, encoding, self.settings.max_body_bytes)

    async def post_spans(self, request: Request) -> Response:
        content_type = request.headers.get("content-type")

        def decode_and_store(body: bytes) -> None:
            spans = decode_zipkin_body(self._inflate(request, body), content_type)
            if spans:
                self.store.accept(spans)

        try:
            # decoding a large batch is CPU work: keep it off the event loop
            body = await self._upload(request)
            await anyio.to_thread.run_sync(decode_and_store, body, limiter=self._ingest_threads)
        except IngestError as error:
            return _ingest_error(error)
        return Response(status_code=202)

    async def post_otlp(self, request: Request) -> Response:
        content_type = request.headers.get("content-type")

        def decode_and_store(body: bytes) -> bool:
            spans, is_json = decode_otlp_body(self._inflate(request, body), content_type)
            if spans:
                self.store.accept(spans)
            return is_json

        try:
            body = await self._upload(request)
            is_json = await anyio.to_thread.run_sync(
                decode_and_store, body, limiter=self._ingest_threads
            )
        except IngestError as error:
            return _ingest_error(error)
        except ImportError:
            message = (
                "OTLP ingest needs opentelemetry-proto: pip install 'tomograph-tracing[collector]'"
            )
            return error_response(501, message)
        # OTLP/HTTP answers 200 with an empty ExportTraceServiceResponse in the request's encoding
        if is_json:
            return json_response({})
        return Response(b"", status_code=200, media_type="application/x-protobuf")

    # -- Zipkin queries ---------------------------------------------------------------------

    async def services(self, request: Request) -> Response:
        return json_response(await self.query(self.store.service_names))

    async def span_names(self, request: Request) -> Response:
        service = required_text(request.query_params, "serviceName")
        return json_response(await self.query(self.store.span_names, service))

    async def remote_services(self, request: Request) -> Response:
        service = required_text(request.query_params, "serviceName")
        return json_response(await self.query(self.store.remote_service_names, service))

    async def traces(self, request: Request) -> Response:
        query = parse_query_request(request.query_params, self.settings.query_lookback_ms)

        def search() -> bytes:
            return self.store.get_traces_json(self.store.find_trace_ids(query))

        return json_response(await self.query(search))

    async def trace(self, request: Request) -> Response:
        trace_id = parse_trace_id(request.path_params["trace_id"])
        body = await self.query(self.store.get_trace_json, trace_id)
        if body is None:
            return error_response(404, f"trace {trace_id} not found")
        return json_response(body)

    async def trace_many(self, request: Request) -> Response:
        trace_ids = parse_trace_ids(request.query_params.get("traceIds"))
        return json_response(await self.query(self.store.get_traces_json, trace_ids))

    def _window(self, request: Request, end_required: bool) -> tuple[int, int]:
        params = request.query_params
        if end_required and not params.get("endTs"):
            raise BadRequest("endTs is required")
        end_ts = positive_int(params, "endTs", _now_ms()) or _now_ms()
        lookback = positive_int(params, "lookback", self.settings.query_lookback_ms)
        return end_ts, min(lookback or self.settings.query_lookback_ms, end_ts)

    async def dependencies(self, request: Request) -> Response:
        end_ts, lookback = self._window(request, end_required=True)
        start = (end_ts - lookback) // _LINK_WINDOW_MS * _LINK_WINDOW_MS
        end = min(-(-end_ts // _LINK_WINDOW_MS) * _LINK_WINDOW_MS, max(end_ts, _MAX_END_MS))

        async def compute() -> list[DependencyLink]:
            return await self.query(self.store.dependencies, end, end - start)

        return json_response(await self._links.get((start, end), compute))

    async def autocomplete_keys(self, request: Request) -> Response:
        return json_response(list(self.settings.autocomplete_keys))

    async def autocomplete_values(self, request: Request) -> Response:
        key = request.query_params.get("key")
        if not key:
            raise BadRequest("key is required")
        if key not in self.settings.autocomplete_keys:
            return json_response([])  # as Zipkin: values only for configured keys
        return json_response(await self.query(self.store.tag_values, key))

    # -- tomograph's own --------------------------------------------------------------------

    async def operations(self, request: Request) -> Response:
        service = required_text(request.query_params, "serviceName")
        end_ts, lookback = self._window(request, end_required=False)
        stats = await self.query(self.store.operations, service, end_ts, lookback)
        return json_response(stats)

    async def health(self, request: Request) -> Response:
        return json_response({"status": "UP"})


def _ingest_error(error: IngestError) -> Response:
    if isinstance(error, BodyTooLarge):
        return error_response(413, str(error))
    if isinstance(error, UnsupportedMediaType):
        return error_response(415, str(error))
    return error_response(400, str(error))


def routes(store: SpanStore, settings: CollectorSettings, gate: QueryGate) -> list[Route]:
    """The API routes over ``store``; queries pass through ``gate``."""
    api = _Api(store, settings, gate)
    v2 = "/api/v2"
    return [
        Route(f"{v2}/spans", api.post_spans, methods=["POST"]),
        Route(f"{v2}/spans", api.span_names, methods=["GET"]),
        Route("/v1/traces", api.post_otlp, methods=["POST"]),
        Route(f"{v2}/services", api.services, methods=["GET"]),
        Route(f"{v2}/remoteServices", api.remote_services, methods=["GET"]),
        Route(f"{v2}/traces", api.traces, methods=["GET"]),
        Route(f"{v2}/trace/{{trace_id}}", api.trace, methods=["GET"]),
        Route(f"{v2}/traceMany", api.trace_many, methods=["GET"]),
        Route(f"{v2}/dependencies", api.dependencies, methods=["GET"]),
        Route(f"{v2}/autocompleteKeys", api.autocomplete_keys, methods=["GET"]),
        Route(f"{v2}/autocompleteValues", api.autocomplete_values, methods=["GET"]),
        Route(f"{v2}/tomograph/operations", api.operations, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
    ]
