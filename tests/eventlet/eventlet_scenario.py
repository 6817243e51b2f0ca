"""Run by test_eventlet_patcher.py in a subprocess (eventlet monkey-patches the process).

Usage: python eventlet_scenario.py ZIPKIN_PORT SAMPLING_RATE [BACKEND_URL]

Serves a front-end and a back-end ``eventlet.wsgi`` application, sends the front end a few
requests over a raw socket, and prints what it saw as JSON on the last line of stdout.
"""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from eventlet.green import httplib  # noqa: E402
from eventlet.green.urllib import request as green_request  # noqa: E402

import tomograph  # noqa: E402
from tomograph.eventlet import api, patcher  # noqa: E402

ZIPKIN_PORT = int(sys.argv[1])
SAMPLING_RATE = float(sys.argv[2])
BACKENDS = sys.argv[3:] or None

patcher.enable_trace_patch(
    host="127.0.0.1",
    port=ZIPKIN_PORT,
    trace_app_log=True,
    sampling_rate=SAMPLING_RATE,
    service_name="frontend",
    backends=BACKENDS,
)

from eventlet import wsgi  # noqa: E402

log = logging.getLogger("app")
log.setLevel(logging.INFO)
seen_by_backend: list[dict[str, Any]] = []


def backend_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    headers = {
        key[5:].lower().replace("_", "-"): value
        for key, value in environ.items()
        if key.startswith("HTTP_X_B3") or key == "HTTP_TRACEPARENT"
    }
    seen_by_backend.append({"path": environ["PATH_INFO"], "headers": headers})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(headers).encode()]


def frontend_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    api.put_annotation("Cache miss for %s" % environ["PATH_INFO"])  # noqa: UP031 (as in the original docs)
    api.put_key_value("key", "value")
    log.warning("app log line")
    green_request.urlopen(f"http://127.0.0.1:{BACKEND_PORT}/via-urllib").read()
    connection = httplib.HTTPConnection("127.0.0.1", BACKEND_PORT)
    connection.request("GET", "/via-httplib")
    connection.getresponse().read()
    connection.close()

    def work(label: str) -> None:
        with tomograph.span(label):
            api.put_annotation(f"in {label}")

    eventlet.spawn(work, "spawned").wait()
    done = eventlet.Event()
    eventlet.spawn_n(lambda: (work("spawned_n"), done.send()))
    done.wait()
    pool = eventlet.GreenPool()
    pool.spawn(work, "pool.spawn")
    pool.spawn_n(work, "pool.spawn_n")
    pool.waitall()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


backend_sock = eventlet.listen(("127.0.0.1", 0))
frontend_sock = eventlet.listen(("127.0.0.1", 0))
BACKEND_PORT = backend_sock.getsockname()[1]
FRONTEND_PORT = frontend_sock.getsockname()[1]
null_log = open("/dev/null", "w")  # noqa: SIM115
eventlet.spawn_n(wsgi.server, backend_sock, backend_app, log=null_log)
eventlet.spawn_n(wsgi.server, frontend_sock, frontend_app, log=null_log)


def raw_get(path: str, headers: dict[str, str]) -> int:
    """GET over a plain green socket: the test's own request must not be traced."""
    sock = eventlet.connect(("127.0.0.1", FRONTEND_PORT))
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return int(data.split(b" ", 2)[1])


result: dict[str, Any] = {}
result["traced_status"] = raw_get(
    "/users?id=7",
    {
        "X-B3-TraceId": "463ac35c9f6413ad48485a3953bb6124",
        "X-B3-SpanId": "a2fb4a1d1a96d312",
        "X-B3-Sampled": "1",
    },
)
result["new_trace_status"] = raw_get("/new", {})
result["backend_while_enabled"] = list(seen_by_backend)
patcher.disable_trace_patch()
seen_by_backend.clear()
result["spawn_restored"] = eventlet.spawn.__name__ == "spawn"
result["after_disable_status"] = raw_get("/after", {"X-B3-Sampled": "1"})
result["backend_after_disable"] = list(seen_by_backend)
print(json.dumps(result))
