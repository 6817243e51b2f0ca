"""The default tracer over time: decorators applied at import, reconfiguration, first calls
from many threads at once."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tomograph
from support.http_recorder import recording_server
from support.thread_calls import all_at_once
from support.zipkin_server import RecordingZipkinServer
from tomograph import config
from tomograph.encoding import zipkin_json
from tomograph.propagation import Propagator, composite
from tomograph.reporting.memory import MemoryBackend
from tomograph.reporting.zipkin import ZipkinBackend
from tomograph.sampling import rate_limited


@pytest.fixture(autouse=True)
def _reset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("TOMOGRAPH_"):
            monkeypatch.delenv(name)
    config.reset()
    yield
    config.reset()


def run_unconfigured(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` with no TOMOGRAPH_ variable set; it must succeed."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TOMOGRAPH_")}
    completed = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed


def run_python(code: str) -> Any:
    """Run ``code`` in a fresh interpreter (nothing configured yet); its last line as JSON."""
    completed = run_unconfigured("-c", textwrap.dedent(code))
    return json.loads(completed.stdout.strip().splitlines()[-1])


# -- decorators applied before configure() --------------------------------------------------


def test_function_decorated_at_import_reports_to_the_tracer_configured_later() -> None:
    result = run_python(
        """
        import json
        import tomograph
        from tomograph.reporting import MemoryBackend

        @tomograph.span("decorated")
        def a(): pass

        m = MemoryBackend()
        tomograph.configure(service="svc", backends=[m])
        a()
        print(json.dumps([[s.name, s.service_name] for s in m.spans]))
        """
    )
    assert result == [["decorated", "svc"]]


def test_readme_tour_then_testing_own_instrumentation_sees_both_spans() -> None:
    # The README's tour configures log://, decorates load_cart, samples; then its "Test your
    # own instrumentation" section configures a MemoryBackend and runs the code.
    result = run_python(
        """
        import json
        import tomograph
        from tomograph import sampling
        from tomograph.reporting import MemoryBackend

        tomograph.configure(service="checkout", backends=["log://"])

        with tomograph.span("charge card", kind="client") as span:
            span.tag("amount", 12.5)
            span.annotate("card accepted")

        @tomograph.span("load cart")
        def load_cart(user_id): ...

        tomograph.configure(sample_rate=0.1)
        tomograph.configure(sampler=sampling.parent_based(sampling.rate_limited(50)))

        def run_the_code():
            load_cart(7)
            with tomograph.span("charge card", kind="client") as span:
                span.tag("amount", 12.5)

        memory = MemoryBackend()
        tomograph.configure(service="svc", backends=[memory])
        run_the_code()
        print(json.dumps(memory.names()))
        """
    )
    assert result == ["load cart", "charge card"]


def _plain() -> str:
    return "plain"


async def _coroutine() -> str:
    return "coroutine"


def _generator() -> Iterator[str]:
    yield "generator"


def _call(func: Callable[[], Any]) -> Any:
    value = func()
    if inspect.iscoroutine(value):
        return asyncio.run(value)
    if isinstance(value, Iterator):
        [item] = list(value)  # to the end: the span covers the whole iteration
        return item
    return value


@pytest.mark.parametrize("func", [_plain, _coroutine, _generator])
def test_decorator_made_before_configure_uses_the_tracer_and_service_of_each_call(
    func: Callable[[], Any],
) -> None:
    decorated = tomograph.span("work", tags={"k": 1})(func)  # no configure() yet
    first, second = MemoryBackend(), MemoryBackend()
    tomograph.configure(service="first", backends=[first], environ={})
    _call(decorated)
    tomograph.configure(service="second", backends=[second], environ={})
    assert _call(decorated) == func.__name__.lstrip("_")
    assert [(s.name, s.service_name, s.tags) for s in first.spans] == [("work", "first", {"k": 1})]
    assert [(s.name, s.service_name) for s in second.spans] == [("work", "second")]


def test_decorator_keeps_an_explicit_local_endpoint() -> None:
    endpoint = tomograph.Endpoint("pinned")
    decorated = tomograph.span("work", local_endpoint=endpoint)(_plain)
    memory = MemoryBackend()
    tomograph.configure(service="svc", backends=[memory], environ={})
    decorated()
    assert memory.spans[0].service_name == "pinned"


def test_decorator_of_an_explicit_tracer_stays_with_that_tracer() -> None:
    own = MemoryBackend()
    tracer = tomograph.Tracer("own", backends=[own])
    decorated = tracer.span("work")(_plain)
    tomograph.configure(service="default", backends=[MemoryBackend()], environ={})
    decorated()
    assert [(s.name, s.service_name) for s in own.spans] == [("work", "own")]


def test_decorating_spends_no_trace_of_a_rate_limited_sampler() -> None:
    memory = MemoryBackend()
    frozen = rate_limited(1, clock=lambda: 0.0)  # one trace, and time never refills it
    tracer = tomograph.Tracer("svc", backends=[memory], sampler=frozen)
    decorated = tracer.span("work")(_plain)
    decorated()
    decorated()
    assert memory.names() == ["work"]  # the first call got the one trace, not the template


def test_default_tracer_decorator_spends_no_trace_of_a_rate_limited_sampler() -> None:
    memory = MemoryBackend()
    tomograph.configure(backends=[memory], sampler=rate_limited(1, clock=lambda: 0.0), environ={})
    decorated = tomograph.span("work")(_plain)
    decorated()
    assert memory.names() == ["work"]


# -- reconfiguring while spans are open -------------------------------------------------------


def test_span_open_during_configure_is_delivered_by_the_new_configuration() -> None:
    with RecordingZipkinServer() as server:
        tomograph.configure(service="svc", backends=[ZipkinBackend(server.url)], environ={})
        retired = tomograph.get_tracer().backends[0]
        memory = MemoryBackend()
        with tomograph.span("open across configure"):
            tomograph.configure(service="svc", backends=[memory], environ={})
        assert memory.names() == ["open across configure"]
        assert retired.stats()["dropped"] == 0  # type: ignore[attr-defined]


def test_spans_finished_before_configure_with_no_backend_are_counted_in_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No TOMOGRAPH_BACKENDS: the first span makes a default tracer without backends. Spans it
    # finished cannot be delivered once configure() sets backends up; they must not vanish
    # without a word.
    for _ in range(3):
        with tomograph.span("traced at import"):
            pass
    with caplog.at_level(logging.WARNING, logger="tomograph"):
        tomograph.configure(service="svc", backends=[MemoryBackend()], environ={})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("3 spans" in message and "configure()" in message for message in warnings)


def test_configure_warns_of_no_lost_spans_when_none_finished_before_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tomograph.span("open across configure"):
        with caplog.at_level(logging.WARNING, logger="tomograph"):
            memory = MemoryBackend()
            tomograph.configure(service="svc", backends=[memory], environ={})
    assert memory.names() == ["open across configure"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


SPAWNED_CHILD_APP = """
import multiprocessing, sys
import tomograph

