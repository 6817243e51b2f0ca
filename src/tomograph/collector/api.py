"""The HTTP endpoints: Zipkin's v2 API (ingest and query), Zipkin v1 and OTLP/HTTP ingest, and
tomograph's own.

Handlers validate their input, then run the (blocking) store call on a worker thread: queries
through the :class:`~tomograph.collector.query_gate.QueryGate`, ingest on threads of its own, so
a crowd of queries never delays a batch. Errors are JSON ``{"error": "..."}`` with the status
Zipkin uses: 400 for bad input, 404 for an unknown trace, 413 for an oversized upload, 415 for an
unsupported content type, 503 with ``Retry-After`` when the store cannot take a batch now (its
disk is full) or queries must wait (see ``app``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tomograph.collector.coalescing import CoalescingCache
from tomograph.collector.ingest import (
    OTLP_COPIED_PER_BODY_BYTE,
    BodyTooLarge,
    IngestError,
    ServerBusy,
    UnsupportedMediaType,
    UploadGate,
    decode_otlp_body,
    decode_zipkin_body,
    decode_zipkin_v1_body,
    decompress,
    read_body,
)
from tomograph.collector.params import (
    MAX_END_TS,
    MAX_SAMPLES,
    BadRequest,
    parse_operation_kind,
    parse_query_request,
    parse_trace_id,
    parse_trace_ids,
    positive_int,
    present_text,
    required_text,
)
from tomograph.collector.query_gate import QueryGate
from tomograph.collector.settings import CollectorSettings
from tomograph.collector.span_limits import limit_spans
from tomograph.collector.storage import DependencyLink, SpanDict, SpanStore, StoreUnavailable

__all__ = [
    "error_response",
    "json_response",
    "retry_later_response",
    "routes",
    "store_unavailable_response",
]

log = logging.getLogger("tomograph.collector")
_JSON = "application/json"


#: Answers larger than this are sent in pieces of this size: handed to the server whole, a
#: 60 MB answer is copied once more into the socket's write buffer.
_PIECE = 1 << 20
#: Batches decoded and stored at once; more wait for a thread (they are short).
_INGEST_THREADS = 8
#: ``/dependencies`` counts the traces of its window rounded out to whole minutes, so that
#: clients asking "the last hour, now" within the same minute share one computation.
_LINK_WINDOW_MS = 60_000
#: Spans of one operation sent when the client names no ``limit``: enough for a histogram.
_DEFAULT_SAMPLES = 10_000


def json_response(content: Any, status_code: int = 200) -> Response:
    """``content`` (already-encoded bytes, or anything :mod:`json` encodes) as a JSON response."""
    body = content if isinstance(content, bytes) else json.dumps(content).encode()
    if len(body) <= _PIECE:
        return Response(body, status_code=status_code, media_type=_JSON)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), _PIECE):
            yield body[start : start + _PIECE]

    length = {"Content-Length": str(len(body))}
    return StreamingResponse(pieces(), status_code, headers=length, media_type=_JSON)


def error_response(status_code: int, message: str) -> Response:
    """A JSON error body naming what is wrong.

    >>> error_response(400, "limit must be an integer").body
    b'{"error": "limit must be an integer"}'
    """
    return json_response({"error": message}, status_code)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _CountedLog:
    """A recurring event logged at most once a minute, with how often it happened meanwhile.

    Thousands of senders may hit the same condition: one line a minute says so without
    flooding the log.
    """

    def __init__(self, message: str, level: int = logging.INFO, interval: float = 60.0) -> None:
        self.message = message
        self.level = level
        self.interval = interval
        self._count = 0
        self._next = 0.0
        self._lock = threading.Lock()

    def add(self, count: int = 1) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += count
            if now < self._next:
                return
            count, self._count, self._next = self._count, 0, now + self.interval
        log.log(self.level, self.message, count)


_unavailable_log = _CountedLog(
    "the span store could not take %d requests in the last minute (disk full or database"
    " locked); they were answered 503 with Retry-After",
    logging.WARNING,
)


def store_unavailable_response(error: StoreUnavailable) -> Response:
    """503 with Retry-After: the sender keeps its batch and retries (the store is full or busy).

    >>> store_unavailable_response(StoreUnavailable("the disk is full", 30)).headers["retry-after"]
    '30'
    """
    _unavailable_log.add()
    return retry_later_response(str(error), error.retry_after)


def retry_later_response(message: str, seconds: int) -> Response:
    """A JSON 503 asking the client to come back in ``seconds`` (``Retry-After``)."""
    response = error_response(503, message)
    response.headers["Retry-After"] = str(seconds)
    return response


class _Api:
    def __init__(self, store: SpanStore, settings: CollectorSettings, queries: QueryGate) -> None:
        self.store = store
        self.settings = settings
        self.query = queries.run
        self._ingest_threads = anyio.CapacityLimiter(_INGEST_THREADS)
        self._links: CoalescingCache[tuple[int, int], list[DependencyLink]] = CoalescingCache(
            store.data_version, maxsize=32
        )
        self.uploads = UploadGate(
            max(
                settings.max_buffered_bytes or 4 * settings.max_body_bytes, settings.max_body_bytes
            ),
            settings.max_uploads,
            settings.request_timeout,
        )
        self._cuts = _CountedLog(
            "cut %d texts (names, tags, annotations) to the span limits in the last minute"
        )
        self._uncopied = _CountedLog(
            "stored %d OTLP spans without their resource and scope attributes in the last"
            " minute: their requests' copies of them passed the bound (16 times --max-body)",
            logging.WARNING,
        )

    # -- ingest -----------------------------------------------------------------------------

    async def _receive_and_store(
        self, request: Request, decode: Callable[[bytes], list[SpanDict]]
    ) -> int:
        """Read the body, then inflate, decode and store it within the upload gate's bounds;
        returns how many texts were cut to the span limits."""
        async with self.uploads.admit() as take:
            raw = await read_body(
                request.stream(),
                request.headers.get("content-length"),
                request.headers.get("content-encoding"),
                self.settings.max_body_bytes,
                take,
            )
            encoding = request.headers.get("content-encoding")

            def decode_and_store() -> int:
                return self._store(decode(decompress(raw, encoding, self.settings.max_body_bytes)))

            async with self.uploads.decoding():
                # inflating and decoding a large batch is CPU work: keep it off the event loop
                return await anyio.to_thread.run_sync(
                    decode_and_store, limiter=self._ingest_threads
                )

    def _store(self, spans: list[SpanDict]) -> int:
        """Bound ``spans`` to the span limits, then store them; how many texts were cut."""
        cut = limit_spans(spans, self.settings.span_limits)
        if spans:
            self.store.accept(spans)
        if cut:
            self._cuts.add(cut)
        return cut

    async def post_spans(self, request: Request) -> Response:
        content_type = request.headers.get("content-type")
        try:
            await self._receive_and_store(
                request, lambda body: decode_zipkin_body(body, content_type)
            )
        except IngestError as error:
            return _ingest_error(error)
        return Response(status_code=202)

    async def post_spans_v1(self, request: Request) -> Response:
        content_type = request.headers.get("content-type")
        try:
            await self._receive_and_store(
                request, lambda body: decode_zipkin_v1_body(body, content_type)
            )
        except IngestError as error:
            return _ingest_error(error)
        return Response(status_code=202)

    async def post_otlp(self, request: Request) -> Response:
        content_type = request.headers.get("content-type")
        max_copied = OTLP_COPIED_PER_BODY_BYTE * self.settings.max_body_bytes
        is_json = False
        uncopied = 0

        def decode(body: bytes) -> list[SpanDict]:
            nonlocal is_json, uncopied
            spans, is_json = decode_otlp_body(body, content_type, max_copied)
            from tomograph.encoding.otlp import UNCOPIED_TAG  # loaded by the decoder

            uncopied = sum(UNCOPIED_TAG in (span.get("tags") or ()) for span in spans)
            return spans

        try:
            cut = await self._receive_and_store(request, decode)
        except IngestError as error:
            return _ingest_error(error)
        except ImportError:
            message = (
                "OTLP ingest needs opentelemetry-proto: pip install 'tomograph-tracing[collector]'"
            )
            return error_response(501, message)
        from tomograph.encoding.otlp import export_response  # imported by the decoder above

        # OTLP/HTTP answers 200 with an ExportTraceServiceResponse in the request's encoding;
        # its partial_success message (with 0 rejected spans) is OTLP's way to warn the sender
        warnings = []
        if cut:
            warnings.append(f"{cut} texts were cut to the collector's span limits")
        if uncopied:
            self._uncopied.add(uncopied)
            warnings.append(
                f"{uncopied} spans were stored without their resource and scope attributes:"
                f" this request's copies of them passed {max_copied} bytes (send fewer spans"
                " per request)"
            )
        warning = "; ".join(warnings)
        body = export_response(warning, is_json)
        return Response(body, 200, media_type=_JSON if is_json else "application/x-protobuf")

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
        end_ts = positive_int(params, "endTs", _now_ms(), MAX_END_TS) or _now_ms()
        lookback = positive_int(params, "lookback", self.settings.query_lookback_ms, MAX_END_TS)
        return end_ts, min(lookback or self.settings.query_lookback_ms, end_ts)

    async def dependencies(self, request: Request) -> Response:
        end_ts, lookback = self._window(request, end_required=True)
        start = (end_ts - lookback) // _LINK_WINDOW_MS * _LINK_WINDOW_MS
        end = min(-(-end_ts // _LINK_WINDOW_MS) * _LINK_WINDOW_MS, max(end_ts, MAX_END_TS))

        async def compute() -> list[DependencyLink]:
            return await self.query(self.store.dependencies, end, end - start)

        links = await self._links.get((start, end), compute)
        return json_response(links)

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

    async def operation_samples(self, request: Request) -> Response:
        params = request.query_params
        service = required_text(params, "serviceName")
        span_name = present_text(params, "spanName")
        kind = parse_operation_kind(params)
        end_ts, lookback = self._window(request, end_required=False)
        limit = positive_int(params, "limit", _DEFAULT_SAMPLES, MAX_SAMPLES) or _DEFAULT_SAMPLES
        samples = await self.query(
            self.store.operation_samples, service, span_name, kind, end_ts, lookback, limit
        )
        return json_response(samples)

    async def health(self, request: Request) -> Response:
        return json_response({"status": "UP"})


def _ingest_error(error: IngestError) -> Response:
    if isinstance(error, BodyTooLarge):
        return error_response(413, str(error))
    if isinstance(error, ServerBusy):
        return retry_later_response(str(error), 1)
    if isinstance(error, UnsupportedMediaType):
        return error_response(415, str(error))
    return error_response(400, str(error))


def routes(store: SpanStore, settings: CollectorSettings, queries: QueryGate) -> list[Route]:
    """The API routes over ``store``; queries pass through ``queries``."""
    api = _Api(store, settings, queries)
    v2 = "/api/v2"
    return [
        Route(f"{v2}/spans", api.post_spans, methods=["POST"]),
        Route(f"{v2}/spans", api.span_names, methods=["GET"]),
        Route("/api/v1/spans", api.post_spans_v1, methods=["POST"]),
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
        Route(f"{v2}/tomograph/operationSamples", api.operation_samples, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
    ]
