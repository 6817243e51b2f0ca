"""configure(), environment variables and backend URLs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import tomograph
from tomograph import config, sampling
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


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        # A service name that is not text was written as a number into the Zipkin JSON.
        ({"service": 123}, "service must be a string"),
        ({"service": b"svc"}, "service must be a string"),
        ({"service": "bad \udcff"}, "service is not valid text"),
        ({"backends": 5}, "backends must be a list"),
        ({"backends": [MemoryBackend]}, "is not a backend"),
        ({"sampler": sampling.AlwaysSampler}, "sampler must be a sampler"),
        ({"sampler": 0.5}, "sampler must be a sampler"),
        ({"sample_rate": "0.5"}, "sample_rate must be a number"),
        ({"sample_rate": True}, "sample_rate must be a number"),
        ({"sample_rate": float("nan")}, "sample_rate must be a number"),
        ({"trace_id_bits": 64.0}, "trace_id_bits must be 64 or 128"),
        ({"trace_id_bits": True}, "trace_id_bits must be 64 or 128"),
        ({"join_shared_spans": "no"}, "join_shared_spans must be True or False"),
        ({"propagation": 5}, "propagation"),
        ({"environ": 5}, "environ must be a mapping"),
        ({"environ": {"TOMOGRAPH_SERVICE": 5}}, "TOMOGRAPH_SERVICE must be a string"),
        ({"environ": {"TOMOGRAPH_SERVICE": "\udcff"}}, "TOMOGRAPH_SERVICE is not valid text"),
        ({"environ": {"TOMOGRAPH_PROPAGATION": 7}}, "TOMOGRAPH_PROPAGATION must be a string"),
    ],
)
def test_values_of_the_wrong_type_fail_at_configure_time(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(tomograph.ConfigurationError, match=message):
        tomograph.configure(**{"environ": {}, **arguments})


@pytest.mark.parametrize("text", ["0.0_1", "nan", "inf", "1e400", "\u0660.\u0665", "0x1", "1/2"])
def test_sample_rate_variable_must_be_a_plain_decimal(text: str) -> None:
    with pytest.raises(tomograph.ConfigurationError, match="TOMOGRAPH_SAMPLE_RATE must be"):
        tomograph.configure(environ={"TOMOGRAPH_SAMPLE_RATE": text})


@pytest.mark.parametrize(("text", "rate"), [(" 0.25 ", 0.25), ("1e-1", 0.1), (".5", 0.5)])
def test_sample_rate_variable_accepts_decimals(text: str, rate: float) -> None:
    tracer = tomograph.configure(environ={"TOMOGRAPH_SAMPLE_RATE": text})
    assert isinstance(tracer.sampler, ParentBasedSampler)
    assert isinstance(tracer.sampler.root, ProbabilisticSampler)
    assert tracer.sampler.root.rate == rate


def test_one_string_of_backends_is_a_comma_separated_list() -> None:
    tracer = tomograph.configure(backends="memory://, log://", environ={})
    assert [type(backend) for backend in tracer.backends] == [MemoryBackend, LogBackend]


def test_service_name_is_stripped_and_an_empty_one_falls_back() -> None:
    assert tomograph.configure(service="  svc ", environ={}).service_name == "svc"
    tracer = tomograph.configure(service=" ", environ={"TOMOGRAPH_SERVICE": "env"})
    assert tracer.service_name == "env"


def test_opentelemetrys_service_name_variable_is_the_fallback() -> None:
    # Services moving from OpenTelemetry's SDK already set OTEL_SERVICE_NAME.
    assert tomograph.configure(environ={"OTEL_SERVICE_NAME": " billing "}).service_name == "billing"
    both = {"OTEL_SERVICE_NAME": "otel", "TOMOGRAPH_SERVICE": "ours"}
    assert tomograph.configure(environ=both).service_name == "ours"
    assert tomograph.configure(service="given", environ=both).service_name == "given"


def test_tracer_refuses_a_service_name_that_is_not_text() -> None:
    with pytest.raises(TypeError, match="service_name must be a string"):
        tomograph.Tracer(123)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="trace_id_bits"):
        tomograph.Tracer("svc", trace_id_bits=64.0)  # type: ignore[arg-type]


def test_implicit_configuration_with_an_undecodable_service_name_keeps_working(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TOMOGRAPH_SERVICE", "bad \udcff")
    with tomograph.span("still works") as span:
        pass
    assert span.finished
    assert tomograph.get_tracer().service_name == "unknown_service"
    assert any("TOMOGRAPH_SERVICE" in r.getMessage() for r in caplog.records)


BACKENDS_WITH_PASSWORD = "zipkin+https://alice:s3cret-pw@zipkin.example/\udcff"


def test_an_undecodable_backends_variable_is_refused_without_showing_its_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The URL may carry user:password@: neither the error nor the implicit configuration's
    # log line may show it, whatever else is wrong with the variable.
    monkeypatch.setenv("TOMOGRAPH_BACKENDS", BACKENDS_WITH_PASSWORD)
    with pytest.raises(tomograph.ConfigurationError) as raised:
        tomograph.configure()
    where = BACKENDS_WITH_PASSWORD.index("\udcff") + 1
    assert (
        str(raised.value) == f"TOMOGRAPH_BACKENDS is not valid text: character {where} is not UTF-8"
    )
    config.reset()
    with tomograph.span("still works"):
        pass
    logged = [record.getMessage() for record in caplog.records]
    assert any("TOMOGRAPH_BACKENDS is not valid text" in line for line in logged)
    assert not any("s3cret-pw" in line for line in logged)


@pytest.mark.parametrize(
    ("url", "environ", "message"),
    [
        ("zipkin+http://127.0.0.1:9", {"TOMOGRAPH_ZIPKIN_TOKEN": 123}, "TOMOGRAPH_ZIPKIN_TOKEN"),
        ("otlp+http://127.0.0.1:9", {"TOMOGRAPH_OTLP_HEADERS": b"x=1"}, "TOMOGRAPH_OTLP_HEADERS"),
        ("zipkin+http://127.0.0.1:9?token_env=MINE", {"MINE": 123}, "MINE"),
        ("zipkin+http://127.0.0.1:9", {"TOMOGRAPH_ZIPKIN_TOKEN": "tok\udcff"}, "not valid text"),
    ],
)
def test_credential_variables_that_are_not_text_are_configuration_errors(
    url: str, environ: dict[str, Any], message: str
) -> None:
    # They were read with str methods: an AttributeError escaped configure().
    with pytest.raises(tomograph.ConfigurationError, match=message) as raised:
        tomograph.configure(backends=[url], environ=environ)
    assert "123" not in str(raised.value) and "x=1" not in str(raised.value)
    assert "tok" not in str(raised.value)


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


class HungCollectorBackend(MemoryBackend):
    """A backend whose collector never answers: close() spends all the time it is given."""

    def __init__(self, calls: list[tuple[str, float | None]]) -> None:
        super().__init__()
        self.calls = calls

    def flush(self, timeout: float | None = None) -> bool:
        self.calls.append(("flush", timeout))
        return False

    def close(self, timeout: float | None = None) -> None:
        self.calls.append(("close", timeout))
        threading.Event().wait(timeout)  # the answer that never comes


def test_replaced_backends_share_one_close_budget_and_all_start_sending_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each replaced backend was given the whole budget in turn: configure() blocked 2 s per
    # backend whose collector hung, and the backends after it had not been asked to send.
    monkeypatch.setattr(config, "REPLACED_BACKENDS_CLOSE_SECONDS", 0.3)
    calls: list[tuple[str, float | None]] = []
    tomograph.configure(backends=[HungCollectorBackend(calls) for _ in range(3)], environ={})
    tomograph.configure(backends=[], environ={})
    assert [kind for kind, _ in calls] == ["flush"] * 3 + ["close"] * 3
    closes = [timeout for kind, timeout in calls if kind == "close"]
    assert all(timeout is not None for timeout in closes)
    assert sum(closes) <= 0.3 * 1.05  # type: ignore[arg-type]


def test_the_environment_readers_read_the_variables_they_name() -> None:
    environ = {
        "TOMOGRAPH_SERVICE": " billing ",
        "TOMOGRAPH_COLLECTOR_TOKEN": "s3cret",
        "XDG_DATA_HOME": "/data",
    }
    assert config.service_from_environment(environ) == "billing"
    assert config.collector_token_from_environment(environ) == "s3cret"
    assert config.data_home(environ).as_posix() == "/data"
    assert config.service_from_environment({}) is None
    assert config.collector_token_from_environment({"TOMOGRAPH_COLLECTOR_TOKEN": ""}) is None


def test_only_config_reads_the_environment() -> None:
    import pathlib
    import re

    source = pathlib.Path(config.__file__).parent
    readers = re.compile(r"\bos\.environ\b|\bgetenv\(")
    found = [
        str(path.relative_to(source))
        for path in sorted(source.rglob("*.py"))
        if path.name != "config.py" and readers.search(path.read_text(encoding="utf-8"))
    ]
    # The one exception, named in config's list of variables: TOMOGRAPH_NO_EXTENSIONS chooses
    # the span hot path when tomograph is imported, below the layer config sits in.
    assert found == ["_accelerator.py"]
    assert "TOMOGRAPH_NO_EXTENSIONS" in (config.__doc__ or "")


def test_the_version_is_the_distribution_version() -> None:
    import importlib.metadata

    import tomograph

    assert importlib.metadata.version("tomograph-tracing") == tomograph.__version__


# -- tomograph run: integrations and the command's environment ---------------------------------


def test_integrations_from_environment_unset_means_every_default_one() -> None:
    assert config.integrations_from_environment({}) == (None, [])
    assert config.integrations_from_environment({"TOMOGRAPH_INSTRUMENT": " , "}) == (None, [])


def test_integrations_from_environment_reads_names_case_and_spaces_aside() -> None:
    environ = {"TOMOGRAPH_INSTRUMENT": " Flask,,REDIS ", "TOMOGRAPH_DISABLE": "celery, redis"}
    assert config.integrations_from_environment(environ) == (
        ["flask", "redis"],
        ["celery", "redis"],
    )


def test_integrations_from_environment_refuses_text_that_is_not_valid() -> None:
    with pytest.raises(tomograph.ConfigurationError, match="TOMOGRAPH_DISABLE is not valid text"):
        config.integrations_from_environment({"TOMOGRAPH_DISABLE": "flask,\udcff"})


def test_run_environment_puts_the_bootstrap_first_and_keeps_the_rest() -> None:
    environ = {"PYTHONPATH": "/app:/lib", "HOME": "/home/me", "TOMOGRAPH_SERVICE": "old"}
    environment = config.run_environment("/boot", {"TOMOGRAPH_SERVICE": "shop"}, environ)
    assert environment == {
        "PYTHONPATH": "/boot:/app:/lib",
        "HOME": "/home/me",
        "TOMOGRAPH_SERVICE": "shop",
    }
    assert environ["PYTHONPATH"] == "/app:/lib"  # the caller's mapping is not changed


def test_run_environment_without_pythonpath_adds_no_current_directory() -> None:
    assert config.run_environment("/boot", {}, {})["PYTHONPATH"] == "/boot"


def test_run_environment_keeps_empty_entries_and_the_bootstrap_once() -> None:
    # An empty entry means the current directory: it stays. A nested run adds nothing.
    environ = {"PYTHONPATH": "/boot::/app"}
    assert config.run_environment("/boot", {}, environ)["PYTHONPATH"] == "/boot::/app"
