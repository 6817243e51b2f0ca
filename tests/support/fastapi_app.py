"""A FastAPI application for subprocess tests, served by uvicorn.

It configures tomograph from the ``TOMOGRAPH_*`` environment and calls
``tomograph.integrations.starlette.patch()`` at import, before the application exists::

    uvicorn 'tests.support.fastapi_app:app'
"""

from __future__ import annotations

import threading

from fastapi import BackgroundTasks, FastAPI, WebSocket, WebSocketDisconnect

import tomograph
from tomograph.integrations import starlette as traced_starlette

tomograph.configure()
traced_starlette.patch()

app = FastAPI()
task_done = threading.Event()


def notify(order_id: int) -> None:
    with tomograph.span("notify warehouse"):
        pass


@app.post("/orders/{order_id}")
async def create_order(order_id: int, background_tasks: BackgroundTasks) -> dict[str, int]:
    background_tasks.add_task(notify, order_id)
    return {"id": order_id}


@app.websocket("/ws/{room}")
async def chat(websocket: WebSocket, room: str) -> None:
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            if text == "crash":
                raise RuntimeError("handler bug")
            await websocket.send_text(f"echo {len(text)}")
    except WebSocketDisconnect:
        pass
