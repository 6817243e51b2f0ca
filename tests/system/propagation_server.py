"""A traced ``http.server`` process for test_propagation_http.py.

``python propagation_server.py PORT [join]`` serves ``GET /traced`` on 127.0.0.1:PORT: the
handler continues the caller's trace with ``tomograph.start_http`` (formats from
``TOMOGRAPH_PROPAGATION``), runs a child span, and answers with the spans it reported, the
baggage it saw and the headers it received, as JSON. With ``?forward=PORT2`` it is a hop: inside
its span it calls ``GET /traced`` on PORT2 with ``tomograph.add_trace_info_header`` and adds the
downstream answer (``"downstream"``) and the headers it sent (``"sent"``).
"""

from __future__ import annotations

import http.server
import json
import sys
import urllib.parse
import urllib.request
from typing import Any

import tomograph
from tomograph.propagation import baggage
from tomograph.reporting.memory import MemoryBackend


def span_fields(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_id": span.parent_id,
        "kind": span.kind.value if span.kind else None,
        "debug": span.debug,
        "shared": span.shared,
    }


def main() -> None:
    port = int(sys.argv[1])
    memory = MemoryBackend()
    tomograph.configure(service="server", backends=[memory], join_shared_spans="join" in sys.argv)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            tomograph.start_http("server", "GET /traced", self)
            answer: dict[str, Any] = {
                "baggage": baggage.get_baggage(),
                "received": {name.lower(): value for name, value in self.headers.items()},
            }
            with tomograph.span("load rows"):
                pass
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if "forward" in query:
                request = urllib.request.Request(f"http://127.0.0.1:{query['forward'][0]}/traced")
                tomograph.add_trace_info_header(request)
                answer["sent"] = {name.lower(): value for name, value in request.header_items()}
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer["downstream"] = json.loads(response.read())
            tomograph.stop("GET /traced")
            answer["spans"] = [span_fields(s) for s in memory.spans]
            body = json.dumps(answer).encode()
            memory.clear()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
