"""The browser's trace-file parser reads what the collector's decoders read, the same way.

Random Zipkin v2 JSON and OTLP/JSON documents (hypothesis) go to both the collector's decoders
(``zipkin_json.decode_spans``, ``otlp.decode_json_spans``) and the UI's ``analysis/upload.js``
(through a Node process): a document one accepts the other accepts with the same spans, and one
refuses, the other refuses with its own error type.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.servers import require

from tomograph.encoding import zipkin_json
from tomograph.encoding.errors import DecodeError

HERE = Path(__file__).parent


class Parser:
    """One Node process running tests/ui/parse_lines.mjs, asked one document at a time."""

    def __init__(self) -> None:
        node = require("node", "Node.js runs the UI's trace-file parser")
        self.process = subprocess.Popen(
            [node, str(HERE / "parse_lines.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def parse(self, text: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(text) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        assert "crash" not in answer, answer["crash"]
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def parser() -> Iterator[Parser]:
    running = Parser()
    yield running
    running.close()


def python_answer(decode: Any, text: str) -> dict[str, Any]:
    try:
        return {"spans": decode(text.encode())}
    except DecodeError as error:
        return {"error": str(error)}


def same(ours: dict[str, Any], theirs: dict[str, Any], text: str) -> None:
    if "error" in theirs:
        assert "error" in ours, (
            f"the UI accepted what the collector refuses ({theirs['error']}): {text}"
        )
    else:
        assert "error" not in ours, (
            f"the UI refused what the collector accepts ({ours['error']}): {text}"
        )
        # the UI groups a file's spans by trace, in the order the file first names each trace
        first: dict[str, int] = {}
        for span in theirs["spans"]:
            first.setdefault(span["traceId"], len(first))
        grouped = sorted(theirs["spans"], key=lambda span: first[span["traceId"]])
        assert ours["spans"] == grouped, text


# Text without lone surrogates (the collector refuses them, the browser cannot tell them apart).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
odd = st.one_of(st.none(), st.integers(-5, 5), texts, st.booleans(), st.just([]), st.just({}))


def mostly(valid: Any, wrong: Any = odd) -> Any:
    """Mostly a valid value, sometimes a wrong one: most documents parse, some fail somewhere."""
    return st.one_of(valid, valid, valid, valid, valid, valid, wrong)


hex16 = mostly(
    st.integers(1, 2**64 - 1).map(lambda i: f"{i:016x}"),
    st.text("0123456789abcdefABCDEF", min_size=16, max_size=16),
)
hex32 = st.integers(1, 2**128 - 1).map(lambda i: f"{i:032X}")
# Not 1.0 and the like: JSON.parse makes them the number 1, so the browser takes them as the
# integer the collector's parser wants written without a point (a viewer's harmless leniency).
fractions = st.floats(allow_nan=False).filter(lambda f: not f.is_integer())
micros = mostly(st.integers(0, 2**53 - 1), st.one_of(st.integers(-3, -1), fractions))
endpoints = st.fixed_dictionaries(
    {},
    optional={
        "serviceName": mostly(texts),
        "ipv4": mostly(
            st.sampled_from(["10.0.0.1", "192.168.1.255", ""]),
            st.sampled_from(["1.2.3", "256.1.1.1"]),
        ),
        "port": mostly(st.integers(0, 65535), st.one_of(st.integers(65536, 70000), odd)),
    },
)
zipkin_spans = st.fixed_dictionaries(
    {"traceId": st.one_of(hex16, hex32), "id": hex16},
    optional={
        "parentId": mostly(st.one_of(hex16, st.just("0" * 16))),
        "name": mostly(texts),
        "kind": mostly(
            st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER"]),
            st.sampled_from(["client", "LOCAL"]),
        ),
        "timestamp": micros,
        "duration": micros,
        "localEndpoint": mostly(endpoints),
        "remoteEndpoint": endpoints,
        "annotations": st.lists(
            st.fixed_dictionaries({"timestamp": micros, "value": mostly(texts)}), max_size=3
        ),
        "tags": mostly(
            st.dictionaries(texts, st.one_of(texts, st.integers(-9, 9), st.booleans()), max_size=3),
            st.dictionaries(texts, odd, max_size=2),
        ),
        "shared": mostly(st.booleans()),
        "debug": st.booleans(),
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(zipkin_spans, min_size=1, max_size=3))
def test_zipkin_v2_json_reads_as_the_collector_reads_it(parser: Parser, spans: list[Any]) -> None:
    text = json.dumps(spans)
    same(parser.parse(text), python_answer(zipkin_json.decode_spans, text), text)


def any_values(depth: int = 0) -> Any:
    plain = st.one_of(
        texts.map(lambda t: {"stringValue": t}),
        st.booleans().map(lambda b: {"boolValue": b}),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: {"intValue": str(i)}),
        st.integers(-(2**31), 2**31).map(lambda i: {"intValue": i}),
        st.floats(allow_nan=False, allow_infinity=False)
        .filter(lambda f: not f.is_integer())
        .map(lambda f: {"doubleValue": f}),
    )
    if depth >= 2:
        return plain
    return st.one_of(
        plain,
        st.lists(any_values(depth + 1), max_size=2).map(lambda v: {"arrayValue": {"values": v}}),
    )


attributes = st.lists(st.fixed_dictionaries({"key": texts, "value": any_values()}), max_size=3)
nanos = mostly(
    st.one_of(
        st.integers(1, 2**63).map(str),
        st.integers(1_600_000_000_000_000_000, 1_800_000_000_000_000_000).map(str),
    ),
    st.sampled_from(["-1", "x", "1.5"]),
)
otlp_spans = st.fixed_dictionaries(
    {"traceId": hex32.map(str.lower), "spanId": hex16},
    optional={
        "parentSpanId": mostly(st.one_of(hex16, st.just(""))),
        "name": texts,
        "kind": mostly(
            st.integers(0, 5), st.sampled_from(["SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"])
        ),
        "startTimeUnixNano": nanos,
        "endTimeUnixNano": nanos,
        "attributes": attributes,
        "events": st.lists(
            st.fixed_dictionaries(
                {"name": st.one_of(texts, st.just("exception")), "timeUnixNano": nanos},
                optional={"attributes": attributes},
            ),
            max_size=2,
        ),
        "status": st.fixed_dictionaries({}, optional={"code": st.integers(0, 2), "message": texts}),
        "traceState": texts,
        "links": st.lists(
            st.fixed_dictionaries(
                {"traceId": hex32.map(str.lower), "spanId": hex16.filter(lambda h: len(h) == 16)},
                optional={"attributes": attributes},
            ),
            max_size=2,
        ),
    },
)
otlp_documents = st.builds(
    lambda service, spans, scope: {
        "resourceSpans": [
            {
                "resource": {"attributes": service},
                "scopeSpans": [{"scope": scope, "spans": spans}],
            }
        ]
    },
    st.lists(
        st.fixed_dictionaries(
            {"key": st.sampled_from(["service.name", "host.name"]), "value": any_values(2)}
        ),
        max_size=2,
    ),
    st.lists(otlp_spans, min_size=1, max_size=3),
    st.fixed_dictionaries({}, optional={"name": texts, "version": texts}),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(otlp_documents)
def test_otlp_json_reads_as_the_collector_reads_it(parser: Parser, document: Any) -> None:
    pytest.importorskip("google.protobuf", reason="the collector's OTLP decoder needs protobuf")
    from tomograph.encoding import otlp

    text = json.dumps(document)
    same(parser.parse(text), python_answer(otlp.decode_json_spans, text), text)
