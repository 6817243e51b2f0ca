"""A Flask application for subprocess tests, served by gunicorn or werkzeug.

It configures tomograph from the ``TOMOGRAPH_*`` environment at import, as a service would,
and is traced the way ``FLASK_TRACING`` says: ``extension`` (``Tracing(app)``, the default) or
``patch`` (``patch()`` before the application exists)::

    gunicorn 'tests.support.flask_app:app'
    python -m tests.support.flask_app PORT      # werkzeug's threaded server
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

from flask import Blueprint, Flask, stream_with_context

import tomograph
from tomograph.integrations import flask as traced_flask

tomograph.configure()
if os.environ.get("FLASK_TRACING") == "patch":
    traced_flask.patch()

app = Flask("orders")
carts = Blueprint("carts", "orders", url_prefix="/carts")


@carts.get("/<int:cart_id>")
def show_cart(cart_id: int) -> str:
    with tomograph.span("load cart"):
        pass
    return f"cart {cart_id}"


@app.get("/fail")
def fail() -> str:
    raise RuntimeError("view bug")


@app.get("/stream")
def stream() -> object:
    def chunks() -> Iterator[str]:
        for index in range(3):
            with tomograph.span(f"chunk {index}"):
                pass
            yield f"{index}\n"

    return app.response_class(stream_with_context(chunks()))


app.register_blueprint(carts)
if os.environ.get("FLASK_TRACING", "extension") == "extension":
    traced_flask.Tracing(app, service_name="orders")


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
