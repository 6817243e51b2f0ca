"""aiohttp under gunicorn's aiohttp worker, patched the way zero-code tracing does it.

The application module calls ``patch()`` and ``configure()`` at import time, builds its
``Application`` without any tracing code, and gunicorn forks two workers from it (with and
without ``--preload``). Every request the workers serve must reach a real Zipkin endpoint as a
server span named after its route, with its outgoing call to a second route as a client span
in the same trace: nothing lost in the forked workers.
"""

from __future__ import annotations

import os
import signal
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from support.servers import REPO_ROOT, free_port, process_group, require, wait_for_port
from support.zipkin_server import RecordingZipkinServer

pytest.importorskip("aiohttp")
pytestmark = pytest.mark.integration

REQUESTS = 20

APP = """
import os

import tomograph
from tomograph.integrations import aiohttp as traced_aiohttp

traced_aiohttp.patch()  # before the application exists, as `tomograph run` does
tomograph.configure(service="shop", backends=[os.environ["ZIPKIN_URL"]], environ={})

from aiohttp import ClientSession, web


async def price(request):
    return web.Response(text="7")


async def order(request):
    port = request.transport.get_extra_info("sockname")[1]
    async with ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/prices/{request.match_info['id']}") as r:
            await r.read()
    return web.Response(text=str(os.getpid()))


app = web.Application()
app.router.add_get("/orders/{id}", order)
app.router.add_get("/prices/{item}", price)
"""


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_requests_served_by_forked_workers_arrive_as_one_trace_each(
    tmp_path: Path, preload: bool
) -> None:
    gunicorn = require(str(Path(sys.executable).parent / "gunicorn"), "gunicorn test extra")
    (tmp_path / "shop.py").write_text(APP)
    port = free_port()
    argv = [gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "-k", "aiohttp.GunicornWebWorker"]
    argv += ["--preload", "shop:app"] if preload else ["shop:app"]
    with RecordingZipkinServer() as zipkin:
        env = {
            **os.environ,
            "ZIPKIN_URL": f"zipkin+{zipkin.url}?interval=0.1",
            "PYTHONPATH": f"{REPO_ROOT / 'src'}{os.pathsep}{tmp_path}",
        }
        with process_group(argv, tmp_path / "server.log", tmp_path, env) as process:
            wait_for_port(port)
            for index in range(REQUESTS):
                url = f"http://127.0.0.1:{port}/orders/{index}"
                with urllib.request.urlopen(url, timeout=10) as response:
                    assert response.status == 200
            spans = zipkin.wait_until(
                lambda spans: (
                    Counter(s["name"] for s in spans)["GET /orders/{id}"] >= REQUESTS
                    and Counter(s["name"] for s in spans)["GET /prices/{item}"] >= REQUESTS
                ),
                20.0,
            )
            process.send_signal(signal.SIGTERM)
            process.wait(20)
    names = Counter(s["name"] for s in spans)
    assert names["GET /orders/{id}"] == names["GET /prices/{item}"] == REQUESTS, (
        names,
        (tmp_path / "server.log").read_text()[-3000:],
    )
    assert names["GET"] == REQUESTS  # the client span of each outgoing call
    by_id = {s["id"]: s for s in spans}
    for price in (s for s in spans if s["name"] == "GET /prices/{item}"):
        call = by_id[price["parentId"]]
        order = by_id[call["parentId"]]
        assert call["kind"] == "CLIENT" and order["name"] == "GET /orders/{id}"
        assert price["traceId"] == call["traceId"] == order["traceId"]
