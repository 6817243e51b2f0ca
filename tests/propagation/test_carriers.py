"""Header access on dicts, WSGI environs, request objects and header containers."""

from __future__ import annotations

import email.message
import http.client
import urllib.request
from typing import Any

import multidict
import pytest
import tornado.httputil
import webob
import werkzeug.datastructures
import werkzeug.wrappers
from hypothesis import given
from hypothesis import strategies as st

from tomograph.propagation.carriers import HeaderReader, reader_for, set_header


def message(*pairs: tuple[str, str]) -> email.message.Message:
    result = email.message.Message()
    for name, value in pairs:
        result[name] = value
    return result


def tornado_headers(*pairs: tuple[str, str]) -> tornado.httputil.HTTPHeaders:
    headers = tornado.httputil.HTTPHeaders()
    for name, value in pairs:
        headers.add(name, value)
    return headers


def environ(**headers: str) -> dict[str, Any]:
    env: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.version": (1, 0)}
    env.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    return env


CARRIERS = {
    "dict, canonical case": lambda: {"X-B3-TraceId": "abc", "Other": "x"},
    "dict, lower case": lambda: {"x-b3-traceid": "abc"},
    "dict, bytes": lambda: {b"X-B3-TraceId": b"abc"},
    "dict, list values": lambda: {"X-B3-TraceId": ["abc", "def"]},
    "wsgi environ": lambda: environ(X_B3_TRACEID="abc"),
    "asgi raw pairs": lambda: [(b"x-b3-traceid", b"abc"), (b"x-b3-traceid", b"def")],
    "email message": lambda: message(("X-B3-TraceId", "abc"), ("X-B3-TraceId", "def")),
    "tornado headers": lambda: tornado_headers(("X-B3-TraceId", "abc"), ("X-B3-TraceId", "def")),
    "werkzeug headers": lambda: werkzeug.datastructures.Headers(
        [("X-B3-TraceId", "abc"), ("X-B3-TraceId", "def")]
    ),
    "multidict (aiohttp headers)": lambda: multidict.CIMultiDictProxy(
        multidict.CIMultiDict([("X-B3-TraceId", "abc"), ("X-B3-TraceId", "def")])
    ),
    "webob request": lambda: webob.Request.blank("/", headers={"X-B3-TraceId": "abc"}),
    "werkzeug request": lambda: werkzeug.wrappers.Request(environ(X_B3_TRACEID="abc")),
    "tornado request": lambda: tornado.httputil.HTTPServerRequest(
        start_line=tornado.httputil.RequestStartLine("GET", "/", "HTTP/1.1"),
        headers=tornado_headers(("X-B3-TraceId", "abc"), ("Host", "127.0.0.1")),
    ),
    "urllib request": lambda: urllib.request.Request(
        "http://127.0.0.1/", headers={"X-B3-TraceId": "abc"}
    ),
}


@pytest.mark.parametrize("make", CARRIERS.values(), ids=list(CARRIERS))
def test_first_value_is_found_case_insensitively(make: Any) -> None:
    reader = reader_for(make())
    assert reader.first("x-b3-traceid") == "abc"
    assert reader.first("x-b3-spanid") is None
    assert reader.all("x-b3-spanid") == []


@pytest.mark.parametrize(
    "name",
    [
        "dict, list values",
        "asgi raw pairs",
        "email message",
        "tornado headers",
        "multidict (aiohttp headers)",
    ],
)
def test_repeated_headers_are_all_returned_in_order(name: str) -> None:
    assert reader_for(CARRIERS[name]()).all("x-b3-traceid") == ["abc", "def"]


def test_missing_multidict_headers_are_no_failures(caplog: pytest.LogCaptureFixture) -> None:
    # multidict's getall raises KeyError for a missing name: a miss must not be handled as a
    # failure to read (logged, and about 30 µs per aiohttp request).
    reader = reader_for(multidict.CIMultiDictProxy(multidict.CIMultiDict({"B3": "x"})))
    with caplog.at_level("DEBUG", logger="tomograph"):
        assert reader.first("traceparent") is None
        assert reader.all("tracestate") == []
        assert reader.first("b3") == "x"
    assert caplog.records == []


