"""aiohttp tracing cost: tomograph's middleware and TraceConfig beside OpenTelemetry's.

1. Server, in process: a request routed and handled by an ``Application`` (``/users/{id}``,
   a trivial handler) with no middleware, tomograph's ``TracingMiddleware``, or OpenTelemetry's
   aiohttp-server middleware; µs added per request, for a new trace and for a request carrying
   ``traceparent``.
2. Client, in process: the events aiohttp sends a trace config for one keep-alive GET (request
   start, connection reused, headers sent, request end, a body chunk), to tomograph's
   ``TracingTraceConfig`` or OpenTelemetry's aiohttp-client trace config; µs per request.

Both tracers record every span into memory (bounded): the numbers are the cost of tracing,
not of exporting. The cases take turns, so load on the machine affects them alike.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

from aiohttp import ClientSession, TraceConfig, web
from aiohttp.http import HttpVersion11, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

import tomograph
from _harness import Result, print_table
from tomograph.integrations.aiohttp import TracingMiddleware, TracingTraceConfig
from tomograph.reporting.memory import MemoryBackend

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PEERS = {"opentelemetry": "opentelemetry-aiohttp"}


async def user(request: web.Request) -> web.Response:
    return web.Response(text="hello")


def _otel_provider() -> Any:
    """An OpenTelemetry TracerProvider recording into a bounded memory exporter, or None."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    except ImportError:
        return None

    class BoundedExporter(InMemorySpanExporter):  # type: ignore[misc]
        def export(self, spans: Any) -> Any:
            if len(self._finished_spans) > 1000:
                self.clear()  # keep memory bounded, as tomograph's MemoryBackend does
            return super().export(spans)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(BoundedExporter()))
    return provider


def _configure_tomograph() -> None:
    tomograph.configure(service="bench", backends=[MemoryBackend(max_spans=1000)], environ={})


def build_app(kind: str) -> web.Application:
    """The application traced by ``kind``; raises ImportError if that library is missing."""
    if kind == "bare":
        app = web.Application()
    elif kind == "tomograph":
        _configure_tomograph()
        app = web.Application(middlewares=[TracingMiddleware(service_name="bench")])
    else:
        from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

        provider = _otel_provider()
        if provider is None:
            raise ImportError("opentelemetry-sdk")
        instrumentor = AioHttpServerInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            app = web.Application()  # its documented set-up: the instrumented Application class
        finally:
            instrumentor.uninstrument()
    app.router.add_get("/users/{id}", user)
    app.freeze()
    return app


