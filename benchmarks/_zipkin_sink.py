"""A Zipkin endpoint in its own process for the reporting benchmark: counts spans, keeps nothing.

``python _zipkin_sink.py PORT``: ``POST /api/v2/spans`` (JSON or proto3) answers 202 and adds
the number of spans to a counter; ``GET /count`` returns it; ``POST /reset`` zeroes it.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tomograph.encoding import zipkin_proto

count = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(200, str(count).encode())

    def do_POST(self) -> None:
        global count
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/reset":
            count = 0
        elif self.headers.get("Content-Type") == "application/x-protobuf":
            count += len(zipkin_proto.decode_spans(body))
        else:
            count += len(json.loads(body))
        self._answer(202)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
