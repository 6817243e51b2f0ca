"""The dict and WSGI environ fast paths of extraction give what the general reader gives.

Every ``extract`` has two paths: plain dicts and WSGI environs are read with exact-case key
lookups (formats whose headers are absent are skipped before any parsing); any other mapping
goes through the case-insensitive :class:`~tomograph.propagation.carriers.HeaderReader`. A
``MappingProxyType`` of the same dict takes the general path, so each test compares the two.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.trace_strategies import contexts, header_text, mutations

from tomograph.model import TraceContext
from tomograph.propagation import Propagator, b3, baggage, jaeger, w3c, xtraceinfo
from tomograph.propagation.baggage import BaggageEntry
from tomograph.propagation.carriers import SLOW, NameSet, has_other_case, reader_for

ALL_FORMATS = ["w3c", "baggage", "b3", "b3single", "xtraceinfo", "jaeger"]
EXTRACTORS: dict[str, Callable[[Any], Any]] = {
    "w3c": w3c.extract,
    "b3": b3.extract,
    "baggage": baggage.extract,
    "xtraceinfo": xtraceinfo.extract,
    "jaeger": jaeger.extract,
}
OTHER_HEADERS = {"accept": "*/*", "Host": "example.com", "User-Agent": "test"}


def _environ(headers: dict[Any, Any]) -> dict[Any, Any]:
    environ: dict[Any, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.version": (1, 0)}
    for key, value in headers.items():
        if isinstance(key, str):
            environ["HTTP_" + key.upper().replace("-", "_")] = value
    return environ


def _view(result: Any, headers: dict[Any, Any]) -> Any:
    """What must agree: everything, except the fresh random ids of a "do not sample" context."""
    if not isinstance(result, TraceContext):
        return result
    text = " ".join(str(value) for value in headers.values())
    ids_sent = f"{result.span_id:016x}" in text
    return (
        (result.trace_id, result.span_id) if ids_sent else "fresh ids",
        result.parent_id,
        result.sampled,
        result.debug,
        result.shared,
        dict(result.extra) if result.extra else None,
    )


@st.composite
def carriers(draw: st.DrawFn) -> dict[Any, Any]:
    """Injected headers, then changed: names in other cases, values mutated, keys dropped."""
    context = draw(contexts())
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["tracestate"] = (("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE"))
    if draw(st.booleans()):
        extra["baggage"] = (BaggageEntry("user", "alice smith"), BaggageEntry("n", "1", "p"))
    context = context.replace(extra=extra or None)
    formats = draw(st.lists(st.sampled_from(ALL_FORMATS), min_size=1, unique=True))
    headers: dict[Any, Any] = {}
    Propagator(formats).inject(context, headers)
    changed: dict[Any, Any] = dict(OTHER_HEADERS) if draw(st.booleans()) else {}
    for key, value in headers.items():
        action = draw(st.sampled_from(["keep", "keep", "keep", "case", "mutate", "drop", "type"]))
        if action == "case":
            key = draw(st.sampled_from([key.upper(), key.title(), key.capitalize()]))
        elif action == "mutate":
            value = draw(mutations(value) | header_text)
        elif action == "drop":
            continue
        elif action == "type":
            value = draw(st.sampled_from([value.encode(), [value], [value, value], None]))
        changed[key] = value
    if draw(st.booleans()):
        changed[draw(st.sampled_from([b"b3", b"traceparent"]))] = draw(header_text).encode()
    if draw(st.booleans()):
        changed[draw(st.sampled_from(["b3", "x-b3-sampled", "traceparent"]))] = draw(header_text)
    return changed


@given(carriers(), st.sampled_from(sorted(EXTRACTORS)))
def test_each_format_reads_a_dict_as_the_general_reader_does(
    headers: dict[Any, Any], name: str
) -> None:
    extract = EXTRACTORS[name]
    general = _view(extract(MappingProxyType(headers)), headers)
    assert _view(extract(headers), headers) == general
    environ = _environ(headers)
    assert _view(extract(environ), headers) == _view(extract(MappingProxyType(environ)), headers)


@given(carriers(), st.lists(st.sampled_from(ALL_FORMATS), min_size=1, unique=True))
def test_composite_reads_a_dict_as_the_general_reader_does(
    headers: dict[Any, Any], formats: list[str]
) -> None:
    propagator = Propagator(formats)
    general = _view(propagator.extract(MappingProxyType(headers)), headers)
    assert _view(propagator.extract(headers), headers) == general
    environ = _environ(headers)
    assert _view(propagator.extract(environ), headers) == _view(
        propagator.extract(MappingProxyType(environ)), headers
    )


@given(carriers(), st.lists(st.sampled_from(ALL_FORMATS), min_size=1, unique=True), st.data())
def test_composite_reads_pairs_as_the_general_reader_does(
    headers: dict[Any, Any], formats: list[str], data: st.DataObject
) -> None:
    # ASGI-style raw headers: bytes or text, repeated names, and items that are not pairs.
    pairs: list[Any] = []
    for key, value in headers.items():
        if isinstance(value, list):
            value = value[0] if value else ""
        if isinstance(key, str) and isinstance(value, str) and data.draw(st.booleans()):
            key, value = key.encode("latin-1", "replace"), value.encode("latin-1", "replace")
        pairs.append((key, value))
        if data.draw(st.integers(0, 5)) == 0:
            pairs.append((key, value))  # repeated
        if data.draw(st.integers(0, 9)) == 0:
            pairs.append(data.draw(st.sampled_from([(key,), "ab", (key, 1), [key, value]])))
    carrier: list[Any] | tuple[Any, ...] = data.draw(st.sampled_from([pairs, tuple(pairs)]))
    propagator = Propagator(formats)
    general = _view(propagator.extract(reader_for(carrier)), headers)
    assert _view(propagator.extract(carrier), headers) == general


@pytest.mark.parametrize("kind", ["dict", "environ", "pairs"])
def test_composite_without_trace_headers_is_none(kind: str) -> None:
    headers = dict(OTHER_HEADERS)
    carrier: Any = {"dict": headers, "environ": _environ(headers), "pairs": list(headers.items())}
    assert Propagator().extract(carrier[kind]) is None


def test_composite_reads_repeated_pairs_as_w3c_and_baggage_require() -> None:
    pairs = [
        (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        (b"Tracestate", b"rojo=1"),
        (b"tracestate", b"congo=2"),
        (b"baggage", b"a=1"),
        (b"BAGGAGE", b"b=2"),
    ]
    found = Propagator().extract(pairs)
    assert found is not None
    assert found.extra == {
        "tracestate": (("rojo", "1"), ("congo", "2")),
        "baggage": (BaggageEntry("a", "1"), BaggageEntry("b", "2")),
    }
    twice = [pairs[0], pairs[0]]
    assert Propagator().extract(twice) is None  # two traceparent headers are invalid


def test_composite_fast_path_adds_baggage_and_keeps_tracestate() -> None:
    context = TraceContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        sampled=True,
        extra={
            "tracestate": (("rojo", "1"),),
            "baggage": (BaggageEntry("user", "alice"),),
        },
    )
    headers: dict[str, str] = {}
    Propagator().inject(context, headers)
    for carrier in (headers, _environ(headers)):
        found = Propagator().extract(carrier)
        assert found is not None
        assert found.span_id == context.span_id
        assert found.extra == {
            "tracestate": (("rojo", "1"),),
            "baggage": (BaggageEntry("user", "alice"),),
        }


def test_an_other_case_name_is_read_from_a_dict() -> None:
    # The fast path cannot see "X-B3-TraceId"; it must hand the dict to the general reader.
    headers = {"X-B3-TraceId": "463ac35c9f6413ad", "x-b3-spanid": "a2fb4a1d1a96d312"}
    found = Propagator().extract(headers)
    assert found is not None and found.trace_id == 0x463AC35C9F6413AD
    assert b3.extract_dict(headers, False) is SLOW
    assert b3.extract_dict({"x-b3-traceid": "463ac35c9f6413ad"}, False) is None


def test_a_later_format_wins_when_an_earlier_one_is_malformed() -> None:
    headers = {"traceparent": "garbage", "b3": "463ac35c9f6413ad-a2fb4a1d1a96d312-1"}
    for carrier in (headers, _environ(headers)):
        found = Propagator().extract(carrier)
        assert found is not None and found.span_id == 0xA2FB4A1D1A96D312


def test_has_other_case() -> None:
    names = NameSet(["traceparent", "b3"])
    assert not has_other_case({"traceparent": "x", "accept": "y"}, names)
    assert has_other_case({"TraceParent": "x"}, names)
    assert has_other_case({"B3": "x"}, names)
    assert has_other_case({b"b3": "x"}, names)  # bytes names: the general reader decodes them
    assert not has_other_case({"B4": "x", "Accept": "y"}, names)


def test_foreign_tracestate_cache_gives_what_format_tracestate_gives() -> None:
    members = tuple((f"k{i}", "v" * 20) for i in range(40))  # over 32 members and 512 chars
    context = TraceContext(1, 2, sampled=True, extra={"tracestate": members})
    for _ in range(2):  # formatted, then from the cache
        headers: dict[str, str] = {}
        w3c.inject(context, headers)
        assert headers["tracestate"] == w3c.format_tracestate(
            members, ("tomograph", "0000000000000002;1")
        )
    listed = TraceContext(1, 2, sampled=True, extra={"tracestate": [("a", "1")]})
    headers = {}
    w3c.inject(listed, headers)  # a list cannot be a cache key: formatted directly
    assert headers["tracestate"] == "tomograph=0000000000000002;1,a=1"
