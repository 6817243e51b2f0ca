"""The statsd backend: names, packing, sampling, and metrics arriving in Graphite for real."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.servers import free_port
from support.statsd_graphite import StatsdGraphite
from support.thread_calls import recorded_calls, waiting_calls
from tomograph import ConfigurationError, Tracer, config
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.statsd import StatsdBackend, StatsdSender, metric_segment
from tomograph.span import Span


def _span(name: str = "op", notes: tuple[str, ...] = (), service: str = "svc") -> Span:
    memory = MemoryBackend()
    span = Tracer(service, backends=[memory]).start_span(name, timestamp_us=1_000_000)
    for note in notes:
        span.annotate(note)
    span.finish(1_012_345)
    return span


@given(st.text())
def test_metric_segments_use_only_safe_characters(text: str) -> None:
    segment = metric_segment(text)
    assert segment and set(segment) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
    assert not segment.startswith("_") and not segment.endswith("_")


def test_lines_are_a_timer_in_ms_and_a_counter_per_note() -> None:
    sender = StatsdSender(prefix="Prod.Web")
    span = _span("GET /users/{id}", ("cache miss", "retry"), service="Accounts")
    assert sender.lines(span) == [
        "prod.web.accounts.get_users_id:12.345|ms",
        "prod.web.accounts.get_users_id.cache_miss:1|c",
        "prod.web.accounts.get_users_id.retry:1|c",
    ]


def test_dogstatsd_tags_and_sample_rate_are_appended() -> None:
    sender = StatsdSender(dogstatsd_tags=True, sample_rate=0.5)
    assert sender.lines(_span("q", ("hit",))) == [
        "svc.q:12.345|ms|@0.5|#service:svc,span:q",
        "svc.q.hit:1|c|@0.5|#service:svc,span:q",
    ]


@given(st.integers(64, 2000), st.integers(1, 60))
def test_datagrams_stay_within_max_packet_and_carry_every_line(limit: int, count: int) -> None:
    sender = StatsdSender(max_packet=limit)
    spans = [_span(f"operation-{index}", ("a", "b")) for index in range(count)]
    payloads = sender.encode(spans)
    assert all(len(payload) <= limit for _, payload in payloads)
    assert sum(spans_in for spans_in, _ in payloads) == count
    lines = [line for _, payload in payloads for line in payload.decode().split("\n")]
    assert lines == [line for span in spans for line in sender.lines(span)]


def test_sampling_sends_about_the_rate_and_accounts_for_all() -> None:
    sender = StatsdSender(sample_rate=0.25)
    payloads = sender.encode([_span() for _ in range(2000)])
    sent_lines = sum(payload.count(b"\n") + 1 for _, payload in payloads if payload)
    assert 350 < sent_lines < 650
    assert sum(count for count, _ in payloads) == 2000


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("statsd://127.0.0.1:8125?sample_rate=0", "sample_rate"),
        ("statsd://127.0.0.1:8125?max_packet=10", "max_packet"),
        ("statsd://127.0.0.1:8125?tags=influx", "tags must be dogstatsd"),
        ("statsd://127.0.0.1:8125?prefx=a", "unknown parameter"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        config.backend_from_url(url)


def test_closed_port_never_reaches_the_application_and_spans_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    backend = config.backend_from_url(f"statsd://127.0.0.1:{port}?interval=0.02&batch_size=1")
    tracer = Tracer("svc", backends=[backend])
    with tracer.span("op"):  # the first span starts the worker
        pass
    with recorded_calls() as calls:
        for _ in range(199):
            with tracer.span("op"):
                pass
    assert waiting_calls(calls) == []  # no socket call, no wait on the application thread
    assert backend.flush(5)
    stats = backend.stats()
    assert stats["queued"] == 200 == stats["sent"] + stats["failed"] + stats["dropped"]
    assert stats["failed"] >= 1  # ICMP port unreachable surfaces as ECONNREFUSED
    refused = [r.getMessage() for r in caplog.records if "refused spans" in r.getMessage()]
    assert len(refused) == 1 and "ConnectionRefusedError" in refused[0]  # once, however many
    backend.close(1)


def test_forked_children_sample_differently() -> None:
    backend = StatsdBackend(sample_rate=0.5)
    spans = [_span() for _ in range(64)]
    patterns = []
    for _ in range(3):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: which of the same 64 spans would it send?
            signal.alarm(10)  # a hang fails the test instead of blocking it
            os.close(read_end)
            sender = backend.sender
            kept = "".join("1" if sender.encode([span])[0][1] else "0" for span in spans)
            os.write(write_end, kept.encode())
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            patterns.append(pipe.read())
        os.waitpid(pid, 0)
    assert len(set(patterns)) == 3, "forked workers would sample the same spans"
    backend.close(0)


@pytest.fixture(scope="module")
def graphite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatsdGraphite]:
    with StatsdGraphite(Path(tmp_path_factory.mktemp("graphite"))) as running:
        yield running


@pytest.mark.integration
def test_timers_and_counters_arrive_in_graphite(graphite: StatsdGraphite) -> None:
    backend = config.backend_from_url(
        f"statsd://127.0.0.1:{graphite.statsd_port}?prefix=it&interval=0.05"
    )
    tracer = Tracer("Billing", backends=[backend])
    for _ in range(3):
        span = tracer.start_span("Charge Card", timestamp_us=5_000_000)
        span.annotate("declined")
        span.finish(5_020_000)  # 20 ms
    assert backend.flush(5)
    backend.close(1)
    assert backend.stats()["sent"] == 3
    counts = graphite.wait_for_total("stats_counts.it.billing.charge_card.declined", 3)
    assert sum(counts) == 3
    # statsd keeps flushing idle timers (count 0, no upper) after the first flush: sum and max.
    assert max(graphite.wait_for_series("stats.timers.it.billing.charge_card.upper")) == 20.0
    assert sum(graphite.wait_for_total("stats.timers.it.billing.charge_card.count", 3)) == 3.0
    assert "stats.timers.it.billing.charge_card.mean" in graphite.metric_names()
