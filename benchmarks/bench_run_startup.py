"""What ``tomograph run`` adds to a Python program's start, beside ``opentelemetry-instrument``.

Every Python process a traced command starts pays the bootstrap (``sitecustomize``: importing
tomograph and watching the supported libraries); the libraries themselves are patched only
when imported, so ``import requests`` pays its patch too. Each case is the median wall time of
whole processes. "tomograph" runs the program with the bootstrap on ``PYTHONPATH`` (what
``tomograph run`` gives it); "tomograph run" adds the command's own Python start before its
exec. OpenTelemetry's ``opentelemetry-instrument`` runs with its exporters off.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import tomograph
from _harness import Result, print_table

RUNS = 21
BIN = Path(sys.executable).parent
BOOTSTRAP = str(Path(tomograph.__file__).resolve().parent / "_bootstrap")
PROGRAMS = {"python -c pass": "pass", "python -c 'import requests'": "import requests"}


def _environment(**variables: str) -> dict[str, str]:
    kept = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TOMOGRAPH_", "OTEL_")) and name != "PYTHONPATH"
    }
    return {**kept, "TOMOGRAPH_BACKENDS": "memory://", **variables}


def _median_us(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    results = []
    otel = shutil.which("opentelemetry-instrument", path=str(BIN))
    for case, code in PROGRAMS.items():
        python = [sys.executable, "-c", code]
        results.append(Result(case, "no tracing", _median_us(python, _environment())))
        with_bootstrap = _environment(PYTHONPATH=BOOTSTRAP)
        results.append(Result(case, "tomograph", _median_us(python, with_bootstrap)))
        run = [str(BIN / "tomograph"), "run", "--", *python]
        results.append(Result(case, "tomograph run", _median_us(run, _environment())))
        if otel is not None:
            quiet = _environment(
                OTEL_TRACES_EXPORTER="none",
                OTEL_METRICS_EXPORTER="none",
                OTEL_LOGS_EXPORTER="none",
            )
            results.append(Result(case, "opentelemetry", _median_us([otel, *python], quiet)))
    print_table(f"process start, median of {RUNS} runs (µs)", results, baseline="no tracing")


if __name__ == "__main__":
    main()
