"""The HTTP sender's reading of collector answers: Retry-After, 413, statuses, broken answers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.zipkin_server import RecordingZipkinServer
from tomograph import Tracer
from tomograph.encoding.zipkin_json import CONTENT_TYPE, encode_spans
from tomograph.reporting._http import HttpSender, parse_retry_after
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.transport import SendError


@given(st.text(max_size=40))
def test_any_retry_after_is_a_delay_or_none(value: str) -> None:
    delay = parse_retry_after(value)
    assert delay is None or (delay >= 0 and not math.isnan(delay))


@pytest.mark.parametrize("value", ["²", "٣", "\uff11", "-1", "1.5", "soon", "Sun, 06 Nov 99999"])
def test_retry_after_that_is_no_ascii_number_or_date_is_ignored(value: str) -> None:
    assert parse_retry_after(value) is None


def _sender(url: str) -> HttpSender:
    return HttpSender("zipkin", f"{url}/api/v2/spans", CONTENT_TYPE, encode_spans, timeout=5)


def _payload() -> bytes:
    memory = MemoryBackend()
    with Tracer("svc", backends=[memory]).span("op"):
        pass
    return encode_spans(memory.spans)


@pytest.mark.parametrize(
    ("status", "retryable", "too_large", "bad_content"),
    [
        (400, False, False, True),
        (401, False, False, False),
        (404, False, False, False),
        (408, True, False, False),
        (413, False, True, False),
        (415, False, False, False),
        (422, False, False, True),
        (429, True, False, False),
        (503, True, False, False),
        (507, True, False, False),
    ],
)
def test_each_status_says_whether_to_retry_or_split(
    status: int, retryable: bool, too_large: bool, bad_content: bool
) -> None:
    with RecordingZipkinServer() as server:
        server.faults.append(("status", status, None, b"the collector's own words"))
        sender = _sender(server.url)
        with pytest.raises(SendError) as raised:
            sender.send(_payload())
        sender.close()
    error = raised.value
    assert (error.retryable, error.too_large, error.bad_content) == (
        retryable,
        too_large,
        bad_content,
    )
    assert error.reason == f"HTTP {status}"  # the log-once key: never the server's words
    assert "the collector's own words" in str(error)  # the message may show them


def test_a_413_lowers_max_bytes_to_half_the_refused_body_but_not_below_64_kib() -> None:
    with RecordingZipkinServer() as server:
        server.limit_bytes = 1000
        sender = _sender(server.url)
        for size, expected in [(400_000, 200_000), (300_000, 150_000), (20_000, 65_536)]:
            with pytest.raises(SendError):
                sender.send(b"[" + b" " * (size - 2) + b"]")
            assert sender.max_bytes == expected
        sender.close()
