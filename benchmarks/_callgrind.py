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

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

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


if __name__ == "__main__":
    # python benchmarks/_callgrind.py SMALL LARGE -- PROGRAM ARGS... ; "{n}" in ARGS is
    # replaced by the number of iterations.
    small, large, _, *program = sys.argv[1:]
    result = instructions_per_op(
        lambda n: [arg.replace("{n}", str(n)) for arg in program], int(small), int(large)
    )
    print(f"{result:.0f} instructions per operation")
