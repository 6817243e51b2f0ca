"""Jaeger's uber-trace-id header and its uberctx-* baggage headers."""

from __future__ import annotations

import string
from urllib.parse import quote, unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import (
    assert_valid_or_none,
    contexts,
    header_text,
    mutations,
)

from tomograph.model import TraceContext
from tomograph.propagation import jaeger
from tomograph.propagation.baggage import BaggageEntry
from tomograph.text import unicode_text, utf8


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "463ac35c9f6413ad:a2fb4a1d1a96d312:0:1",
            TraceContext(0x463AC35C9F6413AD, 0xA2FB4A1D1A96D312, None, True),
        ),
        ("abc:def:0:0", TraceContext(0xABC, 0xDEF, None, False)),  # short ids mean leading zeros
        ("ABC:DEF:12:3", TraceContext(0xABC, 0xDEF, 0x12, True, True)),  # either case
        ("abc:def:0:05", TraceContext(0xABC, 0xDEF, None, True)),  # unknown bits ignored
        ("abc%3Adef%3A0%3A1", TraceContext(0xABC, 0xDEF, None, True)),  # percent-encoded
        ("abc%3adef%3a1%3a2", TraceContext(0xABC, 0xDEF, 1, True, True)),
        (
            "463ac35c9f6413ad48485a3953bb6124:1:0:1",
            TraceContext(0x463AC35C9F6413AD48485A3953BB6124, 1, None, True),
        ),
    ],
)
def test_valid_values(value: str, expected: TraceContext) -> None:
    assert jaeger.parse_uber_trace_id(value) == expected
    assert jaeger.extract({"Uber-Trace-Id": value}) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc:def:0",
        "abc:def:0:1:2",
        "0:def:0:1",
        "abc:0:0:1",
        "abc:def::1",
        "abc:def:0:",
        "abc:def:0:100",
        "x:def:0:1",
        "1" * 33 + ":def:0:1",
        "abc:" + "1" * 17 + ":0:1",
        "-1:def:0:1",
        "abc%3Zdef:0:1",
    ],
)
def test_malformed_values_are_rejected(value: str) -> None:
    assert jaeger.parse_uber_trace_id(value) is None


def test_inject_writes_padded_ids_and_flags() -> None:
    headers: dict[str, str] = {}
    jaeger.inject(TraceContext(0xABC, 0xDEF, 0x12, debug=True), headers)
    assert headers == {"uber-trace-id": "0000000000000abc:0000000000000def:0000000000000012:3"}


@given(contexts(deferred=False))
def test_round_trip(context: TraceContext) -> None:
    headers: dict[str, str] = {}
    jaeger.inject(context, headers)
    assert jaeger.extract(headers) == context


@given(header_text)
def test_parser_never_raises(value: str) -> None:
    assert_valid_or_none(jaeger.parse_uber_trace_id(value))


@given(st.data())
def test_near_valid_values_parse_or_are_rejected(data: st.DataObject) -> None:
    valid = jaeger.format_uber_trace_id(data.draw(contexts()))
    assert_valid_or_none(jaeger.parse_uber_trace_id(data.draw(mutations(valid))))


# -- baggage: uberctx-* headers -----------------------------------------------------------------

TRACE_HEADER = {"uber-trace-id": "abc:def:0:1"}


def with_entries(*entries: BaggageEntry) -> TraceContext:
    return TraceContext(0xABC, 0xDEF, sampled=True, extra={"baggage": entries})


def test_baggage_is_written_as_one_lower_case_header_per_entry() -> None:
    headers: dict[str, str] = {}
    jaeger.inject(
        with_entries(
            BaggageEntry("User", "Ann Lee"),
            BaggageEntry("plan", "gold+1;ttl=60", "ttl=60"),  # properties have no Jaeger form
            BaggageEntry("city", "M\u00fcnchen/Ost"),
        ),
        headers,
    )
    assert headers == {
        "uber-trace-id": "0000000000000abc:0000000000000def:0:1",
        "uberctx-user": "Ann%20Lee",
        "uberctx-plan": "gold%2B1%3Bttl%3D60",
        "uberctx-city": "M%C3%BCnchen%2FOst",
    }


