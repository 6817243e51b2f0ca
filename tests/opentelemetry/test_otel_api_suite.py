"""OpenTelemetry's own API tests, run with tomograph as the implementation.

The ``tests`` folder of the opentelemetry-api sdist (see ``support/otel_api_tests.py``) runs in a
pytest process of its own with ``OTEL_PYTHON_CONTEXT=tomograph`` and ``OTEL_PROPAGATORS=tomograph``
(tomograph speaking W3C trace context and baggage, as the API's default propagators do): every
upstream case that touches the current context or the global propagator goes through tomograph's.
``otel_api_adapters.py`` runs in the same process: upstream cases written against one of the
API's own parts (the runtime context, the W3C propagators, the provider behind the proxy) with
tomograph's part swapped in.

The expected results are exact: which cases pass, per group, and which do not apply and why.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from tests.support.otel_api_tests import VERSION, upstream_api_tests
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.integration

ADAPTERS = "tests/opentelemetry/otel_api_adapters.py"
ENVIRONMENT = {
    "OTEL_PYTHON_CONTEXT": "tomograph",
    "OTEL_PROPAGATORS": "tomograph",
    "TOMOGRAPH_PROPAGATION": "w3c,baggage",
}

#: Upstream files whose cases go through a part tomograph provides (the runtime context behind
#: ``context.attach``/``get_current``, ``use_span`` and ``start_as_current_span``, the baggage API
#: on the current context, the global propagator). The other upstream files test the API's own
#: code (its data types, no-op classes, metrics, logs, loaders, helpers): they run too, under
#: tomograph's runtime context, and are counted apart.
THROUGH_TOMOGRAPH = (
    "tests/context/test_context.py",
    "tests/baggage/test_baggage.py",
    "tests/baggage/propagation/test_propagation.py",
    "tests/propagators/test_global_httptextformat.py",
    "tests/propagators/test_w3cbaggagepropagator.py",
    "tests/trace/test_globals.py",
    "tests/trace/test_tracer.py",
    "tests/trace/test_proxy.py",
)

_ENV_DEFAULT = "asserts the API's default when the variable is unset; this run sets it to tomograph"
_BAGGAGE_LOG = (
    "asserts a WARNING for dropped baggage; tomograph logs that at DEBUG (a header from the "
    "network must not be able to flood the application's log)"
)
_BAGGAGE_PROPERTIES = (
    "expects ';properties' inside the value; tomograph's value is the W3C value and keeps the "
    "properties apart (propagated unchanged)"
)
_BAGGAGE_180 = (
    "uses the API propagator's limit of 180 members; tomograph keeps W3C's 64 members and 8192 "
    "bytes, with no limit of its own per member"
)

#: The cases that do not apply to tomograph, and why; they are deselected.
NOT_APPLICABLE: dict[str, str] = {
    "tests/context/test_context.py::TestInitContext::test_load_runtime_context_default": (
        f"OTEL_PYTHON_CONTEXT: {_ENV_DEFAULT}"
    ),
    "tests/propagators/test_propagators.py::TestPropagators::"
    "test_default_composite_propagators": f"OTEL_PROPAGATORS: {_ENV_DEFAULT}",
    f"{ADAPTERS}::TestTomographTraceContextFormat::test_fields": (
        "patches opentelemetry.trace.get_current_span, which only the API's own propagator calls"
    ),
    f"{ADAPTERS}::TestTomographTraceContextFormat::test_headers_with_tracestate": (
        "counts exactly the received tracestate members in the injected header; tomograph "
        "adds its own member (key 'tomograph') in front, as W3C lets a vendor do"
    ),
    f"{ADAPTERS}::TestTomographTraceContextFormat::test_no_send_empty_tracestate": (
        "expects no tracestate header; tomograph always sends its own member"
    ),
    f"{ADAPTERS}::TestTomographTraceContextFormat::test_tracestate_header_exceeds_maximum_length": (
        "expects a warning from the API propagator's logger and the whole tracestate dropped "
        "past 8192 characters with padding; tomograph strips the optional whitespace and keeps "
        "the valid members"
    ),
    f"{ADAPTERS}::TestTomographTraceContextTextMapPropagator::"
    "test_extract_non_decimal_trace_flags": (
        "expects unknown trace-flags bits (0xA0) kept; W3C says a vendor does not propagate "
        "flags it does not understand, and tomograph keeps only the sampled bit"
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_valid_header_with_whitespace": (
        _BAGGAGE_PROPERTIES
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_valid_header_with_properties": (
        _BAGGAGE_PROPERTIES
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_header_with_invalid_value": _BAGGAGE_LOG,
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_header_too_long": _BAGGAGE_LOG,
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_extract_non_ascii_header": _BAGGAGE_LOG,
    f"{ADAPTERS}::TestTomographBaggagePropagator::"
    "test_extract_non_ascii_header_exceeds_byte_limit": _BAGGAGE_LOG,
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_inject_too_many_entries": _BAGGAGE_LOG,
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_inject_entry_too_long": _BAGGAGE_LOG,
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_inject_total_header_too_long": (
        _BAGGAGE_LOG
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_header_contains_too_many_entries": (
        _BAGGAGE_180
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_header_contains_pair_too_long": (
        _BAGGAGE_180
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::"
    "test_header_max_entries_skip_invalid_entry": _BAGGAGE_180,
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_extract_unquote_plus": (
        "expects percent-decoded keys; W3C keys are tokens ('%' is a token character), which "
        "tomograph keeps as sent"
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_inject_space_entries": (
        "expects a space written as '+'; in W3C baggage '+' is a plus sign, so tomograph writes %20"
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_inject_escaped_values": (
        "expects '=' in a value percent-encoded; W3C allows it as it is, and tomograph writes it so"
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_fields": (
        "patches opentelemetry.baggage.propagation.get_all, which only the API's own "
        "propagator calls"
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_inject_extract": (
        "patches the API's private baggage key after the runtime context has read it"
    ),
    f"{ADAPTERS}::TestTomographBaggagePropagator::test_encode_baggage_pairs": (
        "tests a function defined inside the test, no propagator"
    ),
}

#: How many cases pass, per group.
EXPECTED_PASSED = {
    "upstream, through tomograph's parts": 59,
    "upstream, the API's own code": 225,
    "upstream, adapted to tomograph's parts": 37,
    "the run's own guards": 2,
}


@dataclass
class Results:
    """What one pytest run reported: the outcome of each case, and the summary."""

    outcomes: dict[str, str] = field(default_factory=dict)
    deselected: int = 0
    output: str = ""

    def with_outcome(self, outcome: str) -> list[str]:
        return sorted(case for case, found in self.outcomes.items() if found == outcome)


def _group(case: str, upstream: str) -> str:
    if case.startswith(f"{ADAPTERS}::TestTheRunUsesTomograph::"):
        return "the run's own guards"
    if case.startswith(ADAPTERS):
        return "upstream, adapted to tomograph's parts"
    path = case.split("::", maxsplit=1)[0].removeprefix(upstream)
    if path in THROUGH_TOMOGRAPH:
        return "upstream, through tomograph's parts"
    return "upstream, the API's own code"


def _environment(upstream: str) -> dict[str, str]:
    # Only this run's OpenTelemetry and tomograph settings: none inherited from the caller's.
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "TOMOGRAPH_"))
    }
    # ``tests`` is OpenTelemetry's test package for the adapters too, in whatever order pytest
    # imports the modules.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT / upstream), os.environ.get("PYTHONPATH")]))
    return {**inherited, **ENVIRONMENT, "PYTHONPATH": path}


@pytest.fixture(scope="module")
def upstream() -> str:
    """The unpacked upstream folder, as a prefix of its cases' node ids."""
    return upstream_api_tests().relative_to(REPO_ROOT).as_posix() + "/"


