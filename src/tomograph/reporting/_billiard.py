"""billiard's process model (Celery's prefork pool), as far as the reporting transport must know it.

billiard is multiprocessing's fork for Celery. It shares multiprocessing's registries (its
``util`` module re-exports ``register_after_fork``, ``Finalize`` and the finalizer registry), so
the "after fork" callbacks the transport registers with multiprocessing run in billiard's
children too. But a billiard *pool* worker never reaches those exit finalizers: its worker loop
ends (``--max-tasks-per-child``, ``--max-memory-per-child``, autoscale, the pool's shutdown, a
SIGTERM) in ``os._exit()``, and the last Python it runs is the pool's ``on_exit`` callback
(Celery's ``worker_process_shutdown`` signal). :func:`run_at_pool_worker_exit` chains onto it.

Nothing here imports billiard: it is looked up in ``sys.modules``, where it is once it forks.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["run_at_pool_worker_exit", "started_this_process"]


def _current_child() -> Any:
    """billiard's object for this process if billiard started it, else None."""
    process = sys.modules.get("billiard.process")
    if process is None:
        return None
    try:
        current = process.current_process()
    except Exception:
        return None
    # billiard's main process object has no parent pid; a process it started has its parent's.
    return current if getattr(current, "_parent_pid", None) is not None else None


def started_this_process() -> bool:
    """True in a process that billiard started (a pool worker or any other child)."""
    return _current_child() is not None


def run_at_pool_worker_exit(callback: Callable[[], object]) -> bool:
    """In a billiard pool worker: have ``callback`` run as the worker ends, on its way to
    ``os._exit()``, after the pool's own ``on_exit`` callback. True if this is such a worker.

    ``callback`` runs even if the pool's callback raises; an error in ``callback`` itself is
    the caller's to handle.
    """
    worker_class: Any = getattr(sys.modules.get("billiard.pool"), "Worker", None)
    # The process's target is the pool's Worker (Celery subclasses it): a callable object
    # whose exit path calls its on_exit attribute.
    worker: Any = getattr(_current_child(), "_target", None)
    if worker_class is None or not isinstance(worker, worker_class):
        return False
    previous = getattr(worker, "on_exit", None)

    def on_exit(pid: int, exitcode: int) -> None:
        try:
            if previous is not None:
                previous(pid, exitcode)
        finally:
            callback()

    try:
        worker.on_exit = on_exit
    except Exception:  # a Worker that does not take it: nothing to chain onto
        return False
    return True
