"""Credentials of the HTTP backends: bearer tokens and headers, from code and the environment.

Real HTTP servers on 127.0.0.1 record what arrives. A secret must reach the collector and
nothing else: not a repr, a name, a stats key, an error message or a log line, even when a
hostile collector echoes it back in its answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.http_recorder import RecordingServer, recording_server

from tomograph import ConfigurationError, Tracer, config
from tomograph.reporting.zipkin import ZipkinBackend

SECRET = "s3cret-Token/with+base64="
ENCODED_SECRET = quote(SECRET, safe="")  # as it is written in a URL


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as recording:
        yield recording


def deliver(backend: Any, name: str = "op") -> dict[str, int]:
    """Report one span through ``backend``, wait until it is sent or given up on."""
    Tracer("svc", backends=[backend]).start_span(name).finish()
    assert backend.flush(10)
    stats: dict[str, int] = backend.stats()
    return stats


def authorization(server: RecordingServer) -> list[str | None]:
    return [request.headers.get("authorization") for request in server.requests]


def shown(backend: Any) -> str:
    """Everything a backend lets an operator see about itself."""
    return " ".join(
        [repr(backend), backend.endpoint, backend.transport.sender.name, repr(backend.stats())]
    )


# -- from code --------------------------------------------------------------------------------


def test_a_token_is_sent_as_a_bearer_authorization(server: RecordingServer) -> None:
    backend = ZipkinBackend(server.url, token=SECRET)
    assert deliver(backend)["sent"] == 1
    backend.close(1)
    assert authorization(server) == [f"Bearer {SECRET}"]
    assert SECRET not in shown(backend)


def test_headers_are_sent_with_every_request(server: RecordingServer) -> None:
    backend = ZipkinBackend(server.url, headers={"X-Scope-OrgID": "tenant-7", "api-key": SECRET})
    deliver(backend, "first")
    deliver(backend, "second")
    backend.close(1)
    assert [r.headers.get("x-scope-orgid") for r in server.requests] == ["tenant-7"] * 2
    assert [r.headers.get("api-key") for r in server.requests] == [SECRET] * 2
    assert SECRET not in shown(backend)


def test_the_otlp_backend_sends_its_token_and_headers(server: RecordingServer) -> None:
    pytest.importorskip("opentelemetry.proto")
    from tomograph.reporting.otlp import OtlpBackend

    backend = OtlpBackend(server.url, token=SECRET, headers={"X-Tenant": "acme"})
    assert deliver(backend)["sent"] == 1
    backend.close(1)
    (request,) = server.requests
    assert request.path == "/v1/traces"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["x-tenant"] == "acme"
    assert SECRET not in shown(backend)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"headers": {"X-Evil": "a\r\nX-Injected: 1"}}, "header X-Evil: the value"),
        ({"headers": {"X-Null": "a\x00b"}}, "header X-Null: the value"),
        ({"headers": {"X-Snow": "☃"}}, "header X-Snow: the value"),
        ({"headers": {"X-Ok": "1", SECRET: "v"}}, "header 2: the name is not an HTTP token"),
        ({"headers": {"Content-Type": "text/plain"}}, "set by the backend itself"),
        ({"headers": {"Host": "elsewhere"}}, "set by the backend itself"),
        ({"token": "line\nbreak"}, "the token must be"),
        ({"token": "  "}, "the token must be"),
        ({"token": "t", "headers": {"authorization": "Basic x"}}, "not both"),
    ],
)
def test_malformed_credentials_are_refused_without_showing_them(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        ZipkinBackend("http://127.0.0.1:9", **options)
    headers = options.get("headers", {})
    malformed_names = [name for name in headers if not re.fullmatch(r"[A-Za-z-]+", name)]
    for value in [options.get("token"), *headers.values(), *malformed_names]:
        if value and len(value.strip()) > 3:  # shorter ones occur in any sentence
            assert value not in str(raised.value)


def test_a_token_and_credentials_in_the_url_are_refused_together() -> None:
    with pytest.raises(ValueError, match="a token and user:password@ in the URL, not both"):
        ZipkinBackend("http://alice:pw@127.0.0.1:9", token=SECRET)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "token", "advice"),
    [
        (401, None, "requires credentials and none were sent: pass token= to ZipkinBackend"),
        (401, SECRET, "refused the credentials"),
        (403, SECRET, "forbids sending spans"),
    ],
)
def test_a_refusal_is_logged_once_with_advice_and_counted_as_failed(
    server: RecordingServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
    token: str | None,
    advice: str,
) -> None:
    # The recording server echoes the request headers in its answer, token included.
    backend = ZipkinBackend(f"{server.url}/status/{status}", token=token, max_retries=3)
    with caplog.at_level(logging.WARNING, logger="tomograph"):
        for name in ("a", "b", "c"):
            deliver(backend, name)
    stats = backend.stats()
    backend.close(1)
    assert (stats["sent"], stats["failed"], stats["retries"]) == (0, 3, 0)
    assert len(server.requests) == 3  # one request per batch: never retried
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"HTTP {status}" in warnings[0] and advice in warnings[0]
    if token:
        assert '"authorization": "***"' in warnings[0]  # the echo, redacted
    assert SECRET not in caplog.text
    assert SECRET not in shown(backend)


# -- from the environment ---------------------------------------------------------------------


def configured(urls: list[str], environ: dict[str, str]) -> list[Any]:
    tracer = config.configure(service="svc", backends=urls, environ=environ)
    return list(tracer.backends)


@pytest.fixture
def second_server() -> Iterator[RecordingServer]:
    with recording_server() as recording:
        yield recording


@pytest.fixture(autouse=True)
def _reset_default_tracer() -> Iterator[None]:
    yield
    config.reset()


def test_the_zipkin_token_variable_reaches_zipkin_backends_only(
    server: RecordingServer, second_server: RecordingServer
) -> None:
    pytest.importorskip("opentelemetry.proto")
    zipkin, otlp = configured(
        [f"zipkin+{server.url}", f"otlp+{second_server.url}"],
        {"TOMOGRAPH_ZIPKIN_TOKEN": SECRET},
    )
    deliver(zipkin)
    deliver(otlp)
    assert authorization(server) == [f"Bearer {SECRET}"]
    assert authorization(second_server) == [None]


def test_otlp_headers_variable_is_percent_decoded_like_opentelemetrys(
    server: RecordingServer,
) -> None:
    pytest.importorskip("opentelemetry.proto")
    (otlp,) = configured(
        [f"otlp+{server.url}"],
        {"TOMOGRAPH_OTLP_HEADERS": f"Authorization=Bearer%20{quote(SECRET)}, x-tenant = a%2Cb"},
    )
    deliver(otlp)
    (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert request.headers["x-tenant"] == "a,b"


def test_two_collectors_of_one_kind_each_get_their_own_token(
    server: RecordingServer, second_server: RecordingServer
) -> None:
    first, second = configured(
        [
            f"zipkin+{server.url}?token_env=BILLING_TOKEN",
            f"zipkin+{second_server.url}?headers_env=AUDIT_HEADERS&encoding=proto",
        ],
        {
            "BILLING_TOKEN": "billing-secret",
            "AUDIT_HEADERS": "X-Api-Key=audit-secret",
            "TOMOGRAPH_ZIPKIN_TOKEN": "shared-secret",
        },
    )
    deliver(first)
    deliver(second)
    assert authorization(server) == ["Bearer billing-secret"]
    # the second URL names only its headers: the shared token still applies to it
    (request,) = second_server.requests
    assert request.headers["x-api-key"] == "audit-secret"
    assert request.headers["authorization"] == "Bearer shared-secret"
    assert request.headers["content-type"] == "application/x-protobuf"  # other parameters kept


def test_a_url_with_its_own_user_does_not_take_the_shared_token(server: RecordingServer) -> None:
    (backend,) = configured(
        [server.url.replace("http://", "zipkin+http://alice:pw@")],
        {"TOMOGRAPH_ZIPKIN_TOKEN": SECRET},
    )
    deliver(backend)
    assert authorization(server) == ["Basic YWxpY2U6cHc="]  # alice:pw


@pytest.mark.parametrize(
    ("url", "environ", "message"),
    [
        (
            "zipkin+http://127.0.0.1:9?token_env=MISSING",
            {},
            "token_env=MISSING, but MISSING is not set",
        ),
        (
            "zipkin+http://127.0.0.1:9",
            {"TOMOGRAPH_ZIPKIN_HEADERS": "good=1,a-raw-token-without-a-name"},
            "TOMOGRAPH_ZIPKIN_HEADERS: entry 2 is not name=value",
        ),
        (
            "zipkin+http://127.0.0.1:9",
            {"TOMOGRAPH_ZIPKIN_HEADERS": f"good=1,{SECRET}"},  # the secret holds a "="
            "header 2: the name is not an HTTP token",
        ),
        (
            "zipkin+http://127.0.0.1:9",
            {"TOMOGRAPH_ZIPKIN_HEADERS": f"X-Key={SECRET}%0D%0AX-Injected:%201"},
            "header X-Key: the value",
        ),
        (
            "zipkin+http://127.0.0.1:9",
            {"TOMOGRAPH_ZIPKIN_HEADERS": f"Authorization=Bearer%20{SECRET}"},
            "not both",
        ),
        (f"zipkin+http://alice:{ENCODED_SECRET}@127.0.0.1:9?colour=red", {}, "unknown parameter"),
        (f"zipkin+http://127.0.0.1:9?token={ENCODED_SECRET}", {}, "unknown parameter 'token'"),
        (f"otlp+http://127.0.0.1:9?headers=Authorization={ENCODED_SECRET}", {}, "'headers'"),
    ],
)
def test_bad_credentials_are_configuration_errors_that_show_no_secret(
    url: str, environ: dict[str, str], message: str
) -> None:
    environ = (
        {**environ, "TOMOGRAPH_ZIPKIN_TOKEN": "other-token"} if "not both" in message else environ
    )
    with pytest.raises(ConfigurationError, match=message) as raised:
        config.backend_from_url(url, environ)
    for secret in (SECRET, ENCODED_SECRET, "a-raw-token-without-a-name", "other-token"):
        assert secret not in str(raised.value)


header_names = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1
)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40).map(
    str.strip
)


@given(st.dictionaries(header_names, header_values, max_size=5))
def test_percent_encoded_header_lists_parse_back_to_the_headers(headers: dict[str, str]) -> None:
    text = ",".join(f"{name}={quote(value, safe='')}" for name, value in headers.items())
    assert config.parse_headers(text) == headers


@given(st.text(max_size=200))
def test_any_header_list_text_parses_or_names_the_bad_entry(text: str) -> None:
    try:
        headers = config.parse_headers(text)
    except ValueError as error:
        assert str(error).startswith("entry ") and str(error).endswith(" is not name=value")
        return
    entries = [item for item in text.split(",") if item.strip()]
    assert len(headers) <= len(entries)
    assert all(name and name == name.strip() for name in headers)
