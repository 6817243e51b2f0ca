"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest
from hypothesis import settings
from tests.support.servers import in_ci

import tomograph
from tomograph import config
from tomograph.reporting.memory import MemoryBackend

# Hypothesis's per-example deadline is a timing assertion: on a busy machine (CI runners, two
# cores shared by parallel jobs) it fails tests whose behaviour is right.
settings.register_profile("tomograph", deadline=None)
settings.load_profile("tomograph")

# pytest.importorskip's reason; under CI a missing test dependency is a broken install.
_MISSING_MODULE = "could not import"


def _fail_missing_module_in_ci(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and in_ci() and _MISSING_MODULE in str(report.longrepr):
        report.outcome = "failed"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Under ``CI=true`` a module skipped by ``pytest.importorskip`` fails instead."""
    report: pytest.CollectReport = yield
    _fail_missing_module_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under ``CI=true`` a test skipped by ``pytest.importorskip`` fails instead."""
    report: pytest.TestReport = yield
    _fail_missing_module_in_ci(report)
    return report


@pytest.fixture
def memory() -> Iterator[MemoryBackend]:
    """The default tracer, configured to keep spans in memory; reset afterwards."""
    backend = MemoryBackend()
    tomograph.configure(service="test-service", backends=[backend], environ={})
    yield backend
    config.reset()


@pytest.fixture
def tracer(memory: MemoryBackend) -> tomograph.Tracer:
    """The default tracer (reporting into ``memory``)."""
    return tomograph.get_tracer()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``compiled_only`` are left out of the pure-Python run.

    They compare the compiled hot path with the Python one, so there is nothing to run when the
    compiled one is switched off; leaving them out (rather than skipping them) keeps the rule
    that nothing is skipped under CI. The first test in tests/test_accelerator.py makes sure CI's
    first run really is the compiled one.
    """
    from tomograph.span import ACCELERATED

    if ACCELERATED:
        return
    kept = [item for item in items if item.get_closest_marker("compiled_only") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI nothing may be skipped: a skip there means an install step is missing."""
    from tests.support.servers import in_ci

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if in_ci() and skipped and exitstatus == 0:
        reporter.write_line(
            f"CI: {len(skipped)} test(s) skipped; under CI every test must run "
            "(scripts/install-system-deps.sh and the test extras install what they need)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
