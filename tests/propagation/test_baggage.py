"""W3C baggage: parsing, writing, limits and the baggage API on spans."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import header_text, mutations

from tomograph import Tracer
from tomograph.model import TraceContext
from tomograph.propagation import Propagator, baggage
from tomograph.propagation.baggage import _SAFE, _quote, percent_decode
from tomograph.propagation.baggage import BaggageEntry as E
from tomograph.reporting.memory import MemoryBackend


def test_members_values_and_properties() -> None:
    assert baggage.parse_baggage(
        "userId=alice , serverNode = DF%2028,isProduction=false;ttl=60;secret"
    ) == (
        E("userId", "alice"),
        E("serverNode", "DF 28"),
        E("isProduction", "false", "ttl=60;secret"),
    )


def test_percent_decoding_is_utf8_with_replacement_for_bad_sequences() -> None:
    assert baggage.parse_baggage("a=caf%C3%A9,b=%FF,c=1+1") == (
        E("a", "café"),
        E("b", "\ufffd"),
        E("c", "1+1"),  # "+" is a plus sign in W3C baggage
    )


@pytest.mark.parametrize(
    "member",
    ["novalue", "=1", "a b=1", "a=x y", 'a="q"', "a=b\\c", "a=1;=p", "a=1;p q", "(a)=1", "é=1"],
)
def test_malformed_members_are_dropped_alone(member: str) -> None:
    assert baggage.parse_baggage(f"good=1,{member},also=2") == (E("good", "1"), E("also", "2"))


def test_empty_value_is_allowed() -> None:
    assert baggage.parse_baggage("a=") == (E("a", ""),)


def test_repeated_key_keeps_last_value() -> None:
    assert baggage.parse_baggage("a=1,b=2,a=3") == (E("a", "3"), E("b", "2"))


def test_reading_keeps_at_most_64_members() -> None:
    entries = baggage.parse_baggage(",".join(f"k{i}=v" for i in range(100)))
    assert len(entries) == 64 and entries[-1].key == "k63"


def test_reading_keeps_at_most_8192_bytes_of_whole_members() -> None:
    entries = baggage.parse_baggage(",".join(f"k{i}={'x' * 1000}" for i in range(20)))
    assert len(entries) == 8 and all(len(e.value) == 1000 for e in entries)


def test_a_huge_header_is_ignored() -> None:
    assert baggage.extract({"baggage": "a=1," * 20000}) == ()


def test_multiple_headers_are_combined() -> None:
    assert baggage.extract([("baggage", "a=1"), ("baggage", "b=2")]) == (E("a", "1"), E("b", "2"))


def test_writing_percent_encodes_values() -> None:
    text = baggage.format_baggage([E("a", "x y,z;é+%"), E("b", "plain-_.~!")])
    assert text == "a=x%20y%2Cz%3B%C3%A9%2B%25,b=plain-_.~!"


def test_writing_keeps_the_limits() -> None:
    text = baggage.format_baggage(E(f"k{i}", "v") for i in range(100))
    assert len(text.split(",")) == 64
    text = baggage.format_baggage(E(f"k{i}", "x" * 1000) for i in range(20))
    assert len(text.encode()) <= 8192 and len(text.split(",")) == 8


def test_writing_skips_keys_that_are_not_tokens() -> None:
    assert baggage.format_baggage([E("bad key", "1"), E("ok", "2")]) == "ok=2"


def test_inject_writes_nothing_without_baggage() -> None:
    headers: dict[str, str] = {}
    baggage.inject(TraceContext(1, 2), headers)
    assert headers == {}


# -- the API on spans ------------------------------------------------------------------------


@pytest.fixture
def local_tracer() -> Tracer:
    return Tracer("svc", backends=[MemoryBackend()])


def test_set_baggage_is_inherited_by_children_and_not_by_siblings(local_tracer: Tracer) -> None:
    with local_tracer.span("root") as root:
        baggage.set_baggage("user", "alice")
        with local_tracer.span("child") as child:
            baggage.set_baggage("step", "1")
            assert baggage.get_baggage() == {"user": "alice", "step": "1"}
        with local_tracer.span("sibling") as sibling:
            assert baggage.get_baggage() == {"user": "alice"}
    assert baggage.get_baggage(root) == {"user": "alice"}
    assert baggage.get_baggage(child) == {"user": "alice", "step": "1"}
    assert baggage.get_baggage_item("user", sibling) == "alice"
    assert baggage.get_baggage_item("step", sibling) is None


def test_setting_replaces_the_mapping_instead_of_changing_it(local_tracer: Tracer) -> None:
    with local_tracer.span("root") as root:
        baggage.set_baggage("a", "1")
        before = root.extra
        baggage.set_baggage("a", "2", "ttl=5")
        assert before == {"baggage": (E("a", "1"),)}
        assert baggage.get_baggage_entries() == (E("a", "2", "ttl=5"),)
        baggage.remove_baggage("a")
        assert root.extra is None


def test_a_finished_span_is_not_changed(local_tracer: Tracer) -> None:
    with local_tracer.span("root") as root:
        pass
    baggage.set_baggage("a", "1", span=root)
    assert root.extra is None


def test_outside_any_span_baggage_is_empty_and_setting_does_nothing() -> None:
    baggage.set_baggage("a", "1")
    assert baggage.get_baggage() == {}


@pytest.mark.parametrize("key", ["", "a b", "é", "a,b"])
def test_bad_keys_are_a_clear_error(key: str, local_tracer: Tracer) -> None:
    with local_tracer.span("root"), pytest.raises(ValueError, match="token"):
        baggage.set_baggage(key, "1")


def test_baggage_from_a_span_is_injected(local_tracer: Tracer) -> None:
    with local_tracer.span("root") as root:
        baggage.set_baggage("user", "alice smith")
        headers: dict[str, str] = {}
        baggage.inject(root, headers)
    assert headers == {"baggage": "user=alice%20smith"}


# -- properties ------------------------------------------------------------------------------

keys = st.text(alphabet="!#$%&'*+-.^_`|~abcXYZ019", min_size=1, max_size=12)
entries = st.dictionaries(
    keys,
    st.tuples(
        st.text(max_size=30),
        st.sampled_from(["", "ttl=60", "flag", "a=1;b"]),
    ),
    max_size=10,
).map(lambda d: tuple(E(k, v, p) for k, (v, p) in d.items()))


@given(entries)
def test_round_trip(items: tuple[E, ...]) -> None:
    # Values are any Unicode text that survives UTF-8 (lone surrogates cannot be sent).
    items = tuple(e for e in items if _encodable(e.value))
    headers: dict[str, str] = {}
    baggage.inject(TraceContext(1, 2, extra={"baggage": items}), headers)
    assert baggage.extract(headers) == items


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@given(st.lists(header_text, max_size=3))
def test_parser_never_raises(values: list[str]) -> None:
    for entry in baggage.parse_baggage(values):
        assert entry.key and isinstance(entry.value, str)


@given(st.data())
def test_near_valid_headers_keep_the_members_that_are_still_valid(data: st.DataObject) -> None:
    text = baggage.format_baggage(data.draw(entries))
    parsed = baggage.parse_baggage(data.draw(mutations(text)))
    assert len(parsed) <= 64


@given(st.text(alphabet="%0123456789abcdefABCDEFxyz +~/é", max_size=40) | st.text(max_size=40))
def test_fast_unquote_matches_urllib(value: str) -> None:
    assert percent_decode(value) == unquote(value, errors="replace")


@given(st.text(max_size=40) | st.text(alphabet="".join(map(chr, range(128))), max_size=40))
def test_fast_quote_matches_urllib(value: str) -> None:
    assert _quote(value) == quote(value, safe=_SAFE)


def test_inject_formats_once_per_entries_and_logs_every_time_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    baggage._FORMATTED.clear()
    entries = (E("user", "alice smith"), E("ttl", "1", "p"))
    bad = (E("user", "alice"), E("not a token", "x"))
    listed = [E("a", "1")]  # not a tuple: formatted directly
    for _ in range(2):  # formatted, then from the cache
        for extra, expected in ((entries, "user=alice%20smith,ttl=1;p"), (bad, "user=alice")):
            headers: dict[str, str] = {}
            baggage.inject(TraceContext(1, 2, extra={"baggage": extra}), headers)
            assert headers == {"baggage": expected}
        headers = {}
        baggage.inject(TraceContext(1, 2, extra={"baggage": listed}), headers)
        assert headers == {"baggage": "a=1"}
    assert entries in baggage._FORMATTED and bad not in baggage._FORMATTED
    with caplog.at_level("DEBUG", logger="tomograph.propagation"):
        baggage.inject(TraceContext(1, 2, extra={"baggage": bad}), {})
    assert "not an HTTP token" in caplog.text


def test_values_that_are_not_unicode_are_sent_as_replacement_characters() -> None:
    # A lone surrogate (from surrogateescape, or hostile input) cannot be UTF-8: inject once
    # raised UnicodeEncodeError into the application's outgoing request.
    headers: dict[str, str] = {}
    entries = (E("k", "a\ud800b"), E("n", "ok"))
    baggage.inject(TraceContext(1, 2, extra={"baggage": entries}), headers)
    assert headers == {"baggage": "k=a%EF%BF%BDb,n=ok"}
    assert baggage.extract(headers) == (E("k", "a\ufffdb"), E("n", "ok"))


def test_a_surrogate_in_a_received_header_spoils_no_more_than_its_member() -> None:
    # Counting bytes of such a header raised, and the whole trace context was lost with it.
    headers = {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "baggage": "ok=1,bad=\udcff,more=2",
    }
    context = Propagator(["w3c", "baggage"]).extract(headers)
    assert context is not None and context.span_id == 0x00F067AA0BA902B7
    assert context.extra == {"baggage": (E("ok", "1"), E("more", "2"))}


@given(st.lists(st.builds(E, st.sampled_from("abcdefgh"), st.text(max_size=400)), max_size=80))
def test_merge_of_one_source_is_the_general_merge(entries: list[E]) -> None:
    merged = baggage.merge_baggage(entries)
    assert merged == baggage.merge_baggage(entries, ())  # the fast path gives the same
    assert len(merged) <= 64 and len({e.key for e in merged}) == len(merged)
    assert len(baggage.format_baggage(merged).encode()) <= 8192


@pytest.mark.parametrize(
    "junk",
    [
        {"user": "alice"},
        "user=alice",
        42,
        (("user", "alice"),),  # pairs, not entries
        (E("user", 5),),  # type: ignore[arg-type]
        (E("user", "alice", "p\r\nX-Injected: 1"),),  # would split the header
        (E("user\r\nX-Injected", "1"),),
    ],
)
def test_hand_made_baggage_never_raises_or_breaks_a_header(junk: object) -> None:
    # with_baggage() takes any entries: inject once raised TypeError/AttributeError into the
    # application, or wrote properties broken across lines.
    context = TraceContext(1, 2, sampled=True, extra={"baggage": junk})
    extra = {"baggage": (*junk, E("ok", "1"))} if isinstance(junk, tuple) else None
    for ctx in (context, context.replace(extra=extra) if extra else context):
        headers: dict[str, str] = {}
        Propagator(["w3c", "baggage", "jaeger"]).inject(ctx, headers)
        assert all("\r" not in v and "\n" not in v for v in headers.values())
        written = {k: v for k, v in headers.items() if k == "baggage" or k.startswith("uberctx")}
        assert written == ({"baggage": "ok=1", "uberctx-ok": "1"} if ctx is not context else {})


def test_extract_parses_once_per_value_and_logs_every_time_it_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    baggage._PARSED.clear()
    good = "user=alice%20smith,ttl=1;p"
    bad = "user=alice,not a token=x"
    with caplog.at_level("DEBUG", logger="tomograph.propagation"):
        for _ in range(2):  # parsed, then from the cache
            assert baggage.extract({"baggage": good}) == (
                E("user", "alice smith"),
                E("ttl", "1", "p"),
            )
            assert baggage.extract({"baggage": bad}) == (E("user", "alice"),)
    assert good in baggage._PARSED and bad not in baggage._PARSED
    assert caplog.text.count("dropping malformed baggage member") == 2


def test_only_values_within_the_byte_limit_are_cached() -> None:
    baggage._PARSED.clear()
    large = ",".join(f"k{n}={'v' * 100}" for n in range(70))  # over 64 members and 8192 bytes
    assert len(baggage.parse_baggage(large)) < 70
    assert large not in baggage._PARSED and len(baggage._PARSED) == 0


@given(st.data())
def test_baggage_read_again_gives_the_same_entries(data: st.DataObject) -> None:
    text = data.draw(mutations(baggage.format_baggage(data.draw(entries))))
    first = baggage.parse_baggage(text)
    assert baggage.parse_baggage(text) == first
    assert baggage.parse_baggage([text]) == first  # one value in a list: the same string