def test_injecting_again_replaces_the_baggage_headers_written_before() -> None:
    headers = {"accept": "*/*"}
    jaeger.inject(with_entries(BaggageEntry("old", "1"), BaggageEntry("kept", "1")), headers)
    jaeger.inject(with_entries(BaggageEntry("kept", "2")), headers)
    assert headers == {
        "accept": "*/*",
        "uber-trace-id": "0000000000000abc:0000000000000def:0:1",
        "uberctx-kept": "2",
    }
    pairs: list[tuple[bytes, bytes]] = [(b"accept", b"*/*")]
    jaeger.inject(with_entries(BaggageEntry("old", "1")), pairs)
    jaeger.inject(with_entries(), pairs)
    assert pairs == [
        (b"accept", b"*/*"),
        (b"uber-trace-id", b"0000000000000abc:0000000000000def:0:1"),
    ]


def test_keys_equal_but_for_case_are_sent_once() -> None:
    headers: dict[str, str] = {}
    jaeger.inject(with_entries(BaggageEntry("User", "a"), BaggageEntry("user", "b")), headers)
    assert headers["uberctx-user"] == "a"


def test_baggage_headers_are_read_beside_uber_trace_id() -> None:
    context = jaeger.extract(
        {
            "Uber-Trace-Id": "abc:def:0:1",
            "UBERCTX-User": "Ann+Lee",  # Go and Java clients write a space as "+"
            "uberctx-plan": "gold%2B1",
            "uberctx-city": "M%C3%BCnchen",
            "uberctx-bad": "%FF%FE",  # not UTF-8
            "uberctx-escape": "100%",  # not an escape: kept
            "uberctx-": "no key",
        }
    )
    assert context is not None and context.span_id == 0xDEF
    assert context.extra == {
        "baggage": (
            BaggageEntry("user", "Ann Lee"),
            BaggageEntry("plan", "gold+1"),
            BaggageEntry("city", "M\u00fcnchen"),
            BaggageEntry("bad", "\ufffd\ufffd"),
            BaggageEntry("escape", "100%"),
        )
    }


def test_baggage_headers_without_uber_trace_id_are_not_read() -> None:
    assert jaeger.extract_baggage({"uberctx-user": "alice"}) == ()
    # A malformed uber-trace-id is still Jaeger's: its baggage is read.
    assert jaeger.extract_baggage({"uber-trace-id": "x", "uberctx-user": "alice"}) == (
        BaggageEntry("user", "alice"),
    )


def test_the_adhoc_jaeger_baggage_header_is_read_even_alone() -> None:
    found = jaeger.extract_baggage(
        {"jaeger-baggage": "user=alice, plan = gold,broken, a=b=c", "uber-trace-id": "abc:def:0:1"}
    )
    assert found == (BaggageEntry("user", "alice"),)
    found = jaeger.extract_baggage({"Jaeger-Baggage": "user=alice"})
    assert found == (BaggageEntry("user", "alice"),)
    both = {**TRACE_HEADER, "uberctx-user": "bob", "jaeger-baggage": "user=alice,tier=1"}
    assert jaeger.extract_baggage(both) == (BaggageEntry("user", "bob"), BaggageEntry("tier", "1"))


def test_baggage_from_a_wsgi_environ() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "HTTP_UBER_TRACE_ID": "abc:def:0:1",
        "HTTP_UBERCTX_USER_ID": "42",  # WSGI writes "-" as "_": read back as "-"
        "HTTP_UBERCTXNOT": "x",
    }
    assert jaeger.extract_baggage(environ) == (BaggageEntry("user-id", "42"),)


def test_baggage_from_asgi_pairs_and_header_containers() -> None:
    from email.message import Message

    from tornado.httputil import HTTPHeaders
    from werkzeug.datastructures import Headers

    pairs = [
        (b"uber-trace-id", b"abc:def:0:1"),
        (b"Uberctx-User", b"alice"),
        (b"uberctx-user", b"mallory"),  # repeated: the first value counts
        (b"uberctx-city", b"M%C3%BCnchen"),
    ]
    expected = (BaggageEntry("user", "alice"), BaggageEntry("city", "M\u00fcnchen"))
    assert jaeger.extract_baggage(pairs) == expected
    message = Message()
    tornado_headers = HTTPHeaders()
    werkzeug_headers = Headers()
    for name, value in pairs:
        message[name.decode()] = value.decode()
        tornado_headers.add(name.decode(), value.decode())
        werkzeug_headers.add(name.decode(), value.decode())
    for container in (message, tornado_headers, werkzeug_headers):
        assert jaeger.extract_baggage(container) == expected, type(container)


