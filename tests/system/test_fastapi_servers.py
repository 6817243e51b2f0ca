"""FastAPI under a real uvicorn process, traced by ``patch()``, reporting to a real Zipkin
endpoint: WebSocket connections and background tasks over real sockets."""

from __future__ import annotations

import asyncio
import http.client
import os
import sys
from pathlib import Path

import pytest

from support.servers import REPO_ROOT, BackgroundProcess, free_port, wait_for_port
from support.zipkin_server import RecordingZipkinServer

pytestmark = pytest.mark.integration

websockets = pytest.importorskip("websockets", reason="WebSocket client and server (test extra)")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

SECRET = "card 4111-1111-1111-1111"


async def _talk(port: int) -> bool:
    headers = {"traceparent": f"00-{'c' * 32}-{'d' * 16}-01"}
    async with connect(f"ws://127.0.0.1:{port}/ws/lobby", additional_headers=headers) as socket:
        for _ in range(3):
            await socket.send(SECRET)
            assert await socket.recv() == f"echo {len(SECRET)}"
    async with connect(f"ws://127.0.0.1:{port}/ws/crashing") as socket:
        await socket.send("crash")
        try:
            await socket.recv()
        except ConnectionClosed:
            return True  # the server closed the connection after the handler's exception
    return False


def test_uvicorn_websockets_and_background_tasks_are_reported(tmp_path: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    argv.append("tests.support.fastapi_app:app")
    with RecordingZipkinServer() as zipkin:
        env = {
            **os.environ,
            "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{REPO_ROOT / 'src'}",
            "TOMOGRAPH_SERVICE": "orders",
            "TOMOGRAPH_BACKENDS": f"zipkin+{zipkin.url}",
        }
        with BackgroundProcess(argv, tmp_path / "uvicorn.log", cwd=REPO_ROOT, env=env) as process:
            wait_for_port(port)
            closed = asyncio.run(_talk(port))
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            connection.request("POST", "/orders/7")
            assert connection.getresponse().status == 200
            connection.close()
            spans = zipkin.wait_until(
                lambda spans: (
                    {"notify warehouse", "WEBSOCKET /ws/{room}"} <= {span["name"] for span in spans}
                    and sum(span.get("kind") == "SERVER" for span in spans) >= 3
                ),
                20,
            )
            output = process.output()
    assert zipkin.invalid == []
    assert closed, output
    sockets = {s["tags"]["http.path"]: s for s in spans if s["name"] == "WEBSOCKET /ws/{room}"}
    assert sorted(sockets) == ["/ws/crashing", "/ws/lobby"], output
    talk, crash = sockets["/ws/lobby"], sockets["/ws/crashing"]
    assert talk["traceId"] == "c" * 32
    assert talk["parentId"] == "d" * 16
    assert talk["kind"] == "SERVER"
    assert talk["tags"]["http.status_code"] == "101"
    assert talk["tags"]["websocket.messages_received"] == "3"
    assert talk["tags"]["websocket.messages_sent"] == "3"
    assert "error" not in talk["tags"]
    assert crash["tags"]["exception.type"] == "RuntimeError"
    assert all(SECRET not in str(span) for span in spans)
    order = next(span for span in spans if span["name"] == "POST /orders/{order_id}")
    notify = next(span for span in spans if span["name"].startswith("background "))
    assert notify["parentId"] == order["id"]
    assert next(s for s in spans if s["name"] == "notify warehouse")["parentId"] == notify["id"]