@pytest.fixture(scope="module")
def results(upstream: str) -> Results:
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-rA", "--noconftest"),
            *("-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(REPO_ROOT)),
            *(f"--deselect={_resolve(case, upstream)}" for case in NOT_APPLICABLE),
            ADAPTERS,
            upstream + "tests",
        ],
        cwd=REPO_ROOT,
        env=_environment(upstream),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # The report without its list of passed cases: what failed, and the summary line.
    report = "\n".join(line for line in run.stdout.splitlines() if not line.startswith("PASSED"))
    found = Results(output=report[-20000:] + run.stderr[-4000:])
    for line in run.stdout.splitlines():
        outcome = re.match(r"(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+)", line)
        if outcome:
            found.outcomes[outcome[2]] = outcome[1]
    deselected = re.search(r"(\d+) deselected", run.stdout)
    found.deselected = int(deselected[1]) if deselected else 0
    return found


def _resolve(case: str, upstream: str) -> str:
    """A node id of ``NOT_APPLICABLE`` as the run spells it (upstream cases live under
    ``upstream``; pytest runs from that folder, with the repository as its root)."""
    return case if case.startswith(ADAPTERS) else upstream + case


def test_the_installed_api_is_the_version_whose_tests_run() -> None:
    from opentelemetry.version import __version__

    assert __version__ == VERSION, (
        f"opentelemetry-api {__version__} is installed; the expected results are for "
        f"{VERSION}'s tests: update support/otel_api_tests.py and this module together"
    )


def test_no_case_fails_errs_or_skips(results: Results) -> None:
    bad = {case: outcome for case, outcome in results.outcomes.items() if outcome != "PASSED"}
    assert results.outcomes, results.output
    assert bad == {}, results.output


def test_the_passing_cases_are_exactly_as_many_as_expected(results: Results, upstream: str) -> None:
    passed: dict[str, int] = dict.fromkeys(EXPECTED_PASSED, 0)
    for case in results.with_outcome("PASSED"):
        passed[_group(case, upstream)] += 1
    assert passed == EXPECTED_PASSED, results.output


def test_exactly_the_cases_that_do_not_apply_are_left_out(results: Results, upstream: str) -> None:
    ran = {_resolve(case, upstream) for case in NOT_APPLICABLE} & set(results.outcomes)
    assert ran == set()
    # Every listed case exists: pytest deselected as many as are listed.
    assert results.deselected == len(NOT_APPLICABLE), results.output
    assert all(reason.strip() for reason in NOT_APPLICABLE.values())
