"""The services of ``tomograph demo``: a shop calling an inventory and a payment service.

Three real HTTP servers on 127.0.0.1 (``wsgiref``, each in a thread, each with its own tracer and
:class:`~tomograph.integrations.wsgi.Middleware`); the inventory reads a cart from SQLite through
instrumented SQLAlchemy; the payment service declines the card. A client calls the shop, so one
trace crosses four services, as it would across processes.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from tomograph.backend import Backend
from tomograph.integrations.http_client import begin
from tomograph.tracer import Tracer

__all__ = ["DemoResult", "run_http_demo"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class PaymentDeclined(Exception):
    """The card processor said no."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo prints its trace, not an access log


def _respond(start_response: StartResponse, status: str, payload: object) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def http_get(tracer: Tracer, url: str, route: str) -> tuple[int, Any]:
    """GET ``url`` in a client span named after the ``route`` it calls, trace context sent.

    The span is the one every HTTP client integration records (the client contract); the demo
    knows the route template it calls, so the span reads ``GET /carts/{cart_id}``.
    """
    parts = urlsplit(url)
    call = begin("GET", url, tracer)
    assert call is not None  # nothing outer traces the demo's calls
    call.span.name = f"GET {route}"
    headers: dict[str, str] = {}
    call.inject(headers)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.request(
            "GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers
        )
        response = connection.getresponse()
        payload = json.loads(response.read() or b"null")
    except BaseException as error:
        call.end(error=error)
        raise
    finally:
        connection.close()
    call.end(response.status)
    return response.status, payload


def _matched(environ: dict[str, Any], template: str) -> dict[str, str] | None:
    """Match the request path against ``template`` (``/carts/{cart_id}``); None if it differs.

    A match tags ``http.route`` on the request's span, so the middleware names the span
    ``GET /carts/{cart_id}``, as a framework's router would.
    """
    path = environ.get("PATH_INFO", "").strip("/").split("/")
    parts = template.strip("/").split("/")
    if len(path) != len(parts):
        return None
    values: dict[str, str] = {}
    for segment, part in zip(path, parts, strict=True):
        if part.startswith("{") and part.endswith("}"):
            values[part[1:-1]] = segment
        elif segment != part:
            return None
    environ["tomograph.span"].tag("http.route", template)
    return values


def _not_found(start_response: StartResponse) -> list[bytes]:
    return _respond(start_response, "404 Not Found", {"error": "no such route"})


def _inventory_app(tracer: Tracer) -> WSGIApp:
    import sqlalchemy

    from tomograph.integrations.sqlalchemy import instrument

    engine = sqlalchemy.create_engine(
        "sqlite://", poolclass=sqlalchemy.pool.StaticPool, connect_args={"check_same_thread": False}
    )
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("CREATE TABLE cart_items (cart_id INT, sku TEXT, qty INT)")
        )
        connection.execute(
            sqlalchemy.text(
                "INSERT INTO cart_items VALUES (42, 'tea', 2), (42, 'mug', 1), (42, 'honey', 1)"
            )
        )
    instrument(engine, tracer=tracer)

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        matched = _matched(environ, "/carts/{cart_id}")
        if matched is None or not matched["cart_id"].isdigit():
            return _not_found(start_response)
        with tracer.span("load cart") as load:
            with engine.connect() as connection:
                rows = connection.execute(
                    sqlalchemy.text("SELECT sku, qty FROM cart_items WHERE cart_id = :cart"),
                    {"cart": int(matched["cart_id"])},
                ).all()
            load.annotate("cart loaded")
            load.tag("cart.items", len(rows))
        return _respond(start_response, "200 OK", [{"sku": sku, "qty": qty} for sku, qty in rows])

    return app


def _payments_app(tracer: Tracer) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if _matched(environ, "/charges") is None:
            return _not_found(start_response)
        try:
            with tracer.span("authorize card", tags={"amount": 42.5, "currency": "EUR"}) as span:
                span.annotate("risk check passed")
                raise PaymentDeclined("card declined: insufficient funds")
        except PaymentDeclined as declined:
            return _respond(start_response, "402 Payment Required", {"error": str(declined)})

    return app


def _shop_app(tracer: Tracer, inventory: str, payments: str) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        if _matched(environ, "/checkout") is None:
            return _not_found(start_response)
        _, items = http_get(tracer, f"{inventory}/carts/42", "/carts/{cart_id}")
        status, _ = http_get(tracer, f"{payments}/charges?cart=42", "/charges")
        if status != 200:
            return _respond(start_response, "502 Bad Gateway", {"error": "payment failed"})
        return _respond(start_response, "200 OK", {"items": items})

    return app


@contextmanager
def _serving(app: WSGIApp) -> Iterator[str]:
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, name="tomograph demo service", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class DemoResult:
    """What a demo run produced: the trace id and the client's answer."""

    def __init__(self, trace_id: int, status: int) -> None:
        self.trace_id = trace_id
        self.status = status


def run_http_demo(backends: list[Backend]) -> DemoResult:
    """Run the four-service workload once, reporting every span to ``backends``."""
    from tomograph.integrations.wsgi import Middleware

    def tracer(service: str) -> Tracer:
        return Tracer(service, backends=backends)

    client = tracer("demo-client")
    inventory_tracer, payments_tracer, shop_tracer = (
        tracer("inventory"),
        tracer("payments"),
        tracer("shop"),
    )
    with ExitStack() as stack:
        inventory = stack.enter_context(
            _serving(Middleware(_inventory_app(inventory_tracer), tracer=inventory_tracer))
        )
        payments = stack.enter_context(
            _serving(Middleware(_payments_app(payments_tracer), tracer=payments_tracer))
        )
        shop = stack.enter_context(
            _serving(Middleware(_shop_app(shop_tracer, inventory, payments), tracer=shop_tracer))
        )
        with client.span("checkout", tags={"user": "demo"}) as root:
            status, _ = http_get(client, f"{shop}/checkout", "/checkout")
            root.annotate("checkout answered")
    return DemoResult(root.trace_id, status)
