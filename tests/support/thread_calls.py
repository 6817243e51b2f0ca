"""Record the calls a code path makes on the current thread, to state what a hot path does.

``sys.setprofile`` sees every Python call and every call into C on this thread, so a test can
assert that reporting a span does no I/O and never waits, instead of timing it.
"""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any

#: Where a thread blocks: waiting on an Event or a Condition, or reading an answer.
IN_A_WAIT = threading.Condition.wait.__code__
READING_AN_ANSWER = socket.SocketIO.readinto.__code__
#: Modules whose every call may wait on the network.
_NETWORK_MODULES = {"socket", "_socket", "ssl", "_ssl", "select", "selectors"}
#: Calls that wait on the clock or on another thread.
_WAITS = {
    "time.sleep",
    "threading.wait",  # Event.wait, Condition.wait
    "threading.join",
    "_thread.lock.acquire",
    "_thread.RLock.acquire",
}


def _c_name(function: Any) -> str:
    module = getattr(function, "__module__", None)
    if module is None:  # a method of a C type: name it after the type's module
        module = type(getattr(function, "__self__", None)).__module__
    return f"{module}.{function.__qualname__}"


@contextmanager
def recorded_calls() -> Iterator[list[str]]:
    """The calls made on this thread inside the block, as ``module.name`` strings.

    Python functions appear as ``module.function``, C functions as ``module.qualname``:
    ``builtins.len``, ``collections.deque.append``, ``time.sleep``.
    """
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(f"{frame.f_globals.get('__name__')}.{frame.f_code.co_name}")
        elif event == "c_call":
            name = _c_name(arg)
            if frame.f_code.co_name == "_is_owned":  # Condition's check: acquire(False)
                name += "(blocking=False)"
            calls.append(name)

    # Garbage left by earlier code is collected now and no collection runs inside the block:
    # finalizers of other objects (logging's handler weakref callbacks take an RLock) would be
    # recorded as the block's.
    gc.collect()
    collecting = gc.isenabled()
    gc.disable()
    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)
        if collecting:
            gc.enable()
        # Leaving the with block is recorded too (contextlib's __exit__ resuming this
        # generator): those calls are not the block's.
        if "contextlib.__exit__" in calls:
            del calls[len(calls) - 1 - calls[::-1].index("contextlib.__exit__") :]


def waiting_calls(calls: list[str]) -> list[str]:
    """Those of ``calls`` that can wait: network operations, sleeps, waits on other threads."""
    return [call for call in calls if call.split(".", 1)[0] in _NETWORK_MODULES or call in _WAITS]


def wait_until_blocked(thread: threading.Thread, code: CodeType = IN_A_WAIT) -> None:
    """Wait until ``thread`` is blocked in ``code`` (by default a ``Condition.wait``).

    It must be seen there twice with the GIL handed over between: a thread only about to block
    would have blocked by then. Fails after 10 s.
    """
    assert thread.ident is not None
    deadline = time.monotonic() + 10
    seen = 0
    while seen < 2:
        assert time.monotonic() < deadline, f"{thread.name} did not go back to its wait"
        frame = sys._current_frames().get(thread.ident)
        seen = seen + 1 if frame is not None and frame.f_code is code else 0
        time.sleep(0.005)


def all_at_once(count: int, work: Callable[[int], None], timeout: float = 30) -> None:
    """Run ``work(index)`` on ``count`` threads released together by a barrier; fail if one
    has not returned after ``timeout`` seconds."""
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread never returned"