def work():
    for _ in range(5):
        with tomograph.span("in the child"):
            pass

def configure_child():
    tomograph.configure(service="child", backends=["memory://"])

if __name__ == "__main__":
    method, configured_child = sys.argv[1], sys.argv[2] == "configured"
    tomograph.configure(service="app", backends=["memory://"])
    if sys.argv[2] == "off":  # tracing turned off again: the child is missing nothing
        tomograph.configure(service="app", backends=[])
    context = multiprocessing.get_context(method)
    with context.Pool(1, initializer=configure_child if configured_child else None) as pool:
        pool.apply(work)
    print("parent done")
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_started_anew_that_traces_unconfigured_says_so_once(
    method: str, tmp_path: Path
) -> None:
    # A child of these start methods is a new interpreter: the parent's configure() (under
    # if __name__ == "__main__") never ran there, and its spans would vanish without a word.
    app = tmp_path / "app.py"
    app.write_text(SPAWNED_CHILD_APP)
    completed = run_unconfigured(str(app), method, "unconfigured")
    assert completed.stdout.strip() == "parent done"
    warnings = [line for line in completed.stderr.splitlines() if "no backend set up" in line]
    assert len(warnings) == 1, completed.stderr  # once, not per span
    assert "configured tomograph" in warnings[0] and "initializer" in warnings[0]
    configured = run_unconfigured(str(app), method, "configured")
    assert "no backend set up" not in configured.stderr
    off = run_unconfigured(str(app), method, "off")
    assert "no backend set up" not in off.stderr


