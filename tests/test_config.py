"""configure(), environment variables and backend URLs."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

import tomograph
from tomograph import config
from tomograph.reporting.log import LogBackend
from tomograph.reporting.memory import MemoryBackend
from tomograph.sampling import ParentBasedSampler, ProbabilisticSampler


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    config.reset()
    yield
    config.reset()


def test_configure_sets_the_default_tracer() -> None:
    backend = MemoryBackend()
    tracer = tomograph.configure(service="billing", backends=[backend], environ={})
    assert tomograph.get_tracer() is tracer
    with tomograph.span("charge"):
        pass
    assert backend.names() == ["charge"]
    assert backend.spans[0].service_name == "billing"


def test_environment_supplies_what_is_not_passed() -> None:
    tracer = tomograph.configure(
        environ={
            "TOMOGRAPH_SERVICE": "from-env",
            "TOMOGRAPH_BACKENDS": "memory://?max_spans=10, log://?level=debug",
            "TOMOGRAPH_SAMPLE_RATE": "0.25",
        }
    )
    assert tracer.service_name == "from-env"
    memory, log = tracer.backends
    assert isinstance(memory, MemoryBackend) and memory.max_spans == 10
    assert isinstance(log, LogBackend) and log.level == logging.DEBUG
    assert isinstance(tracer.sampler, ParentBasedSampler)
    assert isinstance(tracer.sampler.root, ProbabilisticSampler)
    assert tracer.sampler.root.rate == 0.25


def test_arguments_win_over_environment() -> None:
    tracer = tomograph.configure(
        service="arg", backends=[], sample_rate=1.0, environ={"TOMOGRAPH_SERVICE": "env"}
    )
    assert tracer.service_name == "arg"
    assert tracer.backends == ()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TOMOGRAPH_SAMPLE_RATE": "often"}, "TOMOGRAPH_SAMPLE_RATE must be a number"),
        ({"TOMOGRAPH_SAMPLE_RATE": "2"}, "TOMOGRAPH_SAMPLE_RATE must be a number"),
        ({"TOMOGRAPH_BACKENDS": "carrier-pigeon://x"}, "TOMOGRAPH_BACKENDS: unknown backend"),
        ({"TOMOGRAPH_BACKENDS": "memory://?size=3"}, "unknown parameter 'size'"),
        ({"TOMOGRAPH_BACKENDS": "memory://?max_spans=0"}, "max_spans must be at least 1"),
        ({"TOMOGRAPH_BACKENDS": "log://?level=loud"}, "log level must be one of"),
    ],
)
def test_bad_values_fail_at_configure_time(environ: dict[str, str], message: str) -> None:
    with pytest.raises(tomograph.ConfigurationError, match=message):
        tomograph.configure(environ=environ)


def test_bad_arguments_fail_at_configure_time() -> None:
    with pytest.raises(tomograph.ConfigurationError, match="not a backend"):
        tomograph.configure(backends=[object()], environ={})  # type: ignore[list-item]
    with pytest.raises(tomograph.ConfigurationError, match="sample_rate must be"):
        tomograph.configure(sample_rate=7, environ={})
    with pytest.raises(tomograph.ConfigurationError, match="sampler or sample_rate"):
        tomograph.configure(sampler=lambda t, p: True, sample_rate=0.5, environ={})
    with pytest.raises(tomograph.ConfigurationError, match="trace_id_bits"):
        tomograph.configure(trace_id_bits=32, environ={})


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(tomograph.ConfigurationError, ValueError)
    assert issubclass(tomograph.ConfigurationError, tomograph.TracingError)


def test_implicit_configuration_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOMOGRAPH_SERVICE", "implicit")
    monkeypatch.setenv("TOMOGRAPH_BACKENDS", "memory://")
    tracer = tomograph.get_tracer()
    assert tracer.service_name == "implicit"
    assert isinstance(tracer.backends[0], MemoryBackend)


def test_implicit_configuration_with_bad_env_logs_and_keeps_working(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TOMOGRAPH_SAMPLE_RATE", "lots")
    with tomograph.span("still works") as span:
        pass
    assert span.finished
    assert tomograph.get_tracer().backends == ()
    assert any("TOMOGRAPH_SAMPLE_RATE" in r.getMessage() for r in caplog.records)


def test_reconfiguring_closes_backends_that_are_not_reused() -> None:
    closed: list[str] = []

    class Tracked(MemoryBackend):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def close(self, timeout: float | None = None) -> None:
            closed.append(self.name)

    kept, dropped = Tracked("kept"), Tracked("dropped")
    tomograph.configure(backends=[kept, dropped], environ={})
    tomograph.configure(backends=[kept], environ={})
    assert closed == ["dropped"]


def test_backend_from_url_names_known_schemes() -> None:
    with pytest.raises(tomograph.ConfigurationError, match=r"memory://"):
        config.backend_from_url("nonsense")
