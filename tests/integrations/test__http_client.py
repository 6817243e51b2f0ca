"""safe_url: no credentials and no signed-URL secrets in ``http.url``, for any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tomograph.integrations._http_client import safe_url

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


@given(st.text(max_size=200))
def test_any_text_never_raises(text: str) -> None:
    assert isinstance(safe_url(text), str)


@given(words, st.sampled_from(["sig", "Signature", "token", "api_key"]))
def test_secret_query_values_are_redacted(value: str, key: str) -> None:
    url = safe_url(f"http://h/p?{key}={value}&k=v")
    assert url == f"http://h/p?{key}=REDACTED&k=v"
