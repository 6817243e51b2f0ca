"""uWSGI's process model, as far as the reporting transport must know it.

uWSGI imports the application once, in its master (or, without a master, in the process that
then becomes worker 1), and forks the workers from C. That fork runs none of Python's fork
hooks (unless ``py-call-osafterfork`` or ``py-call-uwsgi-fork-hooks`` is set) and, unless
``py-call-uwsgi-fork-hooks`` is set, does not hold the GIL either. A Python thread that holds
the GIL, or waits for it, at that moment leaves the child's GIL owned by a thread that does
not exist there: the worker hangs in ``uwsgi_python_master_fixup`` (or at its first GIL
hand-over) and the master waits for it at shutdown. uWSGI forks at start and again whenever it
replaces a worker (``max-requests``, harakiri, a crash), so the one safe rule is that a process
which forks uWSGI workers runs no tomograph thread at all (:func:`forks_workers`). It queues
its spans, and worker 1 sends those queued before it was forked (:class:`Handoff`). The master
itself never sends: uWSGI runs no Python exit hook there either.

uWSGI calls ``uwsgi.post_fork_hook`` in every process it starts (workers, mules, spoolers, and
worker 1 itself when there is no master) once that process knows its id: the transport becomes
the process's own there (:func:`call_in_every_process`), whatever uWSGI's options.
"""

from __future__ import annotations

import mmap
import struct
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["Handoff", "call_in_every_process", "forks_workers", "threads_enabled", "worker_id"]

_hooked: list[Callable[[], None]] = []


def _embedded() -> Any:
    """uWSGI's embedded ``uwsgi`` module, or None outside uWSGI (it cannot be imported there)."""
    module = sys.modules.get("uwsgi")
    return module if module is not None and hasattr(module, "worker_id") else None


def worker_id() -> int:
    """This uWSGI worker's id (1 for the first); 0 outside uWSGI and in the master, mules and
    spoolers."""
    uwsgi = _embedded()
    try:
        return int(uwsgi.worker_id()) if uwsgi is not None else 0
    except Exception:
        return 0


def forks_workers() -> bool:
    """True in the uWSGI process that loads the application and forks the workers from C."""
    uwsgi = _embedded()
    if uwsgi is None:
        return False
    try:
        spooler = getattr(uwsgi, "i_am_the_spooler", lambda: False)()
        return not (uwsgi.worker_id() or uwsgi.mule_id() or spooler)
    except Exception:
        return False


def threads_enabled() -> bool:
    """False inside a uWSGI that runs Python threads only while a request runs Python code.

    That is uWSGI before 2.0.27 without ``--enable-threads`` (or ``--threads``): the worker
    keeps the GIL while it waits for requests.
    """
    uwsgi = _embedded()
    return uwsgi is None or bool(getattr(uwsgi, "has_threads", True))


def call_in_every_process(callback: Callable[[], None]) -> None:
    """Have uWSGI call ``callback`` in each process it starts from now on; nothing outside uWSGI.

    Joins ``uwsgidecorators``' post-fork chain when that module is loaded, otherwise chains
    whatever ``uwsgi.post_fork_hook`` holds. Importing ``uwsgidecorators`` later replaces the
    hook; the transport then notices the fork by itself, at its next pid check.
    """
    uwsgi = _embedded()
    if uwsgi is None or callback in _hooked:
        return
    _hooked.append(callback)
    chain = getattr(sys.modules.get("uwsgidecorators"), "postfork_chain", None)
    if isinstance(chain, list):
        chain.append(callback)
        return
    previous = getattr(uwsgi, "post_fork_hook", None)

    def post_fork_hook() -> None:
        try:
            callback()
        finally:
            if callable(previous):
                previous()

    uwsgi.post_fork_hook = post_fork_hook


class Handoff:
    """Whether worker 1 took over the spans its parent queued before forking it.

    A word of anonymous shared memory, made by the process that forks the workers, so that it
    sees what a worker writes. Worker 1 claims the spans once: a replacement worker 1 (after
    ``max-requests``, a crash) finds them claimed, and no two workers 1 run at once.
    """

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, 8)
        self._page[:8] = struct.pack("q", -1)

    def claim(self, count: int) -> bool:
        """In a forked process: True if it is worker 1 and takes over the first ``count`` spans."""
        if worker_id() != 1 or self.taken():
            return False
        self._page[:8] = struct.pack("q", count)
        return True

    def taken(self) -> bool:
        """True once worker 1 claimed the spans: the workers run."""
        claimed: int = struct.unpack("q", self._page[:8])[0]
        return claimed >= 0
