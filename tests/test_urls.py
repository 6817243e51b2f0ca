"""URLs as tomograph shows them: no credentials and no signed-URL secrets, for any input."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tomograph.urls import safe_url, strip_credentials, url_query

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


@given(words, words, words)
def test_strip_credentials_removes_userinfo_and_keeps_the_rest(
    user: str, password: str, host: str
) -> None:
    url = f"https://{user}:{password}@{host}/api/v2/spans?x=1"
    assert strip_credentials(url) == f"https://{host}/api/v2/spans?x=1"


def test_strip_credentials_leaves_a_url_without_userinfo_as_it_is() -> None:
    assert strip_credentials("zipkin+http://127.0.0.1:9411") == "zipkin+http://127.0.0.1:9411"


def test_url_query_names_an_unknown_parameter() -> None:
    assert url_query("statsd://h:8125?prefix=a", {"prefix"}) == {"prefix": "a"}
    with pytest.raises(ValueError, match="unknown parameter 'token'"):
        url_query("zipkin+http://h?token=abc", {"gzip"})
