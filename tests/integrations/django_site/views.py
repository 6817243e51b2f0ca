"""Views of the test project; the SQL ones create their table as they go (no migrations)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views import View

import tomograph


class ViewFailed(Exception):
    """What the failing views raise."""


class Abandoned(BaseException):
    """A BaseException that is not an Exception: Django's handler does not catch it."""


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"home")


def user(request: HttpRequest, user_id: int) -> HttpResponse:
    with tomograph.span("load-user"):
        pass
    return HttpResponse(f"user {user_id}")


class OrderItems(View):
    def get(self, request: HttpRequest, order: str) -> HttpResponse:
        return HttpResponse(f"items of {order}")


def legacy(request: HttpRequest, code: str) -> HttpResponse:
    return HttpResponse(code)


def boom(request: HttpRequest) -> HttpResponse:
    raise ViewFailed("the view failed")


async def boom_async(request: HttpRequest) -> HttpResponse:
    raise ViewFailed("the async view failed")


def base_exception(request: HttpRequest, kind: str) -> HttpResponse:
    if kind == "keyboard":
        raise KeyboardInterrupt
    raise Abandoned("abandoned")


def status(request: HttpRequest, code: int) -> HttpResponse:
    return HttpResponse(b"", status=code)


def _chunks() -> Iterator[bytes]:
    for number in range(3):
        with tomograph.span(f"chunk-{number}"):
            yield f"chunk {number}\n".encode()


def stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_chunks())


async def _async_chunks() -> AsyncIterator[bytes]:
    for number in range(3):
        await asyncio.sleep(0)
        with tomograph.span(f"chunk-{number}"):
            yield f"chunk {number}\n".encode()


async def stream_async(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_async_chunks())


def _failing_chunks() -> Iterator[bytes]:
    yield b"first"
    raise ViewFailed("the stream failed")


def stream_fails(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(_failing_chunks())


async def async_user(request: HttpRequest, user_id: int) -> HttpResponse:
    await asyncio.sleep(0)
    with tomograph.span("load-user"):
        pass
    return HttpResponse(f"user {user_id}")


def _ensure_table(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS items (name TEXT)")


def sql(request: HttpRequest, alias: str) -> HttpResponse:
    _ensure_table(alias)
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM items WHERE name = %s", ["secret-name"])
        cursor.execute("INSERT INTO items (name) VALUES (%s)", ["secret-name"])
        cursor.execute("SELECT name FROM items WHERE name = %s", ["secret-name"])
        rows = cursor.fetchall()
    return JsonResponse({"rows": len(rows)})


def sql_many(request: HttpRequest, alias: str) -> HttpResponse:
    _ensure_table(alias)
    with connections[alias].cursor() as cursor:
        cursor.executemany(
            "INSERT INTO items (name) VALUES (%s)", [["secret-a"], ["secret-b"], ["secret-c"]]
        )
    return HttpResponse(b"inserted")


def sql_error(request: HttpRequest, alias: str) -> HttpResponse:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT secret_column FROM no_such_table WHERE id = %s", [42])
    return HttpResponse(b"unreachable")


async def async_sql(request: HttpRequest) -> HttpResponse:
    return await sync_to_async(sql)(request, "default")


def echo_trace(request: HttpRequest) -> HttpResponse:
    span = request.tomograph_span  # type: ignore[attr-defined]
    return HttpResponse(f"{span.trace_id:032x}")


def sql_detail(request: HttpRequest, alias: str) -> HttpResponse:
    """Fails with the row's values in the message (PostgreSQL's DETAIL line)."""
    with connections[alias].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS strict_items (id INTEGER NOT NULL, name TEXT)")
        cursor.execute("INSERT INTO strict_items (id, name) VALUES (%s, %s)", [None, "secret-row"])
    return HttpResponse(b"unreachable")


#: Set by the slow view once it runs: a test's client disconnects then.
slow_view_started: list[asyncio.Event] = []


async def slow_async(request: HttpRequest) -> HttpResponse:
    for started in slow_view_started:
        started.set()
    # Django 5 cancels the view when the client disconnects; Django 4.2 lets it finish.
    await asyncio.sleep(float(request.GET.get("seconds", "60")))
    return HttpResponse(b"done")
