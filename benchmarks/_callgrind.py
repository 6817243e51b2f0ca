"""Instructions per operation, counted by valgrind's callgrind instead of timed.

A count of executed instructions does not move when the machine is busy, so it compares two
libraries on a loaded machine where microseconds would not. The program under test runs an
operation ``n`` times (after a warm-up of its own, with the garbage collector off) and exits;
it runs twice, for ``small`` and ``large`` iterations, and the difference divided by
``large - small`` is the cost of one operation, without the interpreter's start-up, imports and
set-up, which both runs share.

    >>> per_op = instructions_per_op(lambda n: ["python", "bench_x.py", "--count", str(n)])
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

#: ``(small, large)`` for operations of a few thousand instructions: two runs of one program
#: differ by a million instructions or two (start-up is not quite deterministic), which the
#: default 500 iterations of difference would spread as +-4,000 over each operation.
MANY_ITERATIONS = (1000, 11000)

_TOTAL = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def available() -> bool:
    """True if valgrind is on the PATH."""
    return shutil.which("valgrind") is not None


def instructions(argv: Sequence[str]) -> int:
    """Instructions executed by the whole program ``argv`` (all its threads)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        # A fixed hash seed: dict and set layouts, and so the instructions, repeat run to run.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            check=False,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if run.returncode:
            raise RuntimeError(f"{argv} failed:\n{run.stderr[-3000:]}")
        with open(out, "rb") as file:
            match = _TOTAL.search(file.read())
    if match is None:
        raise RuntimeError(f"no instruction total in callgrind's output for {argv}")
    return int(match.group(1))


def instructions_per_op(
    argv_for: Callable[[int], Sequence[str]], small: int = 100, large: int = 600
) -> float:
    """Instructions of one operation: the program ``argv_for(n)`` runs it ``n`` times."""
    with ThreadPoolExecutor(2) as pool:
        few, many = pool.map(instructions, (argv_for(small), argv_for(large)))
    return (many - few) / (large - small)


def run_counted(operation: Callable[[], object], iterations: int, warm_up: int = 300) -> None:
    """What a program under :func:`instructions_per_op` does: ``operation`` ``warm_up`` times
    (caches filled, lazy imports done), then ``iterations`` times with the garbage collector
    off (a collection landing in one run and not the other would count as the operation's)."""
    for _ in range(warm_up):
        operation()
    gc.collect()
    gc.disable()
    for _ in range(iterations):
        operation()


if __name__ == "__main__":
    # python benchmarks/_callgrind.py SMALL LARGE -- PROGRAM ARGS... ; "{n}" in ARGS is
    # replaced by the number of iterations.
    small, large, _, *program = sys.argv[1:]
    result = instructions_per_op(
        lambda n: [arg.replace("{n}", str(n)) for arg in program], int(small), int(large)
    )
    print(f"{result:.0f} instructions per operation")
