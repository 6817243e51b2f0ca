"""Two services traced by OpenTelemetry's own contrib instrumentations, for subprocess tests.

``shop`` (Flask) answers ``/checkout/<order_id>`` with SQLAlchemy queries and a ``requests``
call to ``inventory`` (Flask, SQLAlchemy), so a trace crosses a process boundary over HTTP;
``/fail`` raises after a failing SQL statement, ``/annotate`` writes attributes and events on
``trace.get_current_span()``, ``/quiet`` queries and calls under ``suppress_instrumentation()``
and ``/offline`` calls a port nothing listens on (``CONTRIB_OFFLINE``). Both are served on
127.0.0.1: the shop by werkzeug, the inventory by gunicorn's threaded workers, forked from a
master that imported the application (``--preload``)::

    python tests/opentelemetry/contrib_service.py PORT
    gunicorn --preload --workers 2 --threads 8 'contrib_service:inventory_app()'

The environment says who records the spans (``CONTRIB_PROVIDER``):

- ``sdk``: the OpenTelemetry SDK (``TracerProvider``, ``BatchSpanProcessor``, its Zipkin JSON
  or OTLP exporter);
- ``tomograph``: ``tomograph.configure()`` and ``tomograph.opentelemetry.install()``, the same
  application code;
- ``mixed``: tomograph as the provider, but the shop is traced by tomograph's own Flask
  integration (OpenTelemetry's for requests and SQLAlchemy), and the inventory's view opens a
  native ``tomograph.span()`` inside OpenTelemetry's Flask server span.

``CONTRIB_COLLECTOR`` is the collector's base URL, ``CONTRIB_DATABASE`` a SQLAlchemy URL and
``CONTRIB_INVENTORY`` the inventory's base URL (for the shop).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import requests
import sqlalchemy
from flask import Flask, jsonify, request
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation

import tomograph

# Warnings from the instrumentations and the provider as "LEVEL logger: message" lines
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)

PROVIDER = os.environ["CONTRIB_PROVIDER"]
COLLECTOR = os.environ["CONTRIB_COLLECTOR"]
DATABASE = os.environ["CONTRIB_DATABASE"]


# What a service does before gunicorn forks its workers: nothing for tomograph, which opens
# new connections in a forked child by itself; the SDK's setup adds a step
BEFORE_FORK: list[Callable[[], None]] = []


def install_provider(service: str) -> None:
    """Make ``PROVIDER`` OpenTelemetry's tracer provider, reporting to ``COLLECTOR`` in the
    format ``CONTRIB_EXPORT`` says: ``zipkin`` (JSON v2) or ``otlp`` (protobuf over HTTP)."""
    otlp = os.environ.get("CONTRIB_EXPORT") == "otlp"
    if PROVIDER == "sdk":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.exporter.zipkin.json import ZipkinExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        session = requests.Session()
        exporter: SpanExporter
        if otlp:
            exporter = OTLPSpanExporter(endpoint=f"{COLLECTOR}/v1/traces", session=session)
        else:
            exporter = ZipkinExporter(endpoint=f"{COLLECTOR}/api/v2/spans", session=session)
        # The batch processor, as in production: SimpleSpanProcessor exports from every request
        # thread at once through the exporter's one requests session.
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        trace.set_tracer_provider(provider)

        def release_connections() -> None:
            # The SDK's exporters keep their keep-alive connection in the session. Forked by
            # gunicorn --preload, every worker would inherit the master's one socket and write
            # its requests into it at the same time as the others: the collector reads garbled
            # requests (400, "Invalid HTTP request") and the spans are lost. The setup's spans
            # are exported first, then the workers each open their own connection.
            provider.force_flush()
            session.close()

        BEFORE_FORK.append(release_connections)
    else:
        import tomograph.opentelemetry

        backend = f"otlp+{COLLECTOR}" if otlp else f"zipkin+{COLLECTOR}"
        tomograph.configure(service=service, backends=[backend])
        tomograph.opentelemetry.install()


def instrumented_engine() -> sqlalchemy.Engine:
    engine = sqlalchemy.create_engine(DATABASE)
    # The instrumentation declares SQLAlchemy < 2.1 and would otherwise do nothing on 2.1 (with
    # a warning); it works on 2.1 as it is.
    SQLAlchemyInstrumentor().instrument(engine=engine, skip_dep_check=True)
    return engine


tracer = trace.get_tracer("tests.contrib_service", "1.0")


@contextlib.contextmanager
def application_span(name: str, native: bool) -> Iterator[None]:
    """A span the application opens itself: through OpenTelemetry's API, or tomograph's."""
    if native:
        with tomograph.span(name):
            yield
    else:
        with tracer.start_as_current_span(name):
            yield


def tag_tenant() -> None:
    """The caller's baggage, as the application reads it, on the current span."""
    tenant = baggage.get_baggage("tenant")
    trace.get_current_span().set_attribute("app.tenant", str(tenant))


