"""A real Zipkin-compatible HTTP endpoint for tests: validates every body, records the spans.

Each ``POST /api/v2/spans`` body (JSON or proto3, optionally gzipped) is checked against
Zipkin's OpenAPI definition of ``ListOfSpans`` (proto bodies after decoding). Faults are played
from ``server.faults`` (a deque), one per request: ``("status", 500)``,
``("status", 429, "2")`` (with ``Retry-After``), ``("sleep", 10.0)`` (answer late) and
``("reset",)`` (read part of the body, then reset the connection).
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import struct
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import yaml

from support.servers import SHARED
from tomograph.reporting import zipkin_json, zipkin_proto

_schema: dict[str, Any] | None = None


def list_of_spans_schema() -> dict[str, Any]:
    """Zipkin's OpenAPI ``ListOfSpans`` as a JSON schema (definitions resolved in place)."""
    global _schema
    if _schema is None:
        spec = yaml.safe_load((SHARED / "specs" / "zipkin" / "zipkin2-api.yaml").read_text())
        _schema = {"$ref": "#/definitions/ListOfSpans", "definitions": spec["definitions"]}
    return _schema


def validate_list_of_spans(document: object) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` is a valid ListOfSpans."""
    jsonschema.validate(
        document,
        list_of_spans_schema(),
        cls=jsonschema.Draft4Validator,
        format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER,
    )


class RecordingZipkinServer:
    """``with RecordingZipkinServer() as server:`` serves on ``server.url`` until the block ends."""

    def __init__(self, port: int = 0) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.faults: deque[tuple[Any, ...]] = deque()
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fault = server.next_fault()
                length = int(self.headers.get("Content-Length", "0"))
                if fault and fault[0] == "reset":
                    self.rfile.read(min(length, 10))
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.wfile = io.BytesIO()
                    self.close_connection = True
                    return
                body = self.rfile.read(length)
                if fault and fault[0] == "sleep":
                    time.sleep(fault[1])
                if fault and fault[0] == "status":
                    self.send_response(fault[1])
                    if len(fault) > 2:
                        self.send_header("Retry-After", fault[2])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = server.accept(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a deliberately slow answer must not hold up the test
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def next_fault(self) -> tuple[Any, ...] | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def accept(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Validate and record one body; the HTTP status to answer."""
        try:
            if path != "/api/v2/spans":
                raise ValueError(f"unexpected path {path}")
            if headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            content_type = headers.get("Content-Type", "")
            if content_type == "application/x-protobuf":
                spans = zipkin_proto.decode_spans(body)
                document: Any = spans
            elif content_type == "application/json":
                document = json.loads(body)
                spans = zipkin_json.decode_spans(body)
            else:
                raise ValueError(f"unexpected content type {content_type!r}")
            validate_list_of_spans(document)
        except Exception as error:
            with self.lock:
                self.invalid.append(f"{type(error).__name__}: {error}")
            return 400
        with self.received:
            self.requests.append({"headers": headers, "size": len(body)})
            self.spans.extend(spans)
            self.received.notify_all()
        return 202

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` spans arrived; the spans so far."""
        deadline = time.monotonic() + timeout
        with self.received:
            while len(self.spans) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.received.wait(remaining)
            return list(self.spans)

    def __enter__(self) -> RecordingZipkinServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
