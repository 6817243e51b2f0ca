"""The same spans go to Zipkin and statsd at once, through one configure() call."""

from __future__ import annotations

from pathlib import Path

import pytest

import tomograph
from support.statsd_graphite import StatsdGraphite
from support.zipkin_server import RecordingZipkinServer
from tomograph import config

pytestmark = pytest.mark.integration


def test_spans_reach_zipkin_and_statsd_and_stats_add_up(tmp_path: Path) -> None:
    with RecordingZipkinServer() as zipkin, StatsdGraphite(tmp_path) as graphite:
        tomograph.configure(
            service="Fanout",
            backends=[
                f"zipkin+{zipkin.url}?encoding=proto&interval=0.05",
                f"statsd://127.0.0.1:{graphite.statsd_port}?prefix=both&interval=0.05",
            ],
            environ={},
        )
        try:
            for _ in range(4):
                with tomograph.span("Render Page") as span:
                    span.annotate("cache hit")
            assert tomograph.flush(5)
            stats = tomograph.stats()
        finally:
            config.reset()
        spans = zipkin.wait_for(4)
        hits = graphite.wait_for_total("stats_counts.both.fanout.render_page.cache_hit", 4)
        timer_counts = graphite.wait_for_total("stats.timers.both.fanout.render_page.count", 4)
    # proto spans are recorded as decoded, i.e. as Zipkin stores them: names lower-cased
    assert [span["name"] for span in spans] == ["render page"] * 4
    assert {span["localEndpoint"]["serviceName"] for span in spans} == {"fanout"}
    assert sum(hits) == 4
    assert sum(timer_counts) == 4
    assert (stats["queued"], stats["sent"], stats["dropped"], stats["failed"]) == (8, 8, 0, 0)
    assert len(stats["backends"]) == 2
    assert zipkin.invalid == []
