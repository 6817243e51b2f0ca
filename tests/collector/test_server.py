"""The collector served from a background thread, and how its URL is written."""

from __future__ import annotations

import gc
import json
import shlex
import socket
import sys
import time
from pathlib import Path

import pytest
from tests.support.collector import http
from tests.support.servers import BackgroundProcess, free_port, wait_for_port

from tomograph.collector.server import BackgroundCollector, _url_host
from tomograph.collector.settings import CollectorSettings


def test_a_background_collector_answers_on_its_url_until_stopped(tmp_path: Path) -> None:
    collector = BackgroundCollector(CollectorSettings(port=0, db_path=tmp_path / "t.db"))
    collector.start()
    try:
        assert collector.url.startswith("http://127.0.0.1:")
        assert not collector.url.endswith(":0")
        status, body = http("GET", f"{collector.url}/health")
        assert (status, json.loads(body)) == (200, {"status": "UP"})
    finally:
        collector.stop()
    assert not collector._thread.is_alive()


@pytest.mark.parametrize(
    ("host", "written"),
    [("127.0.0.1", "127.0.0.1"), ("localhost", "localhost"), ("::1", "[::1]")],
)
def test_an_ipv6_address_is_bracketed_in_urls(host: str, written: str) -> None:
    assert _url_host(host) == written


def _serve_log(tmp_path: Path, host: str, *args: str) -> str:
    port = free_port()
    argv = [sys.executable, "-m", "tomograph", "serve", "--host", host, "--port", str(port)]
    argv += ["--db", str(tmp_path / "t.db"), *args]
    with BackgroundProcess(argv, tmp_path / "serve.log") as process:
        wait_for_port(port, host)
        return process.output()


def test_serving_beyond_loopback_without_a_token_warns(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) stands for a LAN address: it is given to the loopback device of a
    # private network namespace, so the collector really listens there and nothing is exposed
    serve = [sys.executable, "-m", "tomograph", "serve", "--host", "192.0.2.1", "--port", "0"]
    serve += ["--db", str(tmp_path / "t.db")]
    script = "ip link set lo up && ip addr add 192.0.2.1/32 dev lo && exec " + shlex.join(serve)
    argv = ["unshare", "--net", "sh", "-c", script]
    with BackgroundProcess(argv, tmp_path / "serve.log") as process:
        deadline = time.monotonic() + 30
        while "without a token" not in process.output():
            assert process.process is not None and process.process.poll() is None, process.output()
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
        assert "collector on http://192.0.2.1:" in process.output()


def test_serving_with_a_token_or_on_loopback_does_not_warn(tmp_path: Path) -> None:
    assert "without a token" not in _serve_log(tmp_path, "127.0.0.2", "--token", "s3cret")
    assert "without a token" not in _serve_log(tmp_path, "127.0.0.1")
    assert "without a token" not in _serve_log(tmp_path, "127.0.0.2")  # any loopback address


def test_answers_on_a_kept_alive_connection_are_sent_without_nagles_delay(
    tmp_path: Path,
) -> None:
    # uvicorn writes an answer's head and body apart; with Nagle's algorithm on, the body
    # waited for the client's delayed acknowledgement: 40 ms added to every kept-alive query.
    collector = BackgroundCollector(CollectorSettings(port=0, db_path=tmp_path / "t.db"))
    collector.start()
    client = socket.create_connection(("127.0.0.1", int(collector.url.rsplit(":", 1)[1])))
    try:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            answer += client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200")
        served = [
            sock
            for sock in gc.get_objects()
            if isinstance(sock, socket.socket)
            and sock.fileno() != -1
            and sock is not client
            and sock.type == socket.SOCK_STREAM
            and _peer(sock) == client.getsockname()
        ]
        assert len(served) == 1  # the collector's end of this connection
        assert served[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.close()
        collector.stop()


def _peer(sock: socket.socket) -> object:
    try:
        return sock.getpeername()
    except OSError:
        return None
