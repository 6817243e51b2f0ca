"""The collector as an ASGI application: API routes, the web UI, security, retention.

Security defaults: the server binds 127.0.0.1 and, bound to any loopback address, answers only
requests addressed to a loopback host name (a web page cannot reach it through DNS rebinding);
browsers on other origins are refused unless listed in ``cors_origins``; with a ``token`` every
API call needs ``Authorization: Bearer <token>``. Every answer, errors and crashes included, is
JSON or a UI file and carries :data:`SECURITY_HEADERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tomograph.collector.api import (
    error_response,
    retry_later_response,
    routes,
    store_unavailable_response,
)
from tomograph.collector.body_deadline import BodyDeadlineMiddleware
from tomograph.collector.params import BadRequest
from tomograph.collector.query_gate import Overloaded, QueryGate
from tomograph.collector.settings import CollectorSettings, is_loopback
from tomograph.collector.sqlite_store import SqliteSpanStore
from tomograph.collector.storage import QueryTimeout, SpanStore, StoreClosed, StoreUnavailable
from tomograph.collector.ui_files import UiFiles

__all__ = ["SECURITY_HEADERS", "begin_shutdown", "create_app", "ui_directory"]

log = logging.getLogger("tomograph.collector")
_PROTECTED = ("/api/", "/v1/")


def ui_directory() -> Path:
    """The folder holding the web UI's static files (packaged with tomograph)."""
    return Path(str(resources.files("tomograph") / "ui"))


