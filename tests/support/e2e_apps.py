"""The services of the end-to-end test, each run in its own process.

``python -m tests.support.e2e_apps front PORT BACK_URL``: a WSGI front end (waitress) that
calls the back end with requests. ``python -m tests.support.e2e_apps back PORT DB_PATH``: an
ASGI back end (Starlette under uvicorn) that queries SQLite through SQLAlchemy. Both report to
the backends in ``TOMOGRAPH_BACKENDS``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

import tomograph


def front(port: int, back_url: str) -> None:
    import requests
    import waitress

    from tomograph.integrations.requests import instrument_session

    tomograph.configure(service="front")
    session = instrument_session(requests.Session())

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        order = environ["PATH_INFO"].rsplit("/", 1)[-1]
        answer = session.get(f"{back_url}/orders/{order}", timeout=10)
        start_response(f"{answer.status_code} X", [("Content-Type", "text/plain")])
        return [answer.content]

    traced = tomograph.Middleware(app, service_name="front")
    waitress.serve(traced, host="127.0.0.1", port=port, threads=2, _quiet=True)


def back(port: int, db_path: str) -> None:
    import sqlalchemy as sa
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tomograph.integrations.asgi import TracingMiddleware
    from tomograph.integrations.sqlalchemy import instrument

    tomograph.configure(service="back")
    engine = sa.create_engine(f"sqlite:///{db_path}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT)"
        )
        conn.exec_driver_sql("INSERT OR REPLACE INTO orders VALUES (7, 'teapot')")
    instrument(engine)

    async def order(request: Request) -> PlainTextResponse:
        with engine.connect() as conn:
            item = conn.execute(
                sa.text("SELECT item FROM orders WHERE id = :id"),
                {"id": int(request.path_params["order_id"])},
            ).scalar()
        return PlainTextResponse(str(item), status_code=200 if item else 404)

    app = TracingMiddleware(
        Starlette(routes=[Route("/orders/{order_id}", order)]), service_name="back"
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")


if __name__ == "__main__":
    role, port, argument = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    {"front": front, "back": back}[role](port, argument)
