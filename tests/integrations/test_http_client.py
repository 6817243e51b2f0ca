"""safe_url: no credentials and no signed-URL secrets in ``http.url``, for any input."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from tomograph.integrations import http_client
from tomograph.integrations.http_client import begin, safe_url
from tomograph.model import Endpoint
from tomograph.reporting.memory import MemoryBackend

words = st.from_regex(r"[A-Za-z0-9_.~-]{1,12}", fullmatch=True)


def test_plain_url_is_unchanged() -> None:
    assert (
        safe_url("http://127.0.0.1:8080/a/b?page=2#top") == "http://127.0.0.1:8080/a/b?page=2#top"
    )


def test_credentials_and_signatures_are_removed() -> None:
    assert (
        safe_url("https://user:pw@example.com/p?X-Amz-Signature=abc&a=1")
        == "https://example.com/p?X-Amz-Signature=REDACTED&a=1"
    )


@given(words, words, words, words)
def test_userinfo_never_survives(user: str, password: str, host: str, path: str) -> None:
    url = safe_url(f"http://{user}:{password}@{host}/{path}")
    assert url == f"http://{host}/{path}"


@given(
    st.text(max_size=200) | st.builds("{}://{}@{}?{}".format, words, st.text(), words, st.text())
)
def test_any_text_comes_back_without_userinfo_and_safe_as_it_is(text: str) -> None:
    url = safe_url(text)
    if url == "<unparsable URL>":
        return
    if "@" not in text and "?" not in text:
        assert url == text  # nothing to hide: untouched
    assert urlsplit(url).username is None  # read back by the standard library's parser
    assert safe_url(url) == url  # nothing left to remove


@given(words, st.sampled_from(["sig", "Signature", "token", "api_key"]))
def test_secret_query_values_are_redacted(value: str, key: str) -> None:
    url = safe_url(f"http://h/p?{key}={value}&k=v")
    assert url == f"http://h/p?{key}=REDACTED&k=v"


def _peer_of(url: str) -> tuple[object, object]:
    call = begin("GET", url)
    assert call is not None
    call.end(200)
    return call.span.remote_endpoint, call.span.tags.get("server.address")


def test_peers_are_the_same_whether_built_or_cached(memory: MemoryBackend) -> None:
    http_client._peer_of_netloc.cache_clear()
    cases = {
        "http://127.0.0.1:8080/a?x=1": (Endpoint(None, "127.0.0.1", None, 8080), None),
        "https://[::1]/b": (Endpoint(None, None, "::1", 443), None),
        "http://api.example.com/c": (Endpoint(None, None, None, 80), "api.example.com"),
        "http://host:99999/": (Endpoint(None, None, None, None), None),  # a bad port
        "http://[::1/": (Endpoint(None, None, None, None), None),  # unparsable
    }
    for _ in range(2):  # built, then from the cache
        for url, expected in cases.items():
            assert _peer_of(url) == expected, url
    assert len(memory.spans) == 2 * len(cases)
