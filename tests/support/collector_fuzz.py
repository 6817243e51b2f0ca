"""A mutation fuzzer for the collector's routes, driving the real ASGI app in-process.

Seeds are valid bodies from real encoders (tomograph's Zipkin JSON, proto3 and OTLP encoders,
the OpenTelemetry SDK's OTLP encoder); each request sends one mutation of a seed: bit flips,
byte edits, truncation, splicing of two seeds, repeated regions, and, aware of the format,
type swaps, huge numbers, lone surrogates, unknown fields and nesting bombs in JSON, huge
varints, wrong wire types and lengths in protobuf, broken and multi-member gzip. Every answer
must be below 500; :class:`FuzzReport` keeps the count per status and the first failures.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import gzip
import json
import random
import traceback
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message

# -- seeds --------------------------------------------------------------------------------------


def _tomograph_spans() -> list[Any]:
    from tomograph.model import Endpoint
    from tomograph.reporting.memory import MemoryBackend
    from tomograph.tracer import Tracer

    memory = MemoryBackend()
    tracer = Tracer("Checkout", backends=[memory])
    with tracer.span("GET /cart", kind="server", tags={"http.method": "GET"}) as root:
        root.tag("http.status_code", 200)
        root.annotate("cache miss")
        with tracer.span("charge", kind="client", tags={"amount": 12.5, "retry": True}) as child:
            child.set_remote_endpoint(Endpoint("payments", ipv4="10.0.0.7", port=8443))
            child.tag("error", "declined")
            child.annotate("sent")
        with tracer.span("select", kind="client", tags={"db.statement": "SELECT 1 -- é ✓"}):
            pass
    with tracer.span("nightly job", tags={"env": "prod"}):
        pass
    return memory.spans


def _sdk_otlp_request() -> Any:
    """An ExportTraceServiceRequest made by the OpenTelemetry SDK's own OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    finished: list[Any] = []

    class Keep(SpanExporter):
        def export(self, spans: Any) -> Any:
            finished.extend(spans)
            from opentelemetry.sdk.trace.export import SpanExportResult

            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "Shop", "k8s.pod": "a"}))
    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer("fuzz", "1.0")
    with tracer.start_as_current_span("GET /items", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.route", "/items")
        span.set_attribute("ids", [1, 2, 3])
        span.set_attribute("flags", [True, False])
        span.add_event("exception", {"exception.type": "Timeout", "exception.message": "slow"})
        with tracer.start_as_current_span("query", kind=SpanKind.CLIENT) as child:
            child.set_attribute("peer.service", "Postgres")
            child.set_attribute("network.peer.address", "::1")
            child.set_attribute("server.port", 5432)
            child.set_status(Status(StatusCode.ERROR, "deadlock"))
    provider.shutdown()
    return encode_spans(finished)


def _otlp_json(request: Any) -> bytes:
    """An OTLP request as OTLP/JSON: protobuf's JSON mapping with hex ids."""
    from google.protobuf import json_format

    document = json_format.MessageToDict(request)

    def hex_ids(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hex_ids(value)
        elif isinstance(node, list):
            for item in node:
                hex_ids(item)

    hex_ids(document)
    return json.dumps(document).encode()


@dataclass
class Seeds:
    zipkin_json: list[bytes]
    zipkin_proto: list[bytes]
    otlp_proto: list[bytes]
    otlp_json: list[bytes]


def make_seeds() -> Seeds:
    """Valid bodies for every ingest route, from real encoders."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from tomograph.encoding import otlp, zipkin_json, zipkin_proto

    spans = _tomograph_spans()
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(otlp.encode_spans(spans))
    sdk = _sdk_otlp_request()
    zipkin = json.loads(zipkin_json.encode_spans(spans))
    return Seeds(
        zipkin_json=[zipkin_json.encode_spans(spans), zipkin_json.encode_spans(spans[:1])],
        zipkin_proto=[
            zipkin_proto.encode_spans(spans),
            zipkin_proto.encode_dicts(zipkin[1:2]),
        ],
        otlp_proto=[ours.SerializeToString(), sdk.SerializeToString()],
        otlp_json=[_otlp_json(ours), _otlp_json(sdk)],
    )


# -- mutations ----------------------------------------------------------------------------------

_INTERESTING_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x22, 0x5C, 0x7B, 0x5B, 0x2C, 0x3A, 0x0A]
_WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1 << 31,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
    1 << 64,
    10**30,
    -(10**30),
    1.5,
    1e308,
    -0.0,
    "",
    "0",
    "-1",
    "18446744073709551616",
    "9" * 400,
    "x" * 70_000,
    "\ud800",
    "a\udfffb",
    "\x00",
    "é✓\U0001f600",
    "SERVER",
    "ffffffffffffffff",
    "0" * 16,
    "zz" * 8,
    [],
    {},
    [None],
    {"": None},
    {"\ud800": 1},
]


_BOMB = "\x00nesting bomb\x00"  # stands for a nesting bomb until the text is written


def _bomb_text(rng: random.Random) -> str:
    depth = rng.choice([30, 200, 3000, 100_000])
    if rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _weird(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(_WEIRD_VALUES))  # never share a list another body changes


def _json_nodes(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    paths = [path]
    if len(path) > 12:
        return paths
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _json_nodes(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += _json_nodes(value, (*path, index))
    return paths


def _mutate_json(rng: random.Random, seed: bytes) -> bytes:
    document = json.loads(seed)
    for _ in range(rng.randint(1, 3)):
        paths = _json_nodes(document)
        path = rng.choice(paths)
        if not path:
            document = _weird(rng) if rng.random() < 0.9 else _BOMB
            continue
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = rng.randrange(6)
        if action == 0:
            parent[last] = _weird(rng)
        elif action == 1:
            parent[last] = _BOMB
        elif action == 2 and isinstance(parent, dict):
            del parent[last]
        elif action == 3 and isinstance(parent, dict):
            parent[rng.choice(["\ud800", "x" * 2000, "", "traceId", "id", "kind"])] = rng.choice(
                _WEIRD_VALUES
            )
        elif action == 4 and isinstance(parent, list):
            parent.extend(copy.deepcopy([parent[last]] * rng.choice([1, 5, 100])))
        else:
            value = parent[last]
            if isinstance(value, str):
                parent[last] = value + rng.choice(["\ud800", "\x00", "é" * 100, "0"])
            elif isinstance(value, int) and not isinstance(value, bool):
                parent[last] = value * rng.choice([-1, 10**6, 2**40]) + rng.randint(-2, 2)
            else:
                parent[last] = _weird(rng)
    text = json.dumps(document, ensure_ascii=rng.random() < 0.7)
    text = text.replace(json.dumps(_BOMB), _bomb_text(rng))
    return text.encode("utf-8", "surrogatepass")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _mutate_protobuf(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    action = rng.randrange(6)
    position = rng.randrange(len(data) + 1)
    if action == 0:  # a huge or overlong varint
        huge = rng.choice([(1 << 64) - 1, 1 << 63, 1 << 70, 0])
        data[position:position] = _varint(huge) if huge < 1 << 64 else b"\xff" * 11
    elif action == 1:  # an unknown field of every wire type
        field_number = rng.choice([14, 15, 99, 536870911])
        wire = rng.choice([0, 1, 2, 3, 4, 5, 6, 7])
        data[position:position] = _varint(field_number << 3 | wire) + rng.randbytes(
            rng.randint(0, 12)
        )
    elif action == 2:  # a length prefix claiming far more than is there
        data[position:position] = b"\x0a" + _varint(rng.choice([1 << 20, 1 << 31, 1 << 62]))
    elif action == 3:  # a nesting bomb: messages inside messages
        depth = rng.choice([50, 200, 2000])
        bomb = b""
        for _ in range(depth):
            bomb = b"\x0a" + _varint(len(bomb)) + bomb
        data[position:position] = bomb
    elif action == 4:  # invalid UTF-8 where text is expected
        data[position:position] = b"\x2a\x04\xed\xa0\x80\xff"
    elif data:  # a field's wire type flipped
        index = rng.randrange(len(data))
        data[index] ^= rng.choice([1, 2, 4, 7])
    return bytes(data)


def _mutate_bytes(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    action = rng.randrange(6)
    if action == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif action == 1:  # truncation
        del out[rng.randrange(len(out) + 1) :]
    elif action == 2:  # splicing with another seed (or with itself)
        other = rng.choice(seeds or [data])
        out = out[: rng.randrange(len(out) + 1)] + other[rng.randrange(len(other) + 1) :]
    elif action == 3:  # a region repeated
        if out:
            start = rng.randrange(len(out))
            end = min(len(out), start + rng.randint(1, 64))
            out[end:end] = out[start:end] * rng.choice([2, 10, 500])
    elif action == 4:  # interesting bytes in
        for _ in range(rng.randint(1, 4)):
            out.insert(rng.randrange(len(out) + 1), rng.choice(_INTERESTING_BYTES))
    elif out:  # a region deleted
        start = rng.randrange(len(out))
        del out[start : start + rng.randint(1, 32)]
    return bytes(out)


def _mutate_gzip(rng: random.Random, body: bytes) -> bytes:
    action = rng.randrange(6)
    if action == 0:
        return gzip.compress(body, 1)
    if action == 1:  # broken compressed bytes
        return _mutate_bytes(rng, gzip.compress(body, 1), [])
    if action == 2:  # several members
        cut = rng.randrange(len(body) + 1)
        return gzip.compress(body[:cut]) + gzip.compress(body[cut:])
    if action == 3:  # truncated
        packed = gzip.compress(body, 1)
        return packed[: rng.randrange(len(packed))]
    if action == 4:  # a bomb: a member that inflates past any body limit
        return gzip.compress(body, 1) + _bomb_member() if rng.random() < 0.3 else body
    return gzip.compress(body, 1) + rng.choice([b"\x00" * 8, b"garbage", b"\x1f\x8b"])


@functools.cache
def _bomb_member() -> bytes:
    return gzip.compress(b" " * (11 << 20), 9)  # 11 KB that inflate to 11 MB


# -- routes -------------------------------------------------------------------------------------


@dataclass
class Route:
    """One ingest route and how its bodies are made."""

    name: str
    path: str
    content_type: str
    seeds: list[bytes]
    structured: Callable[[random.Random, bytes], bytes]
    gzip: bool = False


def ingest_routes(seeds: Seeds) -> list[Route]:
    """Every ingest route, plain and gzipped."""
    plain = [
        Route("zipkin-json", "/api/v2/spans", "application/json", seeds.zipkin_json, _mutate_json),
        Route(
            "zipkin-proto3",
            "/api/v2/spans",
            "application/x-protobuf",
            seeds.zipkin_proto,
            _mutate_protobuf,
        ),
        Route(
            "otlp-protobuf",
            "/v1/traces",
            "application/x-protobuf",
            seeds.otlp_proto,
            _mutate_protobuf,
        ),
        Route("otlp-json", "/v1/traces", "application/json", seeds.otlp_json, _mutate_json),
    ]
    zipped = [
        Route(f"{r.name}+gzip", r.path, r.content_type, r.seeds, r.structured, gzip=True)
        for r in plain
    ]
    return plain + zipped


def mutated_body(rng: random.Random, route: Route) -> tuple[bytes, dict[str, str]]:
    """One mutation of one of the route's seeds, with the headers to send it with."""
    seed = rng.choice(route.seeds)
    roll = rng.random()
    if roll < 0.45:
        body = route.structured(rng, seed)
    elif roll < 0.9:
        body = _mutate_bytes(rng, seed, route.seeds)
    else:
        body = _mutate_bytes(rng, route.structured(rng, seed), route.seeds)
    headers = {"content-type": route.content_type}
    if route.gzip:
        body = _mutate_gzip(rng, body)
        headers["content-encoding"] = rng.choice(["gzip", "gzip", "x-gzip", "GZIP "])
    if rng.random() < 0.03:  # the headers themselves
        headers[rng.choice(["content-type", "content-encoding", "content-length"])] = rng.choice(
            ["", "application/json; charset=latin-1", "deflate", "-1", "99999999999", "1_0", "ù"]
        )
    return body, headers


_QUERY_PARAMS = {
    "/api/v2/services": [],
    "/api/v2/spans": ["serviceName"],
    "/api/v2/remoteServices": ["serviceName"],
    "/api/v2/traces": [
        "serviceName",
        "spanName",
        "remoteServiceName",
        "annotationQuery",
        "minDuration",
        "maxDuration",
        "endTs",
        "lookback",
        "limit",
    ],
    "/api/v2/traceMany": ["traceIds"],
    "/api/v2/dependencies": ["endTs", "lookback"],
    "/api/v2/autocompleteKeys": [],
    "/api/v2/autocompleteValues": ["key"],
    "/api/v2/tomograph/operations": ["serviceName", "endTs", "lookback"],
    "/api/v2/tomograph/operationSamples": [
        "serviceName",
        "spanName",
        "kind",
        "endTs",
        "lookback",
        "limit",
    ],
    "/api/v2/trace/{}": [],
}
_PARAM_VALUES = [
    "",
    "0",
    "1",
    "5",
    " 5",
    "+5",
    "-5",
    "1_0",
    "\u0665",  # ARABIC-INDIC DIGIT FIVE
    "\u00b2",
    "5\n",
    "0x10",
    "1e3",
    "9223372036854775",
    "9223372036854776",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "9" * 300,
    "0" * 400 + "1",
    "checkout",
    "ALL",
    "all",
    "a" * 1025,
    "a" * 5000,
    "error and http.method=GET",
    " and ",
    "=",
    "a=b=c and =x and y=",
    " and ".join(["k"] * 150),
    "\ud800",
    "%ED%A0%80",
    "%00",
    "%FF%FE",
    "4e441824ec2b6a44",
    "4e441824ec2b6a44,5af7183fb1d4cf5f",
    ",".join(["a"] * 20_000),
    "0" * 16,
    "g" * 16,
    "1" * 33,
    "http.method",
]


def mutated_query(rng: random.Random, path: str) -> tuple[str, bytes]:
    """A query route with mutated parameters: (path, query string bytes)."""
    if "{}" in path:
        path = path.format(rng.choice([*_PARAM_VALUES[:20], *_PARAM_VALUES[28:]]))
    names = [*_QUERY_PARAMS.get(path, []), "limit", "x", "endTs"]
    parts = []
    for _ in range(rng.randint(0, 6)):
        value = rng.choice(_PARAM_VALUES)
        if rng.random() < 0.3:
            value = _mutate_bytes(rng, value.encode("utf-8", "surrogatepass"), []).decode("latin-1")
        parts.append(f"{rng.choice(names)}={value}")
    query = "&".join(parts)
    if rng.random() < 0.1:
        query = _mutate_bytes(rng, query.encode("utf-8", "surrogatepass"), []).decode("latin-1")
    return path, query.encode("utf-8", "surrogatepass")


# -- driving the app ------------------------------------------------------------------------------


@dataclass
class FuzzReport:
    """Per route: how many requests, the statuses answered, and the first server errors."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, route: str, status: int, failure: str | None = None) -> None:
        self.requests[route] += 1
        self.statuses.setdefault(route, Counter())[status] += 1
        if failure is not None and len(self.failures) < 20:
            self.failures.append(failure)

    def server_errors(self) -> int:
        return sum(n for counts in self.statuses.values() for s, n in counts.items() if s >= 500)

    def summary(self) -> str:
        lines = []
        for route, count in self.requests.items():
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses[route].items()))
            lines.append(f"{route:<28} {count:>7} requests   {statuses}")
        return "\n".join(lines)


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    query: bytes = b"",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request to the ASGI app, as uvicorn would make it; (status, body).

    An exception escaping the app (after its last-resort 500) is re-raised.
    """
    raw_headers = [(b"host", b"127.0.0.1:9411")]
    for name, value in (headers or {}).items():
        raw_headers.append((name.encode("latin-1"), value.encode("utf-8", "surrogatepass")))
    if body and not any(name == b"content-length" for name, _ in raw_headers):
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "query_string": query,
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9411),
        "state": {},
    }
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    answer: dict[str, Any] = {"status": None, "body": b""}

    async def receive() -> Message:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await asyncio.Event().wait()  # no disconnect while the answer is written
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return int(answer["status"]), bytes(answer["body"])