class _Transport:
    """What the middlewares read from a connection: its two addresses."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ADDRESSES.get(name, default)

    def is_closing(self) -> bool:
        return False


ADDRESSES = {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}


def _handle_one(
    kind: str, headers: dict[str, str], loop: asyncio.AbstractEventLoop
) -> Callable[[], Awaitable[object]]:
    app = build_app(kind)
    all_headers = CIMultiDict({"Host": "127.0.0.1:8080", **headers})
    message = RawRequestMessage(
        "GET",
        "/users/7",
        HttpVersion11,
        CIMultiDictProxy(all_headers),
        tuple((k.encode(), v.encode()) for k, v in all_headers.items()),
        False,
        None,
        False,
        False,
        URL("/users/7"),
    )
    transport = _Transport()
    # plain objects, not test mocks: a mock's attribute access would cost more than tracing
    protocol = SimpleNamespace(
        transport=transport,
        writer=None,
        peername=ADDRESSES["peername"],
        sockname=ADDRESSES["sockname"],
        ssl_context=None,
    )
    handle = app._handle

    def one() -> Awaitable[object]:
        request = web.Request(message, None, protocol, None, None, loop)  # type: ignore[arg-type]
        return handle(request)

    return one


def _best_per_request(
    loop: asyncio.AbstractEventLoop,
    cases: dict[str, Callable[[], Awaitable[object]]],
    batch: int = 200,
    rounds: int = 25,
) -> dict[str, float]:
    """Best µs per request of each case; the cases take turns, so load on the machine affects
    them alike (one measured after another would compare different moments)."""

    async def run_batch(one: Callable[[], Awaitable[object]]) -> float:
        start = time.perf_counter()
        for _ in range(batch):
            await one()
        return (time.perf_counter() - start) / batch * 1e6

    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for kind, one in cases.items():
            best[kind] = min(best[kind], loop.run_until_complete(run_batch(one)))
    return best


def server_in_process() -> None:
    results: list[Result] = []
    loop = asyncio.new_event_loop()
    try:
        for case, headers in {
            "new trace": {},
            "incoming traceparent": {"traceparent": TRACEPARENT},
        }.items():
            cases = {}
            for kind in ("bare", "tomograph", "opentelemetry"):
                try:
                    cases[kind] = _handle_one(kind, headers, loop)
                except ImportError:
                    print(f"({kind} aiohttp middleware not installed: skipped)", file=sys.stderr)
            best = _best_per_request(loop, cases)
            for kind in ("tomograph", "opentelemetry"):
                if kind in best:
                    results.append(Result(case, PEERS.get(kind, kind), best[kind] - best["bare"]))
        print(f"\n(an untraced request takes {best['bare']:.1f} µs here)")
    finally:
        loop.close()
    print_table(
        "aiohttp server middleware, in process (µs per request added to routing and a "
        "trivial handler; ratio: peer / tomograph)",
        results,
    )


# -- client --------------------------------------------------------------------------------------


def client_trace_configs(kind: str) -> list[TraceConfig]:
    if kind == "bare":
        return []
    if kind == "tomograph":
        _configure_tomograph()
        return [TracingTraceConfig()]
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    provider = _otel_provider()
    if provider is None:
        raise ImportError("opentelemetry-sdk")
    return [create_trace_config(tracer_provider=provider)]


def client_in_process(rounds: int = 25, batch: int = 500) -> None:
    """The trace configs' own work for one keep-alive GET: the events aiohttp sends each
    trace config for it, in order, with what they carry (no network: the least noisy)."""
    from aiohttp.tracing import Trace

    url = URL("http://127.0.0.1:8080/users/7")
    response = SimpleNamespace(status=200, headers=CIMultiDict(), url=url)
    loop = asyncio.new_event_loop()
    cases: dict[str, Callable[[], Awaitable[object]]] = {}

    async def make_session() -> ClientSession:
        return ClientSession()

    session = loop.run_until_complete(make_session())
    for kind in ("tomograph", "opentelemetry"):
        try:
            configs = client_trace_configs(kind)
        except ImportError:
            print(f"({kind} aiohttp client tracing not installed: skipped)", file=sys.stderr)
            continue
        for config in configs:
            config.freeze()

        async def one(configs: list[TraceConfig] = configs) -> None:
            headers: CIMultiDict[str] = CIMultiDict({"Host": "127.0.0.1:8080"})
            traces = [Trace(session, c, c.trace_config_ctx()) for c in configs]
            for trace in traces:
                await trace.send_request_start("GET", url, headers)
            for trace in traces:
                await trace.send_connection_reuseconn()
            for trace in traces:
                await trace.send_request_headers("GET", url, headers)
            for trace in traces:
                await trace.send_request_end("GET", url, headers, response)  # type: ignore[arg-type]
            for trace in traces:
                await trace.send_response_chunk_received("GET", url, b"hello")

        cases[kind] = one
    try:
        best = _best_per_request(loop, cases, batch, rounds)
        loop.run_until_complete(session.close())
    finally:
        loop.close()
    print_table(
        "aiohttp client trace config, in process (µs per request: the tracing events of one "
        "GET; ratio: peer / tomograph)",
        [Result("GET", PEERS.get(kind, kind), us) for kind, us in best.items()],
    )


if __name__ == "__main__":
    server_in_process()
    client_in_process()