def test_a_process_that_never_configured_tracing_is_not_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # tracing without backends on purpose (a library traced, an application that does not
    # report) is no loss to warn of: only a process started by a configured one is told
    with caplog.at_level(logging.WARNING, logger="tomograph"):
        with tomograph.span("not reported"):
            pass
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_reset_forgets_the_mark_configure_leaves_for_child_processes() -> None:
    tomograph.configure(service="svc", backends=[MemoryBackend()])
    assert os.environ[config.ENV_CONFIGURED_IN] == str(os.getpid())
    config.reset()
    assert config.ENV_CONFIGURED_IN not in os.environ


def test_a_configuration_from_a_given_mapping_leaves_the_process_environment_alone() -> None:
    tomograph.configure(service="svc", backends=[MemoryBackend()], environ={})
    assert config.ENV_CONFIGURED_IN not in os.environ


UNRELATED_PROGRAM = """
import subprocess, sys
import tomograph
tomograph.configure(service="app", backends=["memory://"])
{reconfigure}
tool = "import tomograph\\nwith tomograph.span('in a tool that never configures'): pass"
sys.exit(subprocess.run([sys.executable, "-c", tool]).returncode)
"""


@pytest.mark.parametrize(
    "reconfigure", ["", "tomograph.configure(service='app', backends=[])"], ids=["on", "off"]
)
def test_programs_a_configured_process_runs_are_not_warned(reconfigure: str) -> None:
    # another program (a tool whose libraries trace, unconfigured on purpose) inherits the
    # variable too, but is no multiprocessing child; nor is a child of a process that turned
    # tracing off again missing anything
    completed = run_unconfigured("-c", UNRELATED_PROGRAM.format(reconfigure=reconfigure))
    assert "no backend set up" not in completed.stderr


