"""Slow and idle clients over real sockets: they are answered 408 or 503 and disconnected, and a
normal client is served meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.collector.conftest import ServedApp
from tests.support.collector import http, make_span

from tomograph.collector.ingest import ServerBusy, UploadGate
from tomograph.collector.server import BackgroundCollector
from tomograph.collector.settings import CollectorSettings

T1 = "4e441824ec2b6a44"


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.settimeout(20)  # the longest any test waits for an answer: not a measured duration
    return sock


def start_upload(port: int, declared: int = 10_000, sent: bytes = b"[") -> socket.socket:
    """A client that announces a body and sends only its first bytes."""
    sock = connect(port)
    head = (
        f"POST /api/v2/spans HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def answer_and_close(sock: socket.socket) -> tuple[int | None, bytes]:
    """The status of what the server sends (None if it just closes), once it has closed."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    if not received:
        return None, b""
    status = int(received.split(b" ", 2)[1])
    return status, received.partition(b"\r\n\r\n")[2]


def post_one_span(url: str, trace_id: str = T1) -> int:
    body = json.dumps([make_span(trace_id, "0000000000000001")]).encode()
    return http("POST", f"{url}/api/v2/spans", body, {"Content-Type": "application/json"})[0]


# -- bodies (the ASGI layer) --------------------------------------------------------------------


def test_slow_bodies_get_408_and_are_disconnected_while_others_are_served(
    tmp_path: Path,
) -> None:
    with ServedApp(tmp_path, request_timeout=1.0) as app:
        slow = [start_upload(app.port) for _ in range(5)]
        assert post_one_span(app.url) == 202  # served while five bodies trickle
        for sock in slow:
            status, body = answer_and_close(sock)  # returns only once the server closed
            assert status == 408
            assert "did not arrive in time" in json.loads(body)["error"]
        assert http("GET", f"{app.url}/api/v2/trace/{T1}")[0] == 200


def test_a_body_trickling_byte_by_byte_is_cut_at_the_deadline(tmp_path: Path) -> None:
    with ServedApp(tmp_path, request_timeout=1.0, min_body_rate=1000) as app:
        sock = start_upload(app.port, declared=100_000)
        status = None
        try:
            for _ in range(600):  # a byte every 50 ms: each resets no clock
                sock.sendall(b" ")
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _ = answer_and_close(sock)
        assert status in (408, None)  # answered 408, or closed before the answer was read


def test_slow_bodies_hold_no_upload_place_from_normal_clients(tmp_path: Path) -> None:
    # one place to decode: trickling clients must not hold it while their bodies crawl in
    with ServedApp(tmp_path, request_timeout=5.0, max_uploads=1) as app:
        slow = [start_upload(app.port) for _ in range(5)]
        assert post_one_span(app.url) == 202
        assert post_one_span(app.url, "5af7183fb1d4cf5f") == 202
        waiting, _, _ = select.select(slow, [], [], 0)
        assert waiting == []  # the slow ones are still unanswered: nobody waited on them
        for sock in slow:
            assert answer_and_close(sock)[0] == 408


def test_the_gate_bounds_bytes_held_and_bodies_decoded_at_once() -> None:
    async def scenario() -> tuple[list[str], int]:
        gate = UploadGate(max_buffered=1000, max_decoding=2, wait=0.2)
        events: list[str] = []
        decoding = 0
        most = 0
        release = asyncio.Event()

        async def upload(name: str, size: int) -> None:
            nonlocal decoding, most
            try:
                async with gate.admit() as take:
                    await take(size)
                    async with gate.decoding():
                        decoding += 1
                        most = max(most, decoding)
                        await release.wait()
                        decoding -= 1
                events.append(f"{name} done")
            except ServerBusy as error:
                events.append(f"{name} busy: {error}")

        first = [asyncio.create_task(upload(n, 400)) for n in ("a", "b")]
        while decoding < 2:
            await asyncio.sleep(0)
        await upload("c", 100)  # bytes fit, but no place to decode: busy after the wait
        await upload("d", 300)  # 800 bytes held: no room for 300 more
        release.set()
        await asyncio.gather(*first)
        await upload("e", 1000)  # all given back: the whole budget is free again
        return events, most

    events, most = asyncio.run(scenario())
    assert events[0] == "c busy: 2 uploads are being decoded: retry later"
    assert events[1] == "d busy: uploads in progress hold 800 bytes: retry later"
    assert events[2:] == ["a done", "b done", "e done"]
    assert most == 2


def test_a_cancelled_upload_gives_its_bytes_back() -> None:
    async def scenario() -> None:
        gate = UploadGate(max_buffered=1000, max_decoding=1, wait=0.5)
        holding = asyncio.Event()

        async def stuck() -> None:
            async with gate.admit() as take:
                await take(900)
                holding.set()
                await asyncio.Event().wait()  # until cancelled (a server shutting down)

        task = asyncio.create_task(stuck())
        await holding.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with gate.admit() as take:
            await take(1000)  # all of it is free again

    asyncio.run(scenario())


# -- connections (below ASGI) -------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[BackgroundCollector]:
    settings = CollectorSettings(
        port=0, db_path=tmp_path / "t.db", request_timeout=1.0, max_connections=6
    )
    collector = BackgroundCollector(settings).start()
    try:
        yield collector
    finally:
        collector.stop()


def port_of(collector: BackgroundCollector) -> int:
    return int(collector.url.rsplit(":", 1)[1])


def test_silent_and_slow_header_connections_get_408_and_are_closed(
    guarded: BackgroundCollector,
) -> None:
    port = port_of(guarded)
    silent = connect(port)
    trickle = connect(port)
    trickle.sendall(b"GET /api/v2/services HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
    assert post_one_span(guarded.url) == 202  # served meanwhile
    for sock in (silent, trickle):
        status, body = answer_and_close(sock)
        assert status == 408
        assert "headers did not arrive" in json.loads(body)["error"]


def test_slow_headers_after_a_first_answer_are_timed_out_too(
    guarded: BackgroundCollector,
) -> None:
    sock = connect(port_of(guarded))
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    first = b""
    while b'"UP"' not in first:
        first += sock.recv(65536)
    sock.sendall(b"GET /health HTTP/1.1\r\n")  # the next request starts and stalls
    status, _ = answer_and_close(sock)
    assert status in (408, None)  # 408, or uvicorn's keep-alive timeout closed it first


def test_connections_past_the_limit_get_503_and_are_closed(
    guarded: BackgroundCollector,
) -> None:
    port = port_of(guarded)
    idle = [connect(port) for _ in range(6)]
    for sock in idle:  # make sure the server has accepted them all
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.recv(65536)
    extra = connect(port)
    status, body = answer_and_close(extra)
    assert status in (503, None)  # 503, or a reset if the request crossed the close
    if status is not None:
        assert "connections" in json.loads(body)["error"]
    for sock in idle:
        sock.close()
    deadline_tries = 200
    while post_one_span(guarded.url) != 202:  # served again once connections are freed
        deadline_tries -= 1
        assert deadline_tries, "the collector never served again"