async def _run_one(
    report: FuzzReport, route: str, request: Callable[[], Any], describe: Callable[[], str]
) -> None:
    try:
        status, body = await request()
    except Exception:
        report.add(route, 599, f"{route}: {describe()}\n{traceback.format_exc()}")
        return
    failure = f"{route}: {describe()} -> {status} {body[:300]!r}" if status >= 500 else None
    report.add(route, status, failure)


async def fuzz(app: ASGIApp, count: int, seed: int = 10) -> FuzzReport:
    """``count`` mutated requests per ingest route and per query route against ``app``."""
    rng = random.Random(seed)
    report = FuzzReport()
    for route in ingest_routes(make_seeds()):
        for _ in range(count):
            body, headers = mutated_body(rng, route)

            def send_it(
                body: bytes = body, headers: dict[str, str] = headers, path: str = route.path
            ) -> Any:
                return call(app, "POST", path, body=body, headers=headers)

            def describe(body: bytes = body, headers: dict[str, str] = headers) -> str:
                return f"{headers} {zlib.crc32(body):08x} {body[:200]!r}"

            await _run_one(report, route.name, send_it, describe)
    for path in _QUERY_PARAMS:
        for _ in range(count):
            real_path, query = mutated_query(rng, path)

            def get_it(real_path: str = real_path, query: bytes = query) -> Any:
                return call(app, "GET", real_path, query=query)

            def describe_query(real_path: str = real_path, query: bytes = query) -> str:
                return f"{real_path}?{query[:300]!r}"

            await _run_one(report, f"GET {path}", get_it, describe_query)
    return report
