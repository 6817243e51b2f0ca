"""URLs as tomograph shows them, and the options a backend URL carries.

Backends and HTTP client integrations both show URLs (in names, tags, log lines and error
messages) and must never show the credentials in them: :func:`strip_credentials` removes
``user:password@``, :func:`safe_url` also redacts signed-URL secrets in the query. Backend
factories read their options with :func:`url_query`.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

__all__ = ["SENSITIVE_QUERY_KEYS", "safe_url", "strip_credentials", "url_query"]

#: Query parameters whose values :func:`safe_url` replaces by ``REDACTED`` (signed URLs).
SENSITIVE_QUERY_KEYS = frozenset(
    {
        "awsaccesskeyid",
        "signature",
        "sig",
        "x-goog-signature",
        "x-amz-signature",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "password",
        "secret",
        "client_secret",
    }
)


def _without_credentials(parts: SplitResult) -> SplitResult:
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])


def strip_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (for names, logs and error messages).

    ValueError for a URL :func:`urllib.parse.urlsplit` refuses (``http://[::1``).

    >>> strip_credentials("https://alice:secret@zipkin.example/api/v2/spans")
    'https://zipkin.example/api/v2/spans'
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(_without_credentials(parts))


def safe_url(url: str) -> str:
    """``url`` without credentials (``user:password@``) and with signed-URL secrets redacted.

    Never raises: a URL that does not parse is shown as ``<unparsable URL>``.

    >>> safe_url('https://bob:hunter2@api.example.com/v1?sig=abc&page=2')
    'https://api.example.com/v1?sig=REDACTED&page=2'
    """
    if "@" not in url and "?" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    parts = _without_credentials(parts)
    if parts.query:
        pairs = []
        for item in parts.query.split("&"):
            key, sep, _value = item.partition("=")
            if sep and key.lower() in SENSITIVE_QUERY_KEYS:
                pairs.append(f"{key}=REDACTED")
            else:
                pairs.append(item)
        parts = parts._replace(query="&".join(pairs))
    return urlunsplit(parts)


def url_query(url: str, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters of a backend URL; ValueError names any parameter not in ``allowed``.

    >>> url_query('statsd://host:8125?prefix=app', {'prefix'})
    {'prefix': 'app'}
    """
    allowed = set(allowed)
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} (known: {', '.join(sorted(allowed)) or 'none'})"
        )
    return query
