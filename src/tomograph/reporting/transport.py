"""The background batching transport: spans leave the application thread in O(1), always.

:class:`BatchingTransport` takes finished spans on the application thread with one length check
and one ``deque.append`` (atomic under the GIL: no lock, no I/O, no formatting). A daemon worker
wakes every ``interval`` seconds, or as soon as ``batch_size`` spans wait, encodes batches with
its :class:`Sender` and sends them, retrying connection errors, 5xx and 429 with exponential
backoff and jitter (honouring ``Retry-After``). The queue is bounded: when it is full, new spans
are dropped and counted, never waited for.

Fork safety (see docs/backends.md for every server): a child made by ``os.fork()`` (gunicorn,
multiprocessing) gets an empty queue and its own worker through :func:`os.register_at_fork`; the
parent sends what it had queued. Children of multiprocessing's fork and forkserver methods end
with ``os._exit()``: they flush in multiprocessing's exit finalizers, as ``atexit`` never runs
there. In a process that forks uWSGI workers from C no worker thread ever starts (a thread there
can hang the workers; see :mod:`tomograph.reporting._uwsgi`): spans wait there, worker 1 sends
those queued before the fork, and uWSGI's post-fork hook makes the transport each process's
own. Any other fork from C is noticed by a pid check on the transport's slow path, which a
report takes once per batch and once a second (or ``interval``): a system call, never made per
span.

Every span ends up in exactly one of ``sent``, ``dropped`` (queue full or transport closed),
``failed`` (given up after retries, or refused by the collector) or still pending, so
``queued == sent + failed + pending`` and nothing is lost silently.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import math
import os
import random
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tomograph.clock import monotonic_ns
from tomograph.reporting import _uwsgi

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = ["BatchingTransport", "SendError", "Sender", "TransportBackend", "TransportStats"]

_log = logging.getLogger("tomograph.reporting")

#: How long the interpreter's exit hook waits, in total, for transports that no tracer closed.
EXIT_FLUSH_SECONDS = 2.0


class SendError(Exception):
    """A payload could not be delivered.

    ``retryable`` is True for connection errors, timeouts, 5xx and 429; ``retry_after`` is the
    delay the server asked for (seconds), if any.
    """

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Sender(Protocol):
    """Encodes batches of spans and delivers payloads: what a backend plugs into the transport."""

    #: A short name for logs and stats, e.g. ``zipkin http://127.0.0.1:9411``.
    name: str

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        """Payloads for ``spans`` as (number of spans in it, bytes), each within size limits."""
        ...

    def send(self, payload: bytes) -> None:
        """Deliver one payload or raise :class:`SendError`. Runs on the worker only."""
        ...

    def reset(self) -> None:
        """Forget connections and sockets (after a fork: they belong to the parent)."""
        ...

    def close(self) -> None:
        """Release connections and sockets."""
        ...


class TransportStats(dict[str, int]):
    """A snapshot of a transport's counters (a plain dict of ints).

    ``queued`` spans handed to the transport, ``sent`` delivered, ``dropped`` refused because
    the queue was full (or the transport closed), ``failed`` given up on, ``pending`` still waiting,
    ``batches`` payloads delivered, ``bytes`` bytes delivered, ``retries`` payload retries.
    """


_transports: weakref.WeakSet[BatchingTransport] = weakref.WeakSet()


def _count_value(counter: itertools.count[int]) -> int:
    # itertools.count advances atomically in C (safe from any thread, no lock); its repr is
    # the only way to read it without advancing it.
    return int(repr(counter)[6:-1])


class BatchingTransport:
    """Queues spans on the application thread and sends them in batches from a daemon worker.

    >>> from tomograph.reporting.memory import MemoryBackend
    >>> class Discard:
    ...     name = 'discard'
    ...     def encode(self, spans): return [(len(spans), b'')]
    ...     def send(self, payload): pass
    ...     def reset(self): pass
    ...     def close(self): pass
    >>> transport = BatchingTransport(Discard())
    >>> transport.flush(1.0)
    True
    >>> transport.close(1.0)

    ``queue_size`` bounds the spans waiting (default 10,000); ``batch_size`` spans, or whatever
    waits after ``interval`` seconds, make one batch (the sender splits payloads that exceed
    its byte limit). A payload is tried at most ``1 + max_retries`` times, with backoff from
    ``backoff`` seconds doubling up to ``max_backoff``, all within ``retry_deadline`` seconds.
    """

    def __init__(
        self,
        sender: Sender,
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        interval: float = 1.0,
        max_retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        retry_deadline: float = 30.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        times = (interval, backoff, max_backoff, retry_deadline)
        if not all(math.isfinite(value) for value in times):
            # an infinite wait overflows the worker's timed wait and kills the worker thread
            raise ValueError("interval, backoff times and retry_deadline must be finite numbers")
        if interval <= 0 or backoff < 0 or max_backoff < 0 or retry_deadline < 0:
            raise ValueError("interval must be positive; backoff times must not be negative")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.sender = sender
        self.queue_size = queue_size
        self.batch_size = min(batch_size, queue_size)
        self.interval = interval
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry_deadline = retry_deadline
        self._closed = False
        self._random = random.Random()
        self._logged: set[str] = set()
        #: A report checks the pid once this long (at most 1 s) after the last check, and once
        #: per batch: a fork from C is found at the first span after that.
        self._check_every_ns = int(min(interval, 1.0) * 1e9)
        self._init_state(os.getpid())
        if _uwsgi.forks_workers():
            self._park()
        _transports.add(self)
        _uwsgi.call_in_every_process(_start_in_uwsgi_process)
        _flush_at_multiprocessing_exit(in_child_now=True)

    def _init_state(self, pid: int) -> None:
        """Fresh queue, worker slot, locks and counters (at start and in a forked child)."""
        self._pid = pid
        self._queue: deque[Span] = deque()
        #: Spans up to this length are appended with no further check. Zero until the worker
        #: runs, so the first report takes the slow path and starts it.
        self._wake_at = 0
        self._worker: threading.Thread | None = None
        self._wakeup = threading.Event()
        self._changed = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._stop = False
        self._taken = 0
        self._dropped = itertools.count()  # advanced from any thread: atomic in C
        self._discarded = 0  # still queued when the transport was closed
        self._sent = self._failed = self._batches = self._bytes = self._retries = 0
        self._failing = False
        #: A report whose span ended at or after this (monotonic ns) checks the pid first.
        self._check_at = monotonic_ns() + self._check_every_ns
        #: True in a process that forks uWSGI workers: spans wait, no worker starts (see _park).
        self._parked = False
        #: Shared with the process that forks uWSGI workers, and with its children until they
        #: know whether the spans it queued before forking are theirs to send (_settle_handoff).
        self._handoff: _uwsgi.Handoff | None = None
        self._inherited = 0

    # -- application thread -----------------------------------------------------------------

    def report(self, span: Span) -> None:
        """Queue a finished span: O(1), no lock, no I/O, never raises, never blocks.

        A full queue drops the span and counts it in ``dropped``.
        """
        queue = self._queue
        # The end time is already in the span: comparing it costs no clock read (~20 ns a span,
        # a pid check per span would cost ~250 ns) and sends a report per second to the slow
        # path, where a fork from C shows.
        if len(queue) < self._wake_at and span.end_ns < self._check_at:
            queue.append(span)
        else:
            self._report_slow(span)

    def _report_slow(self, span: Span) -> None:
        # Reached once per batch (the worker is idle and ``batch_size`` spans wait), once a
        # second, when the queue is full, and after close; never per span otherwise.
        try:
            if self._closed:
                next(self._dropped)
                return
            if span.end_ns >= self._check_at or not (self._parked or self._wakeup.is_set()):
                self._check_pid()
            if self._parked:
                if self._handoff is not None and self._handoff.taken():
                    self._drop_in_uwsgi_master()
                    return
            elif not self._wakeup.is_set():
                self._wake_worker()
            queue = self._queue
            if len(queue) < self.queue_size:
                queue.append(span)
            else:
                next(self._dropped)
        except Exception:  # never let the transport break the application
            next(self._dropped)
            self._log_once("report", "tomograph: queueing a span failed", exc_info=True)

    def _check_pid(self) -> None:
        """Become this process's own transport if it was forked without Python's fork hooks."""
        if self._pid != os.getpid():  # a system call: at most once per batch and per second
            self._after_fork(python_hooks=False)
        elif not self._parked:
            self._check_at = monotonic_ns() + self._check_every_ns
        elif not _uwsgi.forks_workers():  # worker 1 of a uWSGI without master, hook replaced
            self._unpark()

    def _drop_in_uwsgi_master(self) -> None:
        next(self._dropped)
        self._log_once(
            "uwsgi master",
            "tomograph: spans traced in the uWSGI master after it started its workers cannot be "
            "sent (uWSGI runs no Python at the master's exit, and a thread there could hang the "
            "workers): they are dropped; trace in the workers",
        )

    # -- worker -----------------------------------------------------------------------------

    def _wake_worker(self) -> None:
        """Start the worker if none runs, and have it send what waits now."""
        if self._handoff is not None and not self._parked:
            self._settle_handoff()  # before any send: inherited spans may not be ours
        self._ensure_worker()
        if self._worker is not None:
            # Until the worker has taken what waits, append freely up to the bound.
            self._wake_at = self.queue_size
        self._wakeup.set()

    def _ensure_worker(self) -> None:
        if self._worker is not None or self._stop or self._parked:
            return
        if not _uwsgi.threads_enabled():
            self._log_once(
                "uwsgi threads",
                "tomograph: uWSGI runs without Python threads: spans to %s leave only while "
                "this worker runs Python code (a request) and at exit; run uWSGI with "
                "--enable-threads (the default from uWSGI 2.0.27)",
                self.sender.name,
            )
        worker = threading.Thread(
            target=self._run, name=f"tomograph {self.sender.name}", daemon=True
        )
        try:
            worker.start()
        except RuntimeError:  # at interpreter shutdown: flush() sends inline instead
            return
        self._worker = worker
        self._wake_at = self.batch_size

    def _run(self) -> None:
        wakeup = self._wakeup
        while True:
            wakeup.wait(self.interval)
            wakeup.clear()
            if self._stop:  # close() flushed within its budget; what is left is counted there
                return
            self._wake_at = self.batch_size
            try:
                self._drain(deadline=None)
            except Exception:  # a bug in an encoder must not kill the worker
                self._log_once("worker", "tomograph: reporting worker error", exc_info=True)

    def _take_batch(self) -> list[Span]:
        queue = self._queue
        batch: list[Span] = []
        popleft = queue.popleft
        with self._changed:
            for _ in range(min(self.batch_size, len(queue))):
                batch.append(popleft())
            self._taken += len(batch)
            self._in_flight += len(batch)
        return batch

    def _drain(self, deadline: float | None) -> None:
        """Send everything queued now; ``deadline`` (monotonic) bounds retries when flushing."""
        while self._queue:
            batch = self._take_batch()
            if not batch:
                break
            try:
                self._send_batch(batch, deadline)
            finally:
                with self._changed:
                    self._in_flight -= len(batch)
                    self._changed.notify_all()
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0)  # let other threads (or eventlet/gevent greenlets) run between batches

    def _send_batch(self, batch: list[Span], deadline: float | None) -> None:
        try:
            payloads = self.sender.encode(batch)
        except Exception:
            self._failed += len(batch)
            self._log_once("encode", "tomograph: encoding spans failed", exc_info=True)
            return
        for count, payload in payloads:
            if self._deliver(payload, deadline):
                self._sent += count
                self._batches += 1
                self._bytes += len(payload)
            else:
                self._failed += count

    def _deliver(self, payload: bytes, deadline: float | None) -> bool:
        started = time.monotonic()
        give_up = started + self.retry_deadline
        if deadline is not None:
            give_up = min(give_up, deadline)
        attempt = 0
        while True:
            try:
                self.sender.send(payload)
            except SendError as error:
                if not error.retryable:
                    self._log_once(
                        f"refused {error}",
                        "tomograph: %s refused spans, not retrying: %s",
                        self.sender.name,
                        error,
                    )
                    return False
                if attempt >= self.max_retries or (self._stop and deadline is None):
                    self._note_failure(error)
                    return False
                delay = self._backoff_delay(attempt, error.retry_after)
                if time.monotonic() + delay > give_up:
                    self._note_failure(error)
                    return False
                attempt += 1
                self._retries += 1
                time.sleep(delay)
                continue
            except Exception as error:
                self._note_failure(error)
                return False
            if self._failing:
                self._failing = False
                _log.info("tomograph: %s is accepting spans again", self.sender.name)
            return True

    def _backoff_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_backoff)
        # Full jitter: spread retries of many processes after a collector restart.
        ceiling = min(self.max_backoff, self.backoff * (2**attempt))
        return self._random.uniform(ceiling / 2, ceiling)

    def _note_failure(self, error: BaseException) -> None:
        if not self._failing:
            self._failing = True
            _log.warning("tomograph: sending spans to %s failed: %s", self.sender.name, error)

    def _log_once(self, key: str, message: str, *args: Any, exc_info: bool = False) -> None:
        if key not in self._logged:
            self._logged.add(key)
            _log.warning(message, *args, exc_info=exc_info)

    # -- flush, close, fork -----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds until every queued span was sent or given up on.

        Returns True if nothing is pending any more. Safe from any thread; without a running
        worker (at interpreter exit) it sends inline.
        """
        try:
            self._check_pid()
            if self._handoff is not None and not self._parked:
                self._settle_handoff()
            deadline = None if timeout is None else time.monotonic() + timeout
            if self._worker is None and not self._stop:
                self._ensure_worker()
            worker = self._worker
            if worker is None or not worker.is_alive() or worker is threading.current_thread():
                self._drain(deadline if deadline is not None else time.monotonic() + 30.0)
                return not self._queue and not self._in_flight
            self._wakeup.set()
            with self._changed:
                while self._queue or self._in_flight:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._changed.wait(0.05 if remaining is None else min(remaining, 0.05))
                    if self._queue and not self._wakeup.is_set():
                        self._wakeup.set()
            return True
        except Exception:
            self._log_once("flush", "tomograph: flush failed", exc_info=True)
            return False

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout``, stop the worker, release the sender. Later spans are dropped.

        Spans still queued when the time is up are counted as ``dropped``.
        """
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake_at = 0  # every later report takes the slow path and is dropped
        self._stop = True
        self._wakeup.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(0.5)
        with self._changed:  # the worker takes batches under the same lock
            leftover = len(self._queue)
            self._queue.clear()
            self._taken += leftover
            self._discarded += leftover
        try:
            self.sender.close()
        except Exception:
            pass

    def _after_fork(self, python_hooks: bool) -> None:
        """Become this process's own transport: new worker, locks, counters, connections.

        ``python_hooks``: Python's at-fork hooks run this (the parent forked with ``os.fork``).
        """
        inherited = self._queue
        parent_parked, handoff = self._parked, self._handoff
        self._init_state(os.getpid())
        if parent_parked:
            # The parent forks uWSGI workers and never sends while they run: its spans are
            # worker 1's to send. A fork made with uWSGI's Python fork hooks runs this before
            # uWSGI tells the child its worker id, so the choice may have to wait for it.
            self._queue.extend(inherited)
            self._inherited = len(inherited)
            self._handoff = handoff
            if not python_hooks:
                self._settle_handoff()
        elif not python_hooks:
            # Forked from C without hooks: spans queued by this process since the fork cannot
            # be told apart from the parent's, so all are sent (duplicates beat losses).
            self._queue.extend(inherited)
        try:
            self.sender.reset()
        except Exception:
            pass
        self._logged.clear()

    def _park(self) -> None:
        """Queue spans but start no worker: this process forks uWSGI workers (see _uwsgi).

        Every report checks the pid meanwhile (a system call per span, in this process only):
        so a worker whose post-fork hook did not run notices the fork at its first span.
        """
        self._parked = True
        self._handoff = _uwsgi.Handoff()
        self._wake_at = self.queue_size
        self._check_at = 0

    def _unpark(self) -> None:
        self._parked = False
        self._handoff = None
        self._wake_at = 0  # the next report starts the worker
        self._check_at = monotonic_ns() + self._check_every_ns

    def _settle_handoff(self) -> None:
        """In a child of a process that forks uWSGI workers: keep the spans it queued before
        the fork if this is worker 1, the one to send them; otherwise let them go."""
        handoff, self._handoff = self._handoff, None
        count, self._inherited = self._inherited, 0
        if handoff is None or handoff.claim(count):
            return
        self._forget_oldest(count)

    def _forget_oldest(self, count: int) -> None:
        # Spans worker 1 sends: they leave this process's counters with the queue.
        with self._changed:
            for _ in range(min(count, len(self._queue))):
                self._queue.popleft()

    def _start_in_uwsgi_process(self) -> None:
        """In a process uWSGI started: become its transport and send what waits, now."""
        if self._pid != os.getpid():
            self._after_fork(python_hooks=False)
        elif self._parked:  # worker 1 of a uWSGI without master: it forked the others by now
            self._unpark()
        elif self._handoff is not None:  # Python's fork hooks ran before the worker had its id
            self._settle_handoff()
        if self._queue and not self._closed:
            self._wake_worker()

    # -- reading ----------------------------------------------------------------------------

    def stats(self) -> TransportStats:
        """The counters as a dict; see :class:`TransportStats`.

        ``queued == sent + dropped + failed + pending`` holds at any quiet moment.
        """
        pending = len(self._queue)
        refused = _count_value(self._dropped)
        return TransportStats(
            queued=self._taken + pending + refused,
            sent=self._sent,
            dropped=refused + self._discarded,
            failed=self._failed,
            pending=pending + self._in_flight,
            batches=self._batches,
            bytes=self._bytes,
            retries=self._retries,
        )

    def __repr__(self) -> str:
        return f"BatchingTransport({self.sender.name!r}, queue_size={self.queue_size})"


def _reset_in_child() -> None:
    for transport in list(_transports):
        transport._after_fork(python_hooks=True)
    # Still inside os.fork(): a multiprocessing child forgets its finalizers after this.
    _flush_at_multiprocessing_exit(in_child_now=False)


def _start_in_uwsgi_process() -> None:
    for transport in list(_transports):
        try:
            transport._start_in_uwsgi_process()
        except Exception:  # a post-fork hook must not stop uWSGI's worker from starting
            _log.warning("tomograph: starting a transport in a uWSGI process failed", exc_info=True)


def _flush_all_at_exit(budget: float = EXIT_FLUSH_SECONDS) -> None:
    deadline = time.monotonic() + budget
    for transport in list(_transports):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not transport._closed:
            transport.flush(remaining)


# multiprocessing's fork and forkserver children end with os._exit(): no atexit hook runs there,
# multiprocessing's own exit finalizers do. A child forgets the finalizers registered before its
# start, but runs its "after fork" callbacks after that: the finalizer is added from there.
_after_fork_registered_pid = 0
_finalizer_pid = 0


def _flush_at_multiprocessing_exit(in_child_now: bool) -> None:
    """Make every multiprocessing child started from now on flush at its exit; with
    ``in_child_now`` this process too, if it is such a child (and started)."""
    global _after_fork_registered_pid
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return  # multiprocessing is not in use (a child made later imports it first)
    if _after_fork_registered_pid != os.getpid():
        _after_fork_registered_pid = os.getpid()
        util.register_after_fork(_add_exit_finalizer, _add_exit_finalizer)
    process = sys.modules.get("multiprocessing.process")
    if in_child_now and process is not None and process.parent_process() is not None:
        _add_exit_finalizer()


def _add_exit_finalizer(_: object = None) -> None:
    global _finalizer_pid
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _finalizer_pid != os.getpid():
        _finalizer_pid = os.getpid()
        util.Finalize(None, _flush_all_at_exit, exitpriority=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
atexit.register(_flush_all_at_exit)


class TransportBackend:
    """A backend that hands its spans to a :class:`BatchingTransport`.

    Subclasses build their sender and call ``super().__init__(sender, **transport_options)``.
    ``report`` is the transport's own method: O(1), never blocks, never raises.
    """

    report_never_raises = True

    def __init__(self, sender: Sender, **transport_options: Any) -> None:
        self.transport = BatchingTransport(sender, **transport_options)
        #: Queue a finished span: the transport's own method, no extra frame per span.
        self.report: Callable[[Span], None] = self.transport.report

    def flush(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s until queued spans are sent (or given up on)."""
        return self.transport.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the worker and release the connection or socket."""
        self.transport.close(timeout)

    def stats(self) -> TransportStats:
        """The transport's counters (queued, sent, dropped, failed, pending, batches, bytes)."""
        return self.transport.stats()
