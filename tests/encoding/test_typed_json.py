"""Zipkin v2 JSON decoded through msgspec (the typed path) answers as the careful path does.

The reference is the decoder with the typed path switched off: the standard library's parser
(or orjson's, which test_fast_json holds to it) and the field-by-field checks. Results are
compared with their key order (the store writes the dicts as they are), errors by their text.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from support.servers import in_ci
from tomograph.encoding import typed_json, zipkin_json
from tomograph.encoding.errors import DecodeError
from tomograph.span import Span

from .conftest import finished_spans
from .test_zipkin_json import _span_objects


@pytest.fixture(autouse=True)
def _msgspec_installed() -> None:
    """These tests compare msgspec's path with the careful one: CI installs msgspec with the
    test extra, so there it must be present."""
    if not typed_json.ACCELERATED:
        if in_ci():
            pytest.fail("msgspec is not installed: the test extra includes it")
        pytest.skip("msgspec is not installed")


def ordered(value: Any) -> Any:
    """``value`` with dicts as lists of items, so that key order counts in comparisons."""
    if isinstance(value, dict):
        return [(key, ordered(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [ordered(item) for item in value]
    return value


def careful(body: bytes) -> Any:
    """What the decoder makes of ``body`` without the typed path: the spans, or the error."""
    accelerated = typed_json.ACCELERATED
    typed_json.ACCELERATED = False
    try:
        return ordered(zipkin_json.decode_spans(body))
    except DecodeError as error:
        return str(error)
    finally:
        typed_json.ACCELERATED = accelerated


def decoded(body: bytes) -> Any:
    try:
        return ordered(zipkin_json.decode_spans(body))
    except DecodeError as error:
        return str(error)


@settings(max_examples=150, deadline=None)
@given(st.lists(finished_spans(), max_size=5))
def test_spans_as_tracers_write_them_take_the_typed_path(spans: list[Span]) -> None:
    body = zipkin_json.encode_spans(spans)
    typed = typed_json.typed_spans(body)
    assert typed is not None
    assert ordered(typed) == careful(body)


@settings(max_examples=500, deadline=None)
@given(st.lists(_span_objects(), min_size=1, max_size=6))
@example([{"traceId": "00000000000000a1", "id": "00000000000000b2", "parentId": "0" * 16}])
def test_odd_spans_decode_as_the_careful_path_decodes_them(objects: list[dict[str, Any]]) -> None:
    body = json.dumps(objects).encode()
    typed = typed_json.typed_spans(body)
    if typed is not None:  # what the typed path accepts, the careful path accepts the same way
        assert ordered(typed) == careful(body)
    assert decoded(body) == careful(body)


_SPAN = '{"traceId":"00000000000000a1","id":"00000000000000b2"%s}'
HOSTILE_FIELDS = [
    ',"timestamp":9223372036854775807',
    ',"timestamp":9223372036854775808',
    ',"timestamp":18446744073709551615',
    ',"timestamp":18446744073709551616',
    ',"duration":-1',
    ',"duration":1.0',
    ',"duration":1e2',
    ',"timestamp":NaN',
    ',"timestamp":Infinity',
    ',"timestamp":' + "9" * 5000,
    ',"extra":' + "9" * 5000,
    ',"extra":' + "9" * 4300,
    ',"extra":' + "9" * 4301,
    ',"extra":"' + "9" * 4301 + '"',
    ',"extra":[' + "1" * 4000 + "," + "2" * 4000 + "]",
    ',"extra":1e99999',
    ',"extra":[NaN]',
    ',"extra":' + "[" * 100_000 + "]" * 100_000,
    ',"name":"\\ud800"',
    ',"name":"\\udfff\\ud800"',
    ',"name":"\\ud83d\\ude00"',
    ',"tags":{"a":"\\ud800"}',
    ',"tags":{"\\ud800":"a"}',
    ',"annotations":[{"timestamp":1,"value":"\\ud800"}]',
    ',"name":"a","name":"B"',
    ',"name":"a","name":null',
    ',"name":1,"name":"a"',
    ',"id":"00000000000000c3"',
    ',"id":"0000000000000000"',
    ',"tags":{"a":"1","a":"2"}',
    ',"name":"' + "x" * 10_000_000 + '"',
    ',"tags":{"big":"' + "y" * 10_000_000 + '"}',
    ',"name":""',
    ',"name":null',
    ',"kind":""',
    ',"kind":"client"',
    ',"kind":"PRODUCER"',
    ',"parentId":""',
    ',"parentId":"00000000000000C3"',
    ',"parentId":"0000000000000000"',
    ',"parentId":"00000000000000c3\\n"',
    ',"shared":true',
    ',"shared":false',
    ',"shared":1',
    ',"debug":"true"',
    ',"tags":{}',
    ',"tags":{"n":5,"b":true}',
    ',"tags":{"a":null}',
    ',"annotations":[]',
    ',"annotations":[{"timestamp":2,"value":"b"},{"timestamp":1,"value":"a"},'
    '{"timestamp":2,"value":"b"}]',
    ',"annotations":[{"value":"a"}]',
    ',"localEndpoint":{}',
    ',"localEndpoint":{"serviceName":"","ipv4":"","ipv6":"","port":0}',
    ',"localEndpoint":{"serviceName":"Web","ipv4":"10.0.0.1","port":65535}',
    ',"localEndpoint":{"port":65536}',
    ',"localEndpoint":{"port":-1}',
    ',"localEndpoint":{"port":true}',
    ',"localEndpoint":{"ipv4":"010.0.0.1"}',
    ',"localEndpoint":{"ipv4":"1.2.3"}',
    ',"localEndpoint":{"ipv4":"::1"}',
    ',"localEndpoint":{"ipv6":"0:0:0:0:0:0:0:1"}',
    ',"localEndpoint":{"ipv6":"::ffff:10.0.0.1"}',
    ',"localEndpoint":{"ipv6":"fe80::1%eth0"}',
    ',"localEndpoint":{"ipv6":"::g"}',
    ',"remoteEndpoint":{"serviceName":"DB","extra":[1,{"a":null}]}',
    ',"remoteEndpoint":null',
    ',"remoteEndpoint":"db"',
]
HOSTILE_BODIES = [
    *(("[" + _SPAN % field + "]").encode() for field in HOSTILE_FIELDS),
    b"[]",
    b" [ ] ",
    b"{}",
    b"[1]",
    b"[null]",
    b"[[]]",
    b'["a"]',
    b"[" + (_SPAN % "").encode() + b"] x",
    b"\xef\xbb\xbf[" + (_SPAN % "").encode() + b"]",
    ("[" + _SPAN % "" + "]").encode("utf-16"),
    b"[" + (_SPAN % ',"name":"\xed\xa0\x80"').encode("latin-1") + b"]",
    b"[" + (_SPAN % ',"extra":"\xff"').encode("latin-1") + b"]",
    b"[" + (_SPAN % ',"name":"caf\xc3\xa9"').encode("latin-1") + b"]",
    b'[{"traceId":"00000000000000A1","id":"00000000000000b2"}]',
    b'[{"traceId":"0000000000000000","id":"00000000000000b2"}]',
    b'[{"traceId":"000000000000000000000000000000a1","id":"00000000000000b2"}]',
    b'[{"traceId":"0123456789abcdef0123456789abcdef","id":"00000000000000b2"}]',
    b'[{"traceId":"0123456789abcdef0","id":"00000000000000b2"}]',
    b'[{"id":"00000000000000b2"}]',
    b'[{"traceId":"00000000000000a1"}]',
    b'[{"traceId":"00000000000000a1","id":"00000000000000b2"},1]',
    # digits beyond ASCII (Arabic-Indic one, fullwidth zero), a capital in a parent id
    '[{"traceId":"00000000000000a\u0661","id":"00000000000000b2"}]'.encode(),
    '[{"traceId":"00000000000000a1","id":"00000000000000b\uff10"}]'.encode(),
    b'[{"traceId":"00000000000000a1","id":"00000000000000b2","parentId":"00000000000000cF"}]',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=lambda body: repr(body[:70]))
def test_hostile_bodies_decode_as_the_careful_path_decodes_them(body: bytes) -> None:
    typed = typed_json.typed_spans(body)
    reference = careful(body)
    if typed is not None:
        assert ordered(typed) == reference
    assert decoded(body) == reference


def test_the_careful_path_takes_every_body_without_msgspec() -> None:
    program = (
        "import sys; sys.modules['msgspec'] = None\n"
        "from tomograph.encoding import typed_json, zipkin_json\n"
        "body = sys.stdin.buffer.read()\n"
        "print(typed_json.ACCELERATED, typed_json.typed_spans(body))\n"
        "print(zipkin_json.decode_spans(body))"
    )
    # a body msgspec would read, were it installed
    body = b'[{"traceId":"00000000000000a1","id":"00000000000000b2","name":"Get"}]'
    run = subprocess.run(
        [sys.executable, "-c", program], input=body, capture_output=True, check=True, timeout=60
    )
    expected = {"traceId": "00000000000000a1", "id": "00000000000000b2", "name": "get"}
    assert run.stdout.decode().strip() == f"False None\n[{expected}]"


def test_bodies_decoded_by_32_threads_at_once_are_each_their_own() -> None:
    bodies = [
        ("[" + _SPAN % f',"name":"span {number}","timestamp":{number + 1}' + "]").encode()
        for number in range(32)
    ]
    results: list[Any] = [None] * 32
    start = threading.Barrier(32)

    def decode(number: int) -> None:
        start.wait()
        results[number] = [typed_json.typed_spans(bodies[number]) for _ in range(50)]

    threads = [threading.Thread(target=decode, args=(number,)) for number in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for number, answers in enumerate(results):
        assert ordered(answers) == [careful(bodies[number])] * 50


@settings(max_examples=1000, deadline=None)
@given(
    st.text(
        st.sampled_from("0123456789abcdefABCDEFgG \n\x00\u0661\uff10\U0001d7d8") | st.characters()
    )
)
@example("")
@example("0123456789abcdef")
@example("abcdef\n")
def test_ids_count_as_lower_hex_exactly_when_the_former_pattern_matched(text: str) -> None:
    # the batch's ids were checked with this regular expression before (see _is_lower_hex)
    assert typed_json._is_lower_hex(text) == (re.fullmatch("[0-9a-f]*", text) is not None)


@settings(max_examples=1000, deadline=None)
@given(
    st.binary().map(lambda raw: raw.translate(bytes(b"0123456789a"[i % 11] for i in range(256))))
    | st.binary(),
    st.integers(1, 12),
)
@example(b"12345", 5)
@example(b"a1234", 5)
@example(b"1234a12345", 5)
def test_a_digit_run_is_found_wherever_it_lies(data: bytes, length: int) -> None:
    # the former check: digits made zeros, then a search for ``length`` zeros
    reference = b"0" * length in data.translate(bytes.maketrans(b"123456789", b"000000000"))
    assert typed_json._has_digit_run(data, length) == reference
