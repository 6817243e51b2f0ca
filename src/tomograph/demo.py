"""``tomograph demo``: a small traced workload, shown as a waterfall in the terminal.

A client calls a server; the server loads a cart (with a nested database query) and charges a
card, which fails. The trace context crosses from client to server as a :class:`TraceContext`,
as it would in a request header.
"""

from __future__ import annotations

import time

from tomograph.model import Endpoint, TraceContext
from tomograph.reporting.memory import MemoryBackend
from tomograph.tracer import Tracer
from tomograph.waterfall import render_waterfall, rows_from_spans

__all__ = ["run_demo"]


class PaymentDeclined(Exception):
    """The card processor said no."""


def _server(tracer: Tracer, incoming: TraceContext) -> int:
    with tracer.span("GET /checkout", kind="server", parent=incoming) as request:
        request.tag("http.method", "GET")
        request.tag("http.path", "/checkout")
        with tracer.span("load cart") as load:
            with tracer.span("SELECT cart_items", kind="client") as query:
                query.remote_endpoint = Endpoint("sqlite")
                query.tag("db.system", "sqlite")
                time.sleep(0.004)
                query.tag("db.rows", 3)
            load.annotate("cache miss")
            time.sleep(0.002)
        try:
            with tracer.span("charge card", kind="client", tags={"amount": 42.5}) as charge:
                charge.remote_endpoint = Endpoint("payments")
                time.sleep(0.006)
                raise PaymentDeclined("card declined: insufficient funds")
        except PaymentDeclined:
            request.tag("http.status_code", 402)
            return 402


def run_demo() -> tuple[MemoryBackend, str]:
    """Run the workload; returns the backend holding its spans and the rendered waterfall."""
    memory = MemoryBackend()
    client = Tracer("demo-client", backends=[memory])
    server = Tracer("demo-server", backends=[memory])
    with client.span("GET /checkout", kind="client") as call:
        call.tag("http.url", "http://127.0.0.1:8080/checkout")
        call.annotate("request sent")
        status = _server(server, call.context)
        call.tag("http.status_code", status)
    return memory, render_waterfall(rows_from_spans(memory.spans))
