"""tomograph.eventlet pieces that need no monkey-patching: api, green threads, app log."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import eventlet
import eventlet.greenthread
import pytest

import tomograph
from tomograph.eventlet import _greenthreads, api, patcher
from tomograph.eventlet._applog import SpanNoteHandler
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.zipkin import ZipkinBackend


@pytest.fixture
def patched_spawn() -> Iterator[None]:
    _greenthreads.patch()
    yield
    _greenthreads.unpatch()


def test_api_notes_and_tags_go_to_the_current_span(memory: MemoryBackend) -> None:
    with tomograph.span("request"):
        api.put_annotation("Cache miss for /a")
        api.put_key_value("count", 3)
        api.put_key_value("ids", [1, 2])
    (span,) = memory.spans
    assert [n.value for n in span.annotations] == ["Cache miss for /a"]
    assert span.tags == {"count": 3, "ids": "[1, 2]"}


def test_api_outside_spans_does_nothing(memory: MemoryBackend) -> None:
    api.put_annotation("nobody listens")
    api.put_key_value("k", "v")
    assert memory.spans == []


def test_spawned_green_threads_continue_the_trace(
    memory: MemoryBackend, patched_spawn: None
) -> None:
    def work(label: str) -> str:
        with tomograph.span(label):
            return label

    with tomograph.span("request") as request:
        assert eventlet.spawn(work, "a").wait() == "a"
        pool = eventlet.GreenPool()
        pool.spawn_n(work, "b")
        pool.spawn(work, "c")
        eventlet.spawn_after(0.001, work, "d").wait()
        pool.waitall()
    children = {s.name: s.parent_id for s in memory.spans if s.name != "request"}
    assert children == dict.fromkeys("abcd", request.span_id)


def test_green_threads_spawned_outside_spans_start_clean(
    memory: MemoryBackend, patched_spawn: None
) -> None:
    assert eventlet.spawn(tomograph.current_span).wait() is None


def test_without_the_patch_green_threads_lose_the_span(memory: MemoryBackend) -> None:
    with tomograph.span("request"):
        assert eventlet.spawn(tomograph.current_span).wait() is None


def test_unpatch_restores_eventlets_functions() -> None:
    originals = (eventlet.spawn, eventlet.spawn_n, eventlet.greenthread.spawn_after)
    _greenthreads.patch()
    _greenthreads.patch()  # twice: still one layer
    assert eventlet.spawn is not originals[0]
    _greenthreads.unpatch()
    assert (eventlet.spawn, eventlet.spawn_n, eventlet.greenthread.spawn_after) == originals


def test_app_log_handler_skips_tomographs_own_records(memory: MemoryBackend) -> None:
    handler = SpanNoteHandler()
    app_log, own_log = logging.getLogger("some.app"), logging.getLogger("tomograph.reporting")
    app_log.addHandler(handler)
    own_log.addHandler(handler)
    try:
        with tomograph.span("request"):
            app_log.warning("user %s logged in", "ann")
            own_log.warning("collector down")
        app_log.warning("outside any span")
    finally:
        app_log.removeHandler(handler)
        own_log.removeHandler(handler)
    assert [n.value for n in memory.spans[0].annotations] == ["user ann logged in"]


def test_enable_and_disable_configure_the_default_tracer() -> None:
    tracer = patcher.enable_trace_patch(
        sampling_rate=0.5, service_name="svc", backends=["memory://"], trace_app_log=True
    )
    try:
        assert patcher.is_enabled()
        assert tomograph.get_tracer() is tracer
        assert tracer.service_name == "svc"
        assert any(isinstance(h, SpanNoteHandler) for h in logging.getLogger().handlers)
        import eventlet.wsgi

        assert "__tomograph_original__" in dir(eventlet.wsgi.Server.__init__)
    finally:
        patcher.disable_trace_patch()
    assert not patcher.is_enabled()
    assert not any(isinstance(h, SpanNoteHandler) for h in logging.getLogger().handlers)
    assert "__tomograph_original__" not in dir(eventlet.wsgi.Server.__init__)


def test_an_ipv6_collector_host_is_put_in_brackets() -> None:
    try:
        tracer = patcher.enable_trace_patch(host="::1", port=9411)
        [backend] = tracer.backends
        assert isinstance(backend, ZipkinBackend)
        assert backend.endpoint == "http://[::1]:9411/api/v2/spans"
    finally:
        patcher.disable_trace_patch(0)


def test_bad_sampling_rate_is_refused() -> None:
    with pytest.raises(tomograph.ConfigurationError, match="sample_rate"):
        patcher.enable_trace_patch(sampling_rate=2.0, backends=["memory://"])
    patcher.disable_trace_patch()
