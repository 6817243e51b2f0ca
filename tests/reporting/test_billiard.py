"""billiard's pool workers: a callback chained onto their exit runs, after the pool's own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tomograph.reporting import _billiard

billiard = pytest.importorskip("billiard")
billiard_pool = pytest.importorskip("billiard.pool")

# Set in the parent before the pool forks: the children inherit them.
_journal = Path()


def _write(line: str) -> None:
    with _journal.open("a") as journal:
        journal.write(f"{os.getpid()} {line}\n")


def _chain_ours() -> None:  # the pool's initializer: runs in each worker before its loop
    chained = _billiard.run_at_pool_worker_exit(lambda: _write("ours"))
    _write(f"chained {chained} started {_billiard.started_this_process()}")


def _pool_exit(pid: int, exitcode: int) -> None:
    _write("pool")


def _failing_pool_exit(pid: int, exitcode: int) -> None:
    _write("pool")
    raise RuntimeError("the pool's exit callback failed")


def _task() -> int:
    return os.getpid()


def _run_pool(tmp_path: Path, on_exit: object) -> dict[str, list[str]]:
    global _journal
    _journal = tmp_path / "journal"
    pool = billiard_pool.Pool(
        1,
        initializer=_chain_ours,
        maxtasksperchild=1,
        on_process_exit=on_exit,
        context=billiard.get_context("fork"),
    )
    try:
        pid = pool.apply_async(_task).get(timeout=30)
    finally:
        pool.close()
        pool.join()
    lines: dict[str, list[str]] = {}
    for line in _journal.read_text().splitlines():
        writer, what = line.split(" ", 1)
        lines.setdefault(writer, []).append(what)
    return {"ran the task": lines[str(pid)], **lines}


def test_outside_billiard_nothing_is_chained() -> None:
    assert _billiard.run_at_pool_worker_exit(lambda: None) is False
    assert _billiard.started_this_process() is False


def test_the_callback_runs_as_a_pool_worker_ends_after_the_pools_own(tmp_path: Path) -> None:
    journal = _run_pool(tmp_path, _pool_exit)
    assert journal["ran the task"] == ["chained True started True", "pool", "ours"]


def test_the_callback_runs_even_if_the_pools_own_raises(tmp_path: Path) -> None:
    journal = _run_pool(tmp_path, _failing_pool_exit)
    assert journal["ran the task"] == ["chained True started True", "pool", "ours"]
