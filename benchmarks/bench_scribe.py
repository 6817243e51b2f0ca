"""Zipkin v1 Thrift encoding (what the Scribe backend sends): tomograph's own encoder beside
thriftpy2 serializing the same span with Zipkin's ``zipkinCore.thrift`` (the IDL is read from
the shared specs folder beside the checkout; the peer is skipped without it).

Case: a finished server span with a remote endpoint, 3 tags and 1 note, to base64 v1 Thrift.
"""

from __future__ import annotations

import base64
import ipaddress
import sys
from pathlib import Path
from typing import Any

import tomograph
from _harness import Result, print_table, time_per_op
from tomograph.encoding.zipkin_v1_thrift import encode_span
from tomograph.reporting.memory import MemoryBackend
from tomograph.span import Span

ZIPKIN_CORE = (
    Path(__file__).resolve().parents[2] / "shared" / "specs" / "zipkin" / "zipkinCore.thrift"
)


def sample_span() -> Span:
    memory = MemoryBackend()
    tracer = tomograph.Tracer("frontend", backends=[memory])
    with tracer.span("get /users", kind="server") as span:
        span.set_remote_endpoint(ipv4="10.1.2.3", port=51000)
        span.tag("http.method", "GET")
        span.tag("http.path", "/users")
        span.tag("http.status_code", 200)
        span.annotate("cache miss")
    return memory.spans[0]


def thriftpy2_encoder() -> Any:
    try:
        import thriftpy2
        from thriftpy2.protocol import TBinaryProtocolFactory
        from thriftpy2.utils import serialize
    except ImportError:
        return None
    if not ZIPKIN_CORE.exists():
        return None
    core = thriftpy2.load(str(ZIPKIN_CORE), module_name="zipkinCore_thrift")
    factory = TBinaryProtocolFactory()

    def signed(value: int, bits: int) -> int:
        return value - (1 << bits) if value >= 1 << (bits - 1) else value

    def endpoint(ep: Any) -> Any:
        ipv4 = int(ipaddress.IPv4Address(ep.ipv4)) if ep.ipv4 else 0
        return core.Endpoint(signed(ipv4, 32), signed(ep.port or 0, 16), ep.service_name or "")

    def encode(span: Span) -> bytes:
        host = endpoint(span.local_endpoint)
        start, end = span.timestamp, span.timestamp + (span.duration or 1)
        annotations = [core.Annotation(start, "sr", host)]
        annotations += [core.Annotation(n.timestamp, n.value, host) for n in span.annotations]
        annotations.append(core.Annotation(end, "ss", host))
        binary = [
            core.BinaryAnnotation(k, str(v).encode(), core.AnnotationType.STRING, host)
            for k, v in span.tags.items()
        ]
        binary.append(
            core.BinaryAnnotation(
                "ca", b"\x01", core.AnnotationType.BOOL, endpoint(span.remote_endpoint)
            )
        )
        thrift_span = core.Span(
            trace_id=signed(span.trace_id & (2**64 - 1), 64),
            name=span.name,
            id=signed(span.span_id, 64),
            annotations=annotations,
            binary_annotations=binary,
            timestamp=start,
            duration=span.duration,
            trace_id_high=signed(span.trace_id >> 64, 64),
        )
        return base64.b64encode(serialize(thrift_span, factory))

    return encode


def main() -> None:
    span = sample_span()
    results = [
        Result(
            "server span to base64 v1 Thrift",
            "tomograph",
            time_per_op(lambda: base64.b64encode(encode_span(span))),
        )
    ]
    peer = thriftpy2_encoder()
    if peer is None:
        print("(thriftpy2 or zipkinCore.thrift not available: peer skipped)", file=sys.stderr)
    else:
        results.append(
            Result(
                "server span to base64 v1 Thrift",
                "thriftpy2+zipkinCore",
                time_per_op(lambda: peer(span)),
            )
        )
    print_table(
        "Zipkin v1 Thrift encoding (µs per span; ratios: peer time / tomograph time)", results
    )


if __name__ == "__main__":
    main()