FORKED_WORKER = """
import os, sys
import tomograph
for _ in range(3):
    with tomograph.span("traced by the master at import, before configure()"):
        pass
pid = os.fork()
if pid == 0:
    with tomograph.span("traced by the worker before configure()"):
        pass
    tomograph.configure(service="worker", backends=["memory://"])
    os._exit(0)
os.waitpid(pid, 0)
tomograph.configure(service="master", backends=["memory://"])
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_worker_counts_only_the_spans_it_lost_itself() -> None:
    completed = run_unconfigured("-c", FORKED_WORKER)
    counts = sorted(
        line.split(" spans finished before configure()")[0].rsplit(" ", 1)[-1]
        for line in completed.stderr.splitlines()
        if "spans finished before configure()" in line
    )
    assert counts == ["1", "3"], completed.stderr  # the worker's own, and the master's


def test_spans_racing_reconfiguration_are_all_delivered_or_counted() -> None:
    with recording_server() as server:
        backends: list[ZipkinBackend] = []

        def reconfigure() -> None:
            backend = ZipkinBackend(server.url, interval=0.05)
            # Start its worker here: this test is about configure(), not about eight threads
            # racing to start a transport's worker on their first report.
            backend.flush(0)
            backends.append(backend)
            tomograph.configure(service="svc", backends=[backend], environ={})

        reconfigure()
        workers_count, phases = 8, 5
        reconfiguring = threading.Barrier(workers_count + 1)
        reconfigured = threading.Barrier(workers_count + 1)
        made: list[int] = []
        errors: list[BaseException] = []

        def make_spans() -> None:
            count = 0
            try:
                for _ in range(phases):
                    # The parent is open across configure(); the children race it.
                    with tomograph.span("parent"):
                        reconfiguring.wait(30)
                        for _ in range(50):
                            with tomograph.span("child"):
                                pass
                        reconfigured.wait(30)
                    count += 51
            except BaseException as error:
                errors.append(error)
            made.append(count)

        workers = [threading.Thread(target=make_spans) for _ in range(workers_count)]
        for worker in workers:
            worker.start()
        for _ in range(phases):
            reconfiguring.wait(30)
            reconfigure()
            reconfigured.wait(30)
        for worker in workers:
            worker.join(30)
        assert tomograph.flush(10)
        received = {
            span["id"]
            for request in list(server.requests)
            for span in zipkin_json.decode_spans(request.body)
        }
        # A span being handed to a backend at the very instant configure() closed it is
        # counted as dropped there; every other span arrives.
        dropped = sum(backend.stats()["dropped"] for backend in backends)
        assert not errors
        assert len(received) + dropped == sum(made)


# -- interpreter exit ---------------------------------------------------------------------------


def test_the_first_span_traced_at_exit_is_delivered() -> None:
    # An exit hook of the application traces the process's first span: tracing is configured
    # from the environment there, while the exit hooks run, too late to add exit hooks then.
    with RecordingZipkinServer() as server:
        run_python(
            f"""
            import atexit, json, os
            import tomograph

            os.environ["TOMOGRAPH_BACKENDS"] = "zipkin+{server.url}"

            def goodbye():
                with tomograph.span("traced at exit"):
                    pass

            atexit.register(goodbye)
            print(json.dumps(None))
            """
        )
        assert [span["name"] for span in server.spans] == ["traced at exit"]


def test_the_exit_closes_the_default_tracers_backends_once() -> None:
    closes = run_python(
        """
        import atexit, json

        closes = []
        atexit.register(lambda: print(json.dumps(closes)))  # first registered: runs last
        import tomograph

        class Backend:
            def report(self, span): pass
            def flush(self, timeout=None): return True
            def close(self, timeout=None): closes.append("closed")

        tomograph.configure(service="svc", backends=[Backend()], environ={})
        """
    )
    assert closes == ["closed"]


# -- the first calls, from many threads at once -----------------------------------------------


def test_first_calls_from_32_threads_make_one_implicit_tracer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOMOGRAPH_BACKENDS", "memory://")
    tracers: list[tomograph.Tracer] = []
    errors: list[BaseException] = []

    def first_call(n: int) -> None:
        try:
            if n % 3 == 0:
                tracers.append(tomograph.get_tracer())
            elif n % 3 == 1:
                with tomograph.span("first") as span:
                    tracers.append(span.tracer)
            else:
                tomograph.start("svc", "classic")
                tracers.append(tomograph.get_tracer())
                tomograph.stop("classic")
        except BaseException as error:
            errors.append(error)

    all_at_once(32, first_call)
    assert not errors
    assert len({id(tracer) for tracer in tracers}) == 1
    (memory,) = tracers[0].backends
    assert isinstance(memory, MemoryBackend)
    assert sorted(memory.names()) == ["classic"] * 10 + ["first"] * 11


def test_configure_racing_first_spans_loses_none() -> None:
    memory = MemoryBackend()
    made: list[tomograph.Span] = []
    errors: list[BaseException] = []

    def first_call(n: int) -> None:
        try:
            if n % 2:
                tomograph.configure(service="svc", backends=[memory], environ={})
            else:
                with tomograph.span(f"span {n}") as span:
                    made.append(span)
        except BaseException as error:
            errors.append(error)

    all_at_once(32, first_call)
    assert not errors
    # A span started on the implicit tracer (no backends in this environment) and finished
    # before the first configure() went nowhere, by design; every other span is in memory.
    expected = {span.name for span in made if span.tracer.backends}
    assert expected <= set(memory.names())


def test_configured_propagation_wins_over_a_racing_first_lookup() -> None:
    # A request thread looks up the default propagator for the first time (reading the
    # environment) while the application calls configure(propagation=...): the configured
    # formats must win, whatever the interleaving.
    composite.set_default_propagator(None)
    looking_up = threading.Event()
    configured = threading.Event()

    def slow_first_lookup() -> Propagator:
        looking_up.set()
        configured.wait(10)
        return Propagator()

    composite.set_default_propagator_factory(slow_first_lookup)
    request = threading.Thread(target=composite.default_propagator, name="request")
    request.start()
    assert looking_up.wait(10)
    tomograph.configure(propagation="b3", backends=[], environ={})
    configured.set()
    request.join(10)
    assert composite.default_propagator().inject_formats == ("b3",)


def test_reset_racing_configure_leaves_the_tracer_and_propagator_of_one_call() -> None:
    # reset() is paused between forgetting the tracer and forgetting the propagator while
    # another thread configures: the pair left must not mix the two calls (the configured
    # tracer with the environment's propagator).
    tomograph.configure(service="first", propagation="jaeger", backends=[], environ={})
    paused = threading.Event()
    configured = threading.Event()
    original = composite.set_default_propagator

    def pausing_set(propagator: Propagator | None) -> None:
        if propagator is None and threading.current_thread().name == "reset":
            paused.set()
            configured.wait(2)  # with the fix configure() cannot finish meanwhile: bounded
        original(propagator)

    composite.set_default_propagator = pausing_set  # type: ignore[assignment]
    try:
        resetting = threading.Thread(target=config.reset, name="reset")
        resetting.start()
        assert paused.wait(10)
        configuring = threading.Thread(
            target=lambda: (
                tomograph.configure(service="second", propagation="b3", backends=[], environ={}),
                configured.set(),
            )
        )
        configuring.start()
        resetting.join(10)
        configuring.join(10)
    finally:
        composite.set_default_propagator = original  # type: ignore[assignment]
    assert not resetting.is_alive() and not configuring.is_alive()
    assert tomograph.get_tracer().service_name == "second"
    assert composite.default_propagator().inject_formats == ("b3",)


def test_configure_racing_readers_from_32_threads_leaves_a_matching_pair() -> None:
    # Each configure() call names its service after its formats; readers look both up all the
    # while, some after reset() (reading the environment). At the end the two belong together.
    formats = ["w3c", "b3", "jaeger", "xtraceinfo", "b3single"]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for round_ in range(20):
                name = formats[(n + round_) % len(formats)]
                if n % 4 == 0:
                    tomograph.configure(service=name, propagation=name, backends=[], environ={})
                elif n % 4 == 1 and round_ % 5 == 0:
                    config.reset()
                else:
                    composite.default_propagator()
                    tomograph.get_tracer()
        except BaseException as error:
            errors.append(error)

    all_at_once(32, worker, timeout=60)
    assert not errors
    service = tomograph.get_tracer().service_name
    injected = composite.default_propagator().inject_formats
    if service in formats:
        assert injected == (service,)
    else:  # the last call was reset(): both come from the (empty) environment
        assert service == "unknown_service"
        assert injected == composite.DEFAULT_INJECT


def test_the_first_span_neither_imports_propagation_nor_keeps_it_from_the_environment() -> None:
    # A span configures tracing from the environment without loading the propagation formats
    # (a third of import time); propagation used afterwards still reads TOMOGRAPH_PROPAGATION.
    result = run_python(
        """
        import json, os, sys
        os.environ["TOMOGRAPH_PROPAGATION"] = "b3single"
        import tomograph
        with tomograph.span("first"):
            pass
        loaded = "tomograph.propagation.composite" in sys.modules
        headers = {}
        with tomograph.span("call", kind="client"):
            tomograph.add_trace_info_header(headers)
        print(json.dumps([loaded, sorted(headers)]))
        """
    )
    assert result == [False, ["b3"]]


def test_propagation_used_first_reads_the_environment_and_configures_tracing() -> None:
    result = run_python(
        """
        import json, os
        os.environ["TOMOGRAPH_PROPAGATION"] = "jaeger"
        os.environ["TOMOGRAPH_SERVICE"] = "from-env"
        from tomograph.propagation import composite
        from tomograph.tracer import default_tracer_or_none
        formats = composite.default_propagator().inject_formats
        print(json.dumps([formats, default_tracer_or_none().service_name]))
        """
    )
    assert result == [["jaeger"], "from-env"]


def test_the_module_level_span_takes_the_parameters_of_span() -> None:
    # tomograph.span is written out for speed; its parameters must stay Span's (after tracer).
    import inspect

    theirs = list(inspect.signature(tomograph.Span).parameters.values())[1:]
    ours = list(inspect.signature(tomograph.span).parameters.values())
    assert [(p.name, p.default, p.kind) for p in ours] == [
        (p.name, p.default, p.kind) for p in theirs
    ]