def shop_app() -> Flask:
    install_provider("shop")
    engine = instrumented_engine()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE IF EXISTS orders"))
        connection.execute(
            sqlalchemy.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, sku TEXT, quantity INT)")
        )
        connection.execute(sqlalchemy.text("INSERT INTO orders VALUES (7, 'tea', 2)"))
    RequestsInstrumentor().instrument()
    inventory = os.environ["CONTRIB_INVENTORY"]
    app = Flask("shop")

    @app.get("/checkout/<int:order_id>")
    def checkout(order_id: int) -> Any:
        tag_tenant()
        with engine.connect() as connection:
            sku, quantity = connection.execute(
                sqlalchemy.text("SELECT sku, quantity FROM orders WHERE id = :id"),
                {"id": order_id},
            ).one()
        with application_span("price order", native=False):
            trace.get_current_span().add_event("priced", {"order.quantity": quantity})
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT count(*) FROM orders")).scalar()
        stock = requests.get(f"{inventory}/stock/{sku}", timeout=20)
        stock.raise_for_status()
        return jsonify(sku=sku, quantity=quantity, **stock.json())

    @app.get("/fail")
    def fail() -> Any:
        with engine.connect() as connection:
            try:
                connection.execute(sqlalchemy.text("SELECT * FROM missing_table"))
            except sqlalchemy.exc.OperationalError as error:
                raise RuntimeError("checkout exploded") from error
        return "unreachable"

    @app.get("/quiet")
    def quiet() -> Any:
        with suppress_instrumentation():
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT count(*) FROM orders")).scalar()
            requests.get(f"{inventory}/stock/tea", timeout=20).raise_for_status()
        return "quiet"

    @app.get("/offline")
    def offline() -> Any:
        try:
            requests.get(os.environ["CONTRIB_OFFLINE"], timeout=20)
        except requests.ConnectionError:
            return "inventory offline", 502
        return "unreachable"

    @app.get("/annotate")
    def annotate() -> Any:
        span = trace.get_current_span()
        span.set_attribute("app.text", "hello")
        span.set_attribute("app.count", 3)
        span.set_attribute("app.ratio", 0.5)
        span.set_attribute("app.flag", True)
        span.set_attributes({"app.tags": ["a", "b"], "app.sizes": [1, 2, 3]})
        span.add_event("cache miss", {"cache.key": "user:42", "cache.size": 10})
        span.add_event("plain")
        return "annotated"

    if PROVIDER == "mixed":
        from tomograph.integrations.flask import Tracing

        Tracing(app, service_name="shop")
    else:
        FlaskInstrumentor().instrument_app(app)
    return app


def inventory_app() -> Flask:
    install_provider("inventory")
    engine = instrumented_engine()
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("DROP TABLE IF EXISTS stock"))
        connection.execute(sqlalchemy.text("CREATE TABLE stock (sku TEXT PRIMARY KEY, units INT)"))
        connection.execute(sqlalchemy.text("INSERT INTO stock VALUES ('tea', 40)"))
    # gunicorn --preload forks the workers after this: they must not share its connections
    engine.dispose()
    for step in BEFORE_FORK:
        step()
    app = Flask("inventory")

    @app.get("/stock/<sku>")
    def stock(sku: str) -> Any:
        tag_tenant()
        with application_span("count stock", native=PROVIDER == "mixed"):
            with engine.connect() as connection:
                units = connection.execute(
                    sqlalchemy.text("SELECT units FROM stock WHERE sku = :sku"), {"sku": sku}
                ).scalar_one()
        return jsonify(stock=units, traceparent=request.headers.get("traceparent"))

    FlaskInstrumentor().instrument_app(app)
    return app


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    # The shop serves every request on one thread: what a request left in the context (a span,
    # an attached context never detached) would show in the next one.
    run_simple("127.0.0.1", int(sys.argv[1]), shop_app(), threaded=False)