class _GuardMiddleware:
    """Bearer-token check for the API, and refusal of cross-origin browser writes."""

    def __init__(self, app: ASGIApp, settings: CollectorSettings) -> None:
        self.app = app
        self.token = settings.token.encode() if settings.token else None
        self.origins = set(settings.cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_PROTECTED):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if request.method == "OPTIONS":  # CORS preflight, answered by the CORS middleware
            await self.app(scope, receive, send)
            return
        origin = request.headers.get("origin")
        if origin and origin not in self.origins and not _same_origin(origin, request):
            response = error_response(403, f"origin {origin} is not allowed (see --cors-origin)")
            await response(scope, receive, send)
            return
        if self.token is not None:
            header = request.headers.get("authorization", "")
            scheme, _, credentials = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credentials.strip().encode(), self.token
            ):
                response = error_response(401, "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="tomograph"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: Sent with every answer: the UI loads only its own files, cannot be framed by another site
#: (clickjacking), and browsers never guess a content type. Inline styles are allowed because
#: the waterfall positions its bars with style attributes.
SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        b" frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


class _SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every HTTP answer, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(header: str) -> str | None:
    """The name in a Host header (``name``, ``name:port``, ``[v6]:port``); None if malformed."""
    if header.startswith("["):
        end = header.find("]") + 1
        if not end:
            return None
        name, rest = header[:end], header[end:]
    else:
        name, colon, port = header.partition(":")
        rest = colon + port
    if rest and not (rest[1:].isascii() and rest[1:].isdigit() and rest[0] == ":"):
        return None
    return name


class _LoopbackHostMiddleware:
    """Refuses requests whose Host is not a loopback name: the DNS-rebinding defence.

    A page on ``evil.example`` whose name is made to resolve to 127.0.0.1 reaches the collector
    with ``Host: evil.example``; a loopback server has no business answering that name.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = Request(scope).headers.get("host", "")
            name = _host_name(header)
            if name is None or not is_loopback(name):
                response = error_response(
                    400,
                    f"Host {header[:100]!r} is not a loopback name: this collector listens on"
                    " loopback and answers only to localhost and loopback addresses",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _CollectorApp(Starlette):
    """Starlette with the security headers outside everything, even its last-resort 500."""

    #: Never traced by ``tomograph.integrations.starlette.patch()`` (``tomograph run``): its
    #: spans would be reported to itself, a span more for every batch it ingests.
    tomograph_untraced = True

    def build_middleware_stack(self) -> ASGIApp:
        return _SecurityHeadersMiddleware(super().build_middleware_stack())


def _same_origin(origin: str, request: Request) -> bool:
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def _bad_request(request: Request, exc: Exception) -> Response:
    return error_response(400, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    """503 for a query refused, stopped or cut short by shutdown: the client may retry later."""
    retry_after = exc.retry_after if isinstance(exc, Overloaded) else 1
    if isinstance(exc, StoreClosed):
        message = "the collector is shutting down"
    elif isinstance(exc, QueryTimeout):
        message = f"{exc}: narrow the time range or add criteria"
    else:
        message = str(exc)
    return retry_later_response(message, retry_after)


# These name the path from the scope, not from request.url: building the URL decodes the raw
# query string as UTF-8, which fails for a client's stray bytes (a second error, a 500).
async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"no such resource: {request.scope['path'][:200]}")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    path = request.scope["path"][:200]
    return error_response(405, f"{request.method} is not allowed on {path}")


async def _store_unavailable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StoreUnavailable)
    return store_unavailable_response(exc)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=400)  # nobody reads it: the client hung up mid-body


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback (it re-raises to the server); the client learns only that
    # the fault is ours, never the details
    return error_response(500, "internal error in the collector (see its log)")


def open_store(settings: CollectorSettings) -> SpanStore:
    """The span store ``settings`` names: PostgreSQL for a ``db_url``, else the SQLite file.

    psycopg is imported only for a PostgreSQL URL.
    """
    if settings.db_url is not None:
        from tomograph.collector.postgres_store import PostgresSpanStore

        return PostgresSpanStore(
            settings.db_url,
            max_age=settings.max_age,
            max_bytes=settings.max_bytes,
            readers=settings.max_concurrent_queries + 1,
            # one per upload stored at once, and one for retention
            writers=settings.max_uploads + 1,
            query_timeout=settings.query_timeout,
        )
    return SqliteSpanStore(
        settings.db_path,
        max_age=settings.max_age,
        max_bytes=settings.max_bytes,
        # one more than the queries that run at once, for retention's size checks
        readers=settings.max_concurrent_queries + 1,
        query_timeout=settings.query_timeout,
    )


def create_app(
    settings: CollectorSettings | None = None, store: SpanStore | None = None
) -> Starlette:
    """The collector's ASGI app; opens the store ``settings`` names (see :func:`open_store`).

    >>> import tempfile, pathlib
    >>> folder = tempfile.TemporaryDirectory()
    >>> app = create_app(CollectorSettings(db_path=pathlib.Path(folder.name) / "t.db"))
    >>> app.state.store.close()
    >>> folder.cleanup()
    """
    settings = settings or CollectorSettings()
    if store is None:
        store = open_store(settings)
    gate = QueryGate(
        settings.max_concurrent_queries,
        settings.max_queued_queries,
        max_wait=settings.query_timeout / 2,
    )
    ui = ui_directory()

    async def index(request: Request) -> Response:
        return FileResponse(ui / "index.html", headers={"Cache-Control": "no-cache"})

    async def retention_loop() -> None:
        while True:
            try:
                result = await run_in_threadpool(store.enforce_retention)
                if result.traces_deleted:
                    log.info("retention removed %d traces", result.traces_deleted)
            except StoreClosed:
                return  # the server stops
            except Exception:  # keep serving; the next pass may succeed
                log.exception("retention pass failed")
            await asyncio.sleep(settings.retention_interval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(retention_loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            store.close()

    middleware = []
    if settings.loopback_only:
        middleware.append(Middleware(_LoopbackHostMiddleware))
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
                max_age=600,
            )
        )
    middleware.append(Middleware(_GuardMiddleware, settings=settings))
    middleware.append(
        Middleware(
            BodyDeadlineMiddleware,
            timeout=settings.request_timeout,
            min_rate=settings.min_body_rate,
        )
    )
    app = _CollectorApp(
        routes=[
            Route("/", index, methods=["GET"]),
            *routes(store, settings, gate),
            Mount("/ui", app=UiFiles(directory=ui), name="ui"),
        ],
        middleware=middleware,
        exception_handlers={
            BadRequest: _bad_request,
            StoreUnavailable: _store_unavailable,
            ClientDisconnect: _client_gone,
            Overloaded: _unavailable,
            QueryTimeout: _unavailable,
            StoreClosed: _unavailable,
            404: _not_found,
            405: _method_not_allowed,
            Exception: _internal_error,
        },
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.query_gate = gate
    return app


def begin_shutdown(app: Starlette) -> None:
    """Start stopping: queries are refused, running ones stop (503); ingest goes on.

    The server calls this as soon as it is told to stop, before it waits for requests in
    flight, so a stop is not held up by long queries. The store closes at lifespan shutdown.
    """
    app.state.query_gate.close()
    app.state.store.interrupt_reads()
