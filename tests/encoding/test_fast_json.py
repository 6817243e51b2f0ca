"""JSON through orjson or the standard library: the same values, errors and bytes either way.

Every comparison is against :mod:`json` itself (the behaviour the collector had before orjson),
with types compared too: an int read as a float would change a validation message and a tag's
text.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.servers import in_ci
from tomograph.encoding import fast_json, zipkin_json, zipkin_v1_json
from tomograph.encoding.errors import DecodeError

from .conftest import span_dicts


@pytest.fixture(autouse=True)
def _accelerated() -> None:
    """These tests compare orjson with the standard library: without orjson there is nothing
    to compare (CI installs it with the test extra, so there it must be present)."""
    if not fast_json.ACCELERATED:
        if in_ci():
            pytest.fail("orjson is not installed: the test extra includes it")
        pytest.skip("orjson is not installed")


def typed(value: Any) -> Any:
    """``value`` with every number tagged by its type (1 and 1.0 and True compare equal)."""
    if isinstance(value, dict):
        return [(key, typed(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [typed(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    return (type(value).__name__, value)


def outcome(parse: Any, data: bytes) -> Any:
    try:
        return typed(parse(data))
    except (ValueError, RecursionError) as error:
        return (type(error).__name__, str(error))


numbers = (
    st.integers()
    | st.integers(2**63 - 10, 2**64 + 10)
    | st.integers(-(2**63) - 10, -(2**63) + 10)
    | st.floats(allow_nan=False, allow_infinity=False)
)
texts = st.text() | st.sampled_from(["\ud800", "a\udfffb", "\x00\x1f\x7f", "\u2028", "😀", "é"])
leaves = st.none() | st.booleans() | numbers | texts
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """JSON texts as senders write them: ASCII-escaped or not, indented or compact, UTF-8
    (or UTF-16, or with a byte order mark, which the standard library also reads)."""
    value = draw(values)
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 1])),
        allow_nan=False,
    )
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-8-sig"]))
    return text.encode(encoding, "surrogatepass")


@settings(max_examples=400)
@given(json_bodies())
def test_valid_json_reads_as_the_standard_library_reads_it(data: bytes) -> None:
    assert outcome(fast_json.loads, data) == outcome(fast_json.stdlib_loads, data)


@settings(max_examples=400)
@given(json_bodies(), st.data())
def test_damaged_json_fails_with_the_standard_librarys_message(
    data: bytes, draw: st.DataObject
) -> None:
    cut = draw.draw(st.integers(0, len(data)))
    junk = draw.draw(st.binary(max_size=4) | st.sampled_from([b"NaN", b"Infinity", b"-", b"1e400"]))
    damaged = data[:cut] + junk + data[cut + draw.draw(st.integers(0, 3)) :]
    assert outcome(fast_json.loads, damaged) == outcome(fast_json.stdlib_loads, damaged)


@pytest.mark.parametrize(
    "data",
    [
        b"[18446744073709551615]",  # the largest u64: orjson reads it as an int too
        b"[18446744073709551616]",  # beyond: orjson would read a float
        b"[-9223372036854775809]",
        b" -9223372036854775809",
        b"18446744073709551616",
        b'{"timestamp":\n  123456789012345678901234567890}',
        b"[1e400]",
        b"[NaN]",
        b"[-Infinity]",
        b'["\\ud800"]',
        b"\xef\xbb\xbf[1]",
        b"[1]x",
        b"[" * 100_000,
    ],
)
def test_edges_read_as_the_standard_library_reads_them(data: bytes) -> None:
    assert outcome(fast_json.loads, data) == outcome(fast_json.stdlib_loads, data)


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


def written(dump: Any, value: Any) -> Any:
    try:
        return dump(value)
    except UnicodeEncodeError as error:
        return ("UnicodeEncodeError", error.reason)


@settings(max_examples=400)
@given(plain | span_dicts())
def test_plain_data_is_written_byte_for_byte_as_the_standard_library_writes_it(
    value: Any,
) -> None:
    assert written(fast_json.dumps, value) == written(fast_json.stdlib_dumps, value)


def written_each(values: list[Any]) -> Any:
    try:
        return fast_json.dumps_each(values)
    except UnicodeEncodeError as error:
        return ("UnicodeEncodeError", error.reason)


@settings(max_examples=300)
@given(st.lists(plain | span_dicts(), max_size=6))
def test_values_written_together_are_written_as_each_alone(values: list[Any]) -> None:
    alone = [written(fast_json.dumps, value) for value in values]
    errors = [outcome for outcome in alone if isinstance(outcome, tuple)]
    assert written_each(values) == (errors[0] if errors else alone)


def decoded(decode: Any, data: bytes) -> Any:
    try:
        return typed(decode(data))
    except DecodeError as error:
        return ("DecodeError", str(error))


span_fields = st.fixed_dictionaries(
    {"traceId": st.sampled_from(["000000000000000a", "00000000000000000000000000000001"])},
    optional={
        "id": st.sampled_from(["000000000000000b", "0", 5]),
        "parentId": st.sampled_from(["000000000000000c", None, 1]),
        "timestamp": numbers | st.none() | texts,
        "duration": numbers | st.none(),
        "name": texts | numbers,
        "kind": st.sampled_from(["CLIENT", "server", None, 1]),
        "tags": st.dictionaries(texts, leaves, max_size=3) | values,
        "annotations": st.lists(
            st.fixed_dictionaries({"timestamp": numbers, "value": texts | numbers}), max_size=2
        )
        | values,
        "localEndpoint": st.fixed_dictionaries(
            {}, optional={"serviceName": texts, "ipv4": texts, "port": numbers}
        ),
        "shared": leaves,
    },
)


@settings(max_examples=300)
@given(st.lists(span_fields, max_size=3))
def test_zipkin_bodies_decode_alike_with_and_without_orjson(spans: list[Any]) -> None:
    """The same span dicts, or the same validation error, whichever parser reads the body."""
    data = json.dumps(spans, ensure_ascii=False, allow_nan=False).encode("utf-8", "surrogatepass")
    fast = decoded(zipkin_json.decode_spans, data)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_json, "_orjson", None)
        assert decoded(zipkin_json.decode_spans, data) == fast
        v1_slow = decoded(zipkin_v1_json.decode_spans, data)
    assert decoded(zipkin_v1_json.decode_spans, data) == v1_slow


def test_values_written_together_hold_about_their_length_in_memory() -> None:
    # A collector's batch keeps the JSON of each of its spans until they are stored: orjson's
    # bytes kept the 4 KB buffer each was written in, 1.2 GB for a request of 300,000 tiny spans
    values = [{"traceId": "a" * 16, "id": f"{n:016x}"} for n in range(10_000)]
    tracemalloc.start()
    try:
        written = fast_json.dumps_each(values)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written[0] == b'{"traceId":"aaaaaaaaaaaaaaaa","id":"0000000000000000"}'
    assert held / len(values) < 300  # the bytes themselves: about 100 each, with the list
