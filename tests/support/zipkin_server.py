"""A real Zipkin-compatible HTTP endpoint for tests: validates every body, records the spans.

JSON spans are recorded as sent (names in their case, annotations in their order); proto3 spans
as decoded, i.e. normalized as Zipkin stores them.

Each ``POST /api/v2/spans`` body (JSON or proto3, optionally gzipped) is checked against
Zipkin's OpenAPI definition of ``ListOfSpans`` (proto bodies after decoding). Faults are played
from ``server.faults`` (a deque), one per request: ``("status", 500)``,
``("status", 429, "2")`` (with ``Retry-After``), ``("status", 400, None, b"why")`` (with a
body), ``("sleep", 10.0)`` (answer late), ``("until-next", 10.0)`` (answer once a later
request has been recorded, or after 10 s: late until the client has done something else),
``("reset",)`` (read part of the body, then reset the connection), ``("close-after",)``
(answer, then close the kept-alive connection as an idle timeout would) and ``("truncate",)``
(accept the spans, then close the connection in the middle of the answer's chunked body).

Standing rules, like a strict collector's: ``server.limit_bytes`` answers 413 to larger
bodies (a proxy's body size limit); a batch holding a span named in ``server.refuse_names``
is answered 400 as a whole, naming the span (``server.refused`` counts the spans in
batches so refused, ``server.too_large`` the bodies refused for their size).
"""

from __future__ import annotations

import gzip
import io
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from support.servers import SHARED
from tomograph.encoding import zipkin_json, zipkin_proto

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


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
        # else: a client that gave up waiting (tests make it do so) is not a server failure


class RecordingZipkinServer:
    """``with RecordingZipkinServer() as server:`` serves on ``server.url`` until the block ends."""

    def __init__(self, port: int = 0, tls: tuple[Path, Path] | None = None) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        self.faults: deque[tuple[Any, ...]] = deque()
        self.limit_bytes: int | None = None
        self.refuse_names: set[str] = set()
        self.refused = 0
        self.too_large = 0
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # An answer's head and body are two writes: with Nagle's algorithm the body waits
            # for the client's delayed ACK, 40 ms an answer (real servers write them at once).
            disable_nagle_algorithm = True

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
                if fault and fault[0] == "until-next":
                    server.wait_for_a_later_request(fault[1])
                if fault and fault[0] == "status":
                    answer = fault[3] if len(fault) > 3 else b""
                    self.send_response(fault[1])
                    if len(fault) > 2 and fault[2] is not None:
                        self.send_header("Retry-After", fault[2])
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                if server.limit_bytes is not None and len(body) > server.limit_bytes:
                    with server.lock:
                        server.too_large += 1
                    self.send_response(413)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, answer = server.accept(
                    self.path, dict(self.headers), body, self.client_address[1]
                )
                self.send_response(status)
                if fault and fault[0] == "truncate":
                    # A chunked body that stops after its first chunk: the connection closes.
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.write(b"5\r\naccep\r\n")
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if fault and fault[0] == "close-after":
                    # Answer as keep-alive, then drop the idle connection anyway.
                    self.close_connection = True

        self.httpd = _QuietServer(("127.0.0.1", port), Handler)
        if tls is not None:  # (certificate, key): serve HTTPS
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False  # a deliberately slow answer must not hold up the test
        self.port = self.httpd.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def next_fault(self) -> tuple[Any, ...] | None:
        with self.lock:
            return self.faults.popleft() if self.faults else None

    def accept(
        self, path: str, headers: dict[str, str], body: bytes, client_port: int = 0
    ) -> tuple[int, bytes]:
        """Validate and record one body; the HTTP status and body to answer."""
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
                zipkin_json.decode_spans(body)  # validates; the spans are recorded as sent
                document = spans = json.loads(body)
            else:
                raise ValueError(f"unexpected content type {content_type!r}")
            validate_list_of_spans(document)
        except Exception as error:
            with self.lock:
                self.invalid.append(f"{type(error).__name__}: {error}")
            return 400, b""
        for index, span in enumerate(spans):
            if span.get("name") in self.refuse_names:
                with self.lock:
                    self.refused += len(spans)
                return 400, f"span {index}: name {span['name']!r} is refused".encode()
        with self.received:
            self.requests.append({"headers": headers, "size": len(body), "port": client_port})
            self.spans.extend(spans)
            self.received.notify_all()
        return 202, b""

    def wait_for_a_later_request(self, timeout: float) -> None:
        """Wait until one more request has been recorded, or ``timeout`` seconds."""
        with self.received:
            recorded = len(self.requests)
            self.received.wait_for(lambda: len(self.requests) > recorded, timeout)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` spans arrived; the spans so far."""
        return self.wait_until(lambda spans: len(spans) >= count, timeout)

    def wait_until(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        """Wait until ``condition(spans)`` holds for the spans received, or the deadline; the
        spans so far."""
        deadline = time.monotonic() + timeout
        with self.received:
            while not condition(self.spans):
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