def test_baggage_limits_hold_against_many_and_huge_headers() -> None:
    headers = {**TRACE_HEADER}
    headers.update({f"uberctx-k{i}": "v" for i in range(10_000)})
    assert len(jaeger.extract_baggage(headers)) == 64
    huge = {**TRACE_HEADER, "uberctx-big": "x" * 100_000, "uberctx-small": "1"}
    assert jaeger.extract_baggage(huge) == (BaggageEntry("small", "1"),)
    large = {**TRACE_HEADER, **{f"uberctx-k{i}": "v" * 1000 for i in range(20)}}
    found = jaeger.extract_baggage(large)
    assert 0 < len(found) < 20 and sum(len(e.key) + 1 + len(e.value) for e in found) <= 8192
    sent: dict[str, str] = {}
    jaeger.inject(with_entries(*(BaggageEntry(f"k{i}", "v" * 1000) for i in range(20))), sent)
    written = {k: v for k, v in sent.items() if k.startswith("uberctx-")}
    assert 0 < len(written) < 20
    assert sum(len(k) - len("uberctx-") + 1 + len(v) for k, v in written.items()) <= 8192


def test_at_most_256_baggage_headers_are_looked_at() -> None:
    # Hostile requests cost no more than that: 100,000 headers are not all decoded.
    headers = {**TRACE_HEADER, **{f"uberctx-bad key{i}": "x" for i in range(256)}}
    headers.update({f"uberctx-k{i}": "v" for i in range(100_000)})
    assert jaeger.extract_baggage(headers) == ()
    pairs = [("uber-trace-id", "abc:def:0:1")] + [("uberctx-dup", str(i)) for i in range(300)]
    assert jaeger.extract_baggage([*pairs, ("uberctx-late", "1")]) == (BaggageEntry("dup", "0"),)


@pytest.mark.parametrize(
    "value",
    ["\ud800", "caf\u00e9", "\x00\r\n", "%", "%%41", "a" * 30_000, "\u2028"],
)
def test_hostile_baggage_values_never_raise(value: str) -> None:
    carrier = {**TRACE_HEADER, "uberctx-k": value, "jaeger-baggage": value, "uberctx-\u00e9": value}
    for entry in jaeger.extract_baggage(carrier):
        assert entry.key == "k"
    headers: dict[str, str] = {}
    jaeger.inject(with_entries(BaggageEntry("k", value)), headers)
    assert headers.get("uberctx-k", "").isascii()  # left out when over the limits


# -- properties ---------------------------------------------------------------------------------

baggage_keys = st.text(
    alphabet=string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=12
)
baggage_values = st.text(max_size=40)


@given(contexts(deferred=False), st.dictionaries(baggage_keys, baggage_values, max_size=10))
def test_baggage_round_trip(context: TraceContext, items: dict[str, str]) -> None:
    entries = tuple(BaggageEntry(k, v) for k, v in items.items())
    headers: dict[str, str] = {}
    jaeger.inject(context.replace(extra={"baggage": entries} if entries else None), headers)
    assert all(value.isascii() for value in headers.values())
    # Every value arrives as it was, but text that is not Unicode (lone surrogates): U+FFFD.
    expected = tuple(BaggageEntry(k, unicode_text(v)) for k, v in items.items())
    assert jaeger.extract(headers) == context.replace(
        extra={"baggage": expected} if expected else None
    )


@given(st.lists(st.tuples(header_text, header_text), max_size=20))
def test_baggage_parsers_never_raise_and_stay_within_limits(pairs: list[tuple[str, str]]) -> None:
    carrier = [("uber-trace-id", "abc:def:0:1"), *(("uberctx-" + k, v) for k, v in pairs)]
    carrier += [("jaeger-baggage", v) for _, v in pairs[:2]]
    found = jaeger.extract_baggage(carrier)
    assert len(found) <= 64
    assert all(BaggageEntry(e.key, e.value) == e for e in found)
    assert len(",".join(f"{e.key}={e.value}" for e in found).encode("utf-8", "replace")) <= 8192 * 3


@given(st.text(max_size=40) | st.text(alphabet="".join(map(chr, range(128))), max_size=40))
def test_fast_encoding_matches_urllib(value: str) -> None:
    assert jaeger._encode(value) == quote(utf8(value), safe="")


@given(st.text(alphabet="%0123456789abcdefABCDEF +~/\u00e9\t", max_size=40) | st.text(max_size=40))
def test_fast_decoding_matches_urllib(value: str) -> None:
    assert jaeger._decode(value) == unquote_plus(value.strip(" \t"), errors="replace")
