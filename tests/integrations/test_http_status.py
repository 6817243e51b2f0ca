"""One status-to-error rule: servers fail on 5xx, clients on 4xx and 5xx."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

import tomograph
from tomograph.integrations.http_status import (
    CLIENT_ERRORS_FROM,
    SERVER_ERRORS_FROM,
    record_status,
)
from tomograph.sampling import never

statuses = st.integers(min_value=100, max_value=599)


@given(statuses)
def test_a_server_span_is_an_error_for_5xx_only(status: int) -> None:
    span = tomograph.Tracer("svc").start_span("GET")
    record_status(span, status, SERVER_ERRORS_FROM)
    assert span.error is (status >= 500)
    assert span.tags["http.status_code"] == status
    assert span.tags.get("error") == (str(status) if status >= 500 else None)


@given(statuses)
def test_a_client_span_is_an_error_for_4xx_and_5xx(status: int) -> None:
    span = tomograph.Tracer("svc").start_span("GET")
    record_status(span, status, CLIENT_ERRORS_FROM)
    assert span.error is (status >= 400)


def test_an_exception_message_is_not_replaced_by_the_status() -> None:
    span = tomograph.Tracer("svc").start_span("GET")
    span.record_exception(TimeoutError("backend slow"))
    record_status(span, 504, SERVER_ERRORS_FROM)
    assert span.tags["error"] == "backend slow"


def test_an_unsampled_span_is_flagged_and_records_nothing() -> None:
    span = tomograph.Tracer("svc", sampler=never()).start_span("GET")
    record_status(span, 500, SERVER_ERRORS_FROM)
    assert span.error and dict(span.tags) == {}