def test_http_server_handler_headers_are_read() -> None:
    class Handler:  # what BaseHTTPRequestHandler offers: headers is an email Message
        headers = http.client.parse_headers(
            __import__("io").BytesIO(
                b"Traceparent: a\r\nTracestate: x=1\r\nTracestate: y=2\r\n\r\n"
            )
        )

    reader = reader_for(Handler())
    assert reader.first("traceparent") == "a"
    assert reader.all("tracestate") == ["x=1", "y=2"]


def test_values_over_the_limit_are_treated_as_absent() -> None:
    reader = reader_for({"b3": "x" * 100, "tracestate": ["a=1", "b" * 100]})
    assert reader.first("b3", limit=99) is None
    assert reader.first("b3", limit=100) == "x" * 100
    assert reader.all("tracestate", limit=10) == ["a=1"]


def test_unreadable_carriers_give_no_headers() -> None:
    assert reader_for(object()).first("b3") is None
    assert reader_for(42).all("b3") == []

    class Hostile(dict[str, str]):
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")

    assert reader_for(Hostile(b3="1")).first("b3") is None


def test_reader_for_reuses_a_reader() -> None:
    reader = reader_for({})
    assert isinstance(reader, HeaderReader)
    assert reader_for(reader) is reader


# -- writing ---------------------------------------------------------------------------------


def test_set_header_on_a_dict_replaces() -> None:
    headers = {"b3": "old"}
    set_header(headers, "b3", "new")
    assert headers == {"b3": "new"}


def test_set_header_on_urllib_request() -> None:
    request = urllib.request.Request("http://127.0.0.1/")
    set_header(request, "traceparent", "v")
    assert request.get_header("Traceparent") == "v"


def test_set_header_on_an_email_message_replaces_every_old_value() -> None:
    headers = message(("Traceparent", "a"), ("traceparent", "b"))
    set_header(headers, "traceparent", "c")
    assert headers.get_all("traceparent") == ["c"]


def test_set_header_on_pairs_replaces() -> None:
    pairs: list[tuple[str, str]] = [("B3", "old"), ("other", "1")]
    set_header(pairs, "b3", "new")
    assert pairs == [("other", "1"), ("b3", "new")]


def test_set_header_on_tornado_and_werkzeug_headers() -> None:
    t = tornado_headers(("B3", "old"))
    set_header(t, "b3", "new")
    assert t.get_list("b3") == ["new"]
    w = werkzeug.datastructures.Headers([("B3", "old")])
    set_header(w, "b3", "new")
    assert w.getlist("b3") == ["new"]


def test_set_header_on_an_object_with_headers() -> None:
    class Request:
        def __init__(self) -> None:
            self.headers: dict[str, str] = {}

    request = Request()
    set_header(request, "b3", "1")
    assert request.headers == {"b3": "1"}


def test_set_header_on_http_client_connection_uses_putheader() -> None:
    sent: list[tuple[str, str]] = []

    class Connection(http.client.HTTPConnection):
        def putheader(self, header: str | bytes, *values: Any) -> None:
            sent.append((str(header), str(values[0])))

    set_header(Connection("127.0.0.1"), "b3", "1")
    assert sent == [("b3", "1")]


def test_set_header_on_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot write headers"):
        set_header(42, "b3", "1")


@given(
    st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=10), st.text(max_size=20)
)
def test_dict_lookup_matches_a_case_insensitive_scan(headers: dict[str, str], name: str) -> None:
    name = name.lower()
    expected = [v for k, v in headers.items() if k.lower() == name]
    found = reader_for(headers).all(name)
    if name in headers:
        assert found == [headers[name]]
    else:
        assert found == expected


def test_set_header_on_bytes_pairs_appends_bytes() -> None:
    pairs: list[tuple[bytes, bytes]] = [(b"B3", b"old"), (b"accept", b"*/*")]
    set_header(pairs, "b3", "new")
    assert pairs == [(b"accept", b"*/*"), (b"b3", b"new")]
    only = [(b"b3", b"old")]
    set_header(only, "b3", "new")
    assert only == [(b"b3", b"new")]
