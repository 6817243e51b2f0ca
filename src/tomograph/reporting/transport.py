"""The background batching transport: spans leave the application thread in O(1), always.

:class:`BatchingTransport` takes finished spans on the application thread with one length check
and one ``deque.append`` (atomic under the GIL: no lock, no I/O, no formatting). A daemon worker
wakes every ``interval`` seconds, or as soon as ``batch_size`` spans wait, encodes batches with
its :class:`Sender` and sends them, retrying connection errors, 5xx and 429 with exponential
backoff and jitter (honouring ``Retry-After``). The queue is bounded: when it is full, new spans
are dropped and counted, never waited for.

Fork safety: a child made by ``os.fork()`` (gunicorn, multiprocessing) gets an empty queue and
its own worker through :func:`os.register_at_fork`. A child forked from C without Python's fork
hooks (uWSGI without ``--enable-threads``/``py-call-osafterfork``) is noticed by a pid check on
the transport's slow path (when ``batch_size`` spans wait, and in :meth:`flush`): the check costs
a system call, so it never runs per span.

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
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

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
        self._init_state(os.getpid())
        _transports.add(self)

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

    # -- application thread -----------------------------------------------------------------

    def report(self, span: Span) -> None:
        """Queue a finished span: O(1), no lock, no I/O, never raises, never blocks.

        A full queue drops the span and counts it in ``dropped``.
        """
        queue = self._queue
        if len(queue) < self._wake_at:
            queue.append(span)
        else:
            self._report_slow(span)

    def _report_slow(self, span: Span) -> None:
        # Reached once per batch (the worker is idle and ``batch_size`` spans wait), when the
        # queue is full, and after close; never per span in normal operation.
        try:
            if self._closed:
                next(self._dropped)
                return
            queue = self._queue
            if not self._wakeup.is_set():
                # The pid check costs a system call: here it runs once per batch, not per span.
                if self._pid != os.getpid():
                    self._after_fork(keep_queue=True)
                    queue = self._queue
                self._ensure_worker()
                if self._worker is not None:
                    # Until the worker has taken what waits, append freely up to the bound.
                    self._wake_at = self.queue_size
                self._wakeup.set()
            if len(queue) < self.queue_size:
                queue.append(span)
            elif next(self._dropped) & 1023 == 0 and self._pid != os.getpid():
                # A full queue in a child forked from C whose inherited worker flag looked busy.
                self._after_fork(keep_queue=True)
        except Exception:  # never let the transport break the application
            next(self._dropped)
            self._log_once("report", "tomograph: queueing a span failed", exc_info=True)

    # -- worker -----------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is not None or self._stop:
            return
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
            payloads: list[tuple[int, bytes]] | None = self.sender.encode(batch)
        except Exception:
            payloads = None
        if payloads is None:  # outside the except clause: log lines carry one error, not a chain
            payloads = self._encode_without_bad_spans(batch)
        for count, payload in payloads:
            if self._deliver(payload, deadline):
                self._sent += count
                self._batches += 1
                self._bytes += len(payload)
            else:
                self._failed += count

    def _encode_without_bad_spans(self, batch: list[Span]) -> list[tuple[int, bytes]]:
        """Payloads for the spans of ``batch`` that the sender can encode.

        Each span that the encoder fails on is left out, counted in ``failed`` and logged (once
        per kind of error): one bad span must not take its whole batch down with it.
        """
        bad = self._unencodable(batch)
        self._failed += len(bad)
        left_out = {id(span) for span in bad}
        good = [span for span in batch if id(span) not in left_out]
        if not good:
            return []
        try:
            return self.sender.encode(good)
        except Exception as error:  # an encoder that fails at random: nothing can be isolated
            self._failed += len(good)
            self._log_once(
                f"encode {type(error).__name__}",
                "tomograph: %s cannot encode spans, dropped %d",
                self.sender.name,
                len(good),
                exc_info=True,
            )
            return []

    def _unencodable(self, spans: list[Span]) -> list[Span]:
        # Halving finds k bad spans among n with about 2k*log2(n) encodes instead of n.
        if len(spans) == 1:
            try:
                self.sender.encode(spans)
            except Exception as error:
                span = spans[0]
                self._log_once(
                    f"encode {type(error).__name__}",
                    "tomograph: %s cannot encode span %r (trace %x), dropped it: %s",
                    self.sender.name,
                    span.name,
                    span.trace_id,
                    error,
                    exc_info=True,
                )
                return spans
            return []
        half = len(spans) // 2
        bad: list[Span] = []
        for part in (spans[:half], spans[half:]):
            try:
                self.sender.encode(part)
                continue
            except Exception:
                pass
            bad += self._unencodable(part)  # not in the except clause: see _send_batch
        return bad

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
            if self._pid != os.getpid():
                self._after_fork(keep_queue=True)
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

    def _after_fork(self, keep_queue: bool) -> None:
        """Become this process's own transport: new worker, locks, counters, connections."""
        inherited = self._queue
        self._init_state(os.getpid())
        if keep_queue:
            # Forked without Python's hooks: spans queued by this process since the fork cannot
            # be told apart from the parent's, so all are sent (duplicates beat losses).
            self._queue.extend(inherited)
        try:
            self.sender.reset()
        except Exception:
            pass
        self._logged.clear()

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
        transport._after_fork(keep_queue=False)


def _flush_all_at_exit(budget: float = EXIT_FLUSH_SECONDS) -> None:
    deadline = time.monotonic() + budget
    for transport in list(_transports):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not transport._closed:
            transport.flush(remaining)


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
