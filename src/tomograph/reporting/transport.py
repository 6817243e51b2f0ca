"""The background batching transport: spans leave the application thread in O(1), always.

:class:`BatchingTransport` takes finished spans on the application thread with one length check,
one comparison and one ``deque.append`` (atomic under the GIL: no lock, no I/O, no formatting).
A daemon worker wakes every ``interval`` seconds, or as soon as ``batch_size`` spans wait,
encodes batches with its :class:`Sender` and sends them, retrying connection errors, 5xx and 429
with exponential backoff and jitter (honouring ``Retry-After``). The queue is bounded: when it is
full, new spans are dropped and counted, never waited for.

Fork safety (see docs/backends.md for every server): a child made by ``os.fork()`` (gunicorn,
multiprocessing, Celery's prefork pool) gets an empty queue and its own worker through
:func:`os.register_at_fork`; the parent sends what it had queued. Children of multiprocessing's
fork and forkserver methods end with ``os._exit()``: they flush in multiprocessing's exit
finalizers, as ``atexit`` never runs there. billiard's children (Celery's prefork pool) run the
same finalizer; its pool workers, which skip the finalizers, run it from the pool's exit
callback (see :mod:`tomograph.reporting._billiard`). In a process that forks uWSGI workers from
C no worker thread ever starts (a thread there can hang the workers; see
:mod:`tomograph.reporting._uwsgi`): spans wait there, worker 1 sends those queued before the
fork, and uWSGI's post-fork hook makes the transport each process's own. Any other fork from C
is noticed by a pid check on the transport's slow path, which a report takes once per batch and
once a second (or ``interval``): a system call, never made per span. The first thread to notice
takes the transport over; others that notice meanwhile wait.

Every span ends up in exactly one of ``sent``, ``dropped`` (queue full or transport closed),
``failed`` (given up after retries, or refused by the collector) or still pending, so
``queued == sent + dropped + failed + pending``; every kind of loss is logged, once per kind or
once per outage. Nothing is lost silently.

One worker per transport uses the sender. :meth:`BatchingTransport.flush` sends on the calling
thread only when no worker runs (at interpreter exit, or in a process that forks uWSGI workers),
and then never from two threads at once.
:meth:`BatchingTransport.close` releases the sender only once the worker is done with it.
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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from tomograph.clock import monotonic_ns
from tomograph.reporting import _billiard, _uwsgi

if TYPE_CHECKING:
    from tomograph.span import Span

__all__ = [
    "EXIT_FLUSH_SECONDS",
    "BatchingTransport",
    "Rejected",
    "SendError",
    "Sender",
    "TransportBackend",
    "TransportStats",
    "exit_time_left",
]

_log = logging.getLogger("tomograph.reporting")

#: How long the interpreter's exit waits, in total, for backends to deliver what they hold. The
#: exit hooks that wait (the default tracer's and this module's) share it: see exit_time_left().
EXIT_FLUSH_SECONDS = 2.0

#: A refused part of a batch is split in two at most this deep to find the spans a collector
#: refuses (2**9 = 512 covers the default batch of 500).
_MAX_SPLIT_DEPTH = 9


class SendError(Exception):
    """A payload could not be delivered.

    ``retryable`` is True for connection errors, timeouts, 5xx, 408 and 429; ``retry_after`` is
    the delay the server asked for (seconds), if any. ``reason`` names the kind of failure in a
    few stable words (``HTTP 400``, ``ConnectionRefusedError``): failures are logged once per
    reason, so it must not carry the server's own words (the message may).

    Two kinds of refusal make the transport split the batch and send the halves again:
    ``too_large`` (HTTP 413: halves until single spans) and ``bad_content`` (HTTP 400 or 422:
    perhaps one span spoils the batch; the split stops where both halves are refused).

    >>> SendError("HTTP 413 from http://z/api/v2/spans", False, reason="HTTP 413", too_large=True)
    SendError('HTTP 413 from http://z/api/v2/spans')
    """

    def __init__(
        self,
        message: str,
        retryable: bool,
        retry_after: float | None = None,
        *,
        reason: str | None = None,
        too_large: bool = False,
        bad_content: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.reason = reason or ("retryable" if retryable else "refused")
        self.too_large = too_large
        self.bad_content = bad_content


class Rejected(NamedTuple):
    """Spans a collector took a payload with but refused (OTLP's partial success).

    >>> Rejected(2, "span 3: name too long").spans
    2
    """

    #: How many of the payload's spans the collector refused.
    spans: int
    #: The collector's explanation, shortened (shown in the log line, never a log-once key).
    message: str


class Sender(Protocol):
    """Encodes batches of spans and delivers payloads: what a backend plugs into the transport."""

    #: A short name for logs and stats, e.g. ``zipkin http://127.0.0.1:9411``.
    name: str

    def encode(self, spans: Sequence[Span]) -> list[tuple[int, bytes]]:
        """Payloads for ``spans`` as (number of spans in it, bytes), each within size limits.

        Payloads follow the order of ``spans`` and their counts add up to ``len(spans)``.
        """
        ...

    def send(self, payload: bytes) -> Rejected | None:
        """Deliver one payload or raise :class:`SendError`. Never runs on two threads at once.

        An answer that accepts the payload but refuses some of its spans returns
        :class:`Rejected`; those spans count as failed.
        """
        ...

    def reset(self) -> None:
        """Forget connections and sockets (after a fork: they belong to the parent)."""
        ...

    def close(self) -> None:
        """Release connections and sockets (never while a ``send`` is in progress)."""
        ...


class TransportStats(dict[str, int]):
    """A snapshot of a transport's counters (a plain dict of ints).

    ``queued`` spans handed to the transport, ``sent`` delivered, ``dropped`` refused because
    the queue was full (or the transport closed), ``failed`` given up on, ``pending`` still waiting,
    ``batches`` payloads delivered, ``bytes`` bytes delivered, ``retries`` payload retries.
    """


class _Outcome:
    """What delivering one batch achieved, committed to the counters in one step."""

    __slots__ = ("batches", "bytes", "retries", "sent")

    def __init__(self) -> None:
        self.sent = self.batches = self.bytes = self.retries = 0

    def delivered(self, count: int, payload: bytes) -> None:
        self.sent += count
        self.batches += 1
        self.bytes += len(payload)


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
        self._sender_open = True
        #: Keys of the failures logged once: kinds (``refused HTTP 400``), never server words.
        self._logged: set[str] = set()
        #: A report checks the pid once this long (at most 1 s) after the last check, and once
        #: per batch: a fork from C is found at the first span after that.
        self._check_every_ns = int(min(interval, 1.0) * 1e9)
        #: Who takes the transport over in a forked process: pid -> (thread id, done event).
        self._takeovers: dict[int, tuple[int, threading.Event]] = {}
        self._init_state(deque(), dropped=0)
        self._pid = os.getpid()
        if _uwsgi.forks_workers():
            self._park()
        _transports.add(self)
        _uwsgi.call_in_every_process(_start_in_uwsgi_process)
        _flush_at_multiprocessing_exit(in_child_now=True)

    def _init_state(self, queue: deque[Span], dropped: int) -> None:
        """Fresh worker slot, locks, counters and RNG (at start and in a forked child)."""
        self._queue = queue
        #: While the queue is shorter than this, a report appends with no other check than the
        #: time's. Zero until the worker runs, so the first report takes the slow path and
        #: starts it (and after close, so that every report is dropped with a log line).
        self._wake_at = 0
        self._worker: threading.Thread | None = None
        #: Held to start the worker or to stop it for good: exactly one worker per transport.
        self._lifecycle = threading.Lock()
        #: Held by the one thread using the sender (the worker, or flush() when none runs).
        self._sending = threading.Lock()
        self._wakeup = threading.Event()
        #: Set by close(): cuts short the worker's backoff waits.
        self._stopping = threading.Event()
        #: Guards the queue's hand-over to batches and the counters; notified per batch.
        self._changed = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._stop = self._closed
        self._closing = self._closed
        self._close_done = threading.Event()
        if self._closed:
            self._stopping.set()
            self._close_done.set()
        self._taken = 0
        self._dropped = itertools.count(dropped)  # advanced from any thread: atomic in C
        #: ``_dropped`` at the last pid check: a fork from C keeps the drops counted since.
        self._dropped_at_check = dropped
        self._discarded = 0  # still queued when the transport was closed
        self._sent = self._failed = self._batches = self._bytes = self._retries = 0
        self._failing = False
        self._overflowing, self._overflow_logged = dropped > 0, False
        # Seeded from os.urandom in every process: forked workers must not back off in lockstep.
        self._random = random.Random()
        #: A report whose span ended at or after this (monotonic ns) takes the slow path, which
        #: checks the pid once the clock has reached it.
        self._check_at = monotonic_ns() + self._check_every_ns
        #: True in a process that forks uWSGI workers: spans wait, no worker starts (see _park).
        self._parked = False
        #: Shared with the process that forks uWSGI workers, and with its children until they
        #: know whether the spans it queued before forking are theirs to send (_settle_handoff).
        self._handoff: _uwsgi.Handoff | None = None
        #: How many of the queued spans, the oldest, that process queued before the fork.
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
        # second, when the queue is full, and after close; never per span otherwise (except
        # in a process that forks uWSGI workers: see _park).
        try:
            if self._closed:
                next(self._dropped)
                self._log_once(
                    "closed", "tomograph: %s is closed: later spans are dropped", self.sender.name
                )
                return
            # Read once, before the pid check: a fork's take-over replaces the event, and only
            # a thread that checked the pid may act on the new one (see _after_fork).
            waking = not self._wakeup.is_set()
            # A span may end in the future (an explicit timestamp): the clock decides.
            due = span.end_ns >= self._check_at and monotonic_ns() >= self._check_at
            if waking or due or self._parked:
                self._check_pid()
                waking = not self._wakeup.is_set()
            if self._parked:
                if self._handoff is not None and self._handoff.taken():
                    self._drop_in_uwsgi_master()
                    return
            elif waking:
                self._wake_worker()
            queue = self._queue
            if len(queue) < self.queue_size:
                queue.append(span)
            else:
                next(self._dropped)
                if not self._overflowing:
                    # Logged by the worker: a logging handler may block, the application must not.
                    self._overflowing = True
        except Exception:  # never let the transport break the application
            next(self._dropped)
            self._log_once("report", "tomograph: queueing a span failed", exc_info=True)

    def _check_pid(self) -> None:
        """Become this process's own transport if it was forked without Python's fork hooks."""
        if self._take_over_if_forked():  # a system call: at most once per batch and per second
            return
        self._dropped_at_check = _count_value(self._dropped)
        if not self._parked:
            self._check_at = monotonic_ns() + self._check_every_ns
        elif not _uwsgi.forks_workers():  # worker 1 of a uWSGI without master, hook replaced
            self._unpark()

    def _take_over_if_forked(self) -> bool:
        """Become this process's own transport if it was forked without Python's fork hooks
        (the parent's threads may have held its locks at the fork). True if it was forked."""
        if self._pid == os.getpid():
            return False
        self._after_fork(python_hooks=False)
        return True

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
        self._settle_handoff()  # before any send: inherited spans may not be ours
        self._ensure_worker()
        if self._worker is not None:
            # Until the worker has taken what waits, append freely up to the bound.
            self._append_freely_below(self.queue_size)
        self._wakeup.set()

    def _append_freely_below(self, length: int) -> None:
        """Let reports append with no other check while the queue is shorter than ``length``."""
        self._wake_at = length
        if self._closed:  # read after the write: a close() running meanwhile has the last word
            self._wake_at = 0

    def _ensure_worker(self) -> None:
        if self._worker is None and not self._stop and not self._parked:
            self._start_worker()

    def _start_worker(self) -> None:
        with self._lifecycle:  # many threads may report their first span at the same moment
            if self._worker is not None or self._stop or self._parked:  # another thread was first
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
            self._append_freely_below(self.batch_size)

    def _run(self) -> None:
        wakeup = self._wakeup
        try:
            while True:
                wakeup.wait(self.interval)
                wakeup.clear()
                if self._stop:  # close() flushed within its budget and counts what is left
                    break
                self._append_freely_below(self.batch_size)
                try:
                    self._drain(deadline=None)
                except Exception:  # a bug in an encoder must not kill the worker
                    self._log_once("worker", "tomograph: reporting worker error", exc_info=True)
                if self._overflowing and len(self._queue) < self.queue_size:
                    self._overflowing = self._overflow_logged = False  # the episode is over
        finally:
            if self._stop:  # closed: the sender is ours to release, now that no send runs
                self._discard_queue()
                self._release_sender()

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
        """Send everything queued now; ``deadline`` (monotonic) bounds a flush on this thread."""
        while self._queue:
            if deadline is None and self._stop:
                return  # closed: close() counts what is left
            if deadline is None:
                self._sending.acquire()
            elif not self._sending.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return  # another thread is sending: it will get to these spans
            try:
                batch = self._take_batch()
                if not batch:
                    return
                outcome = _Outcome()
                try:
                    self._send_batch(batch, deadline, outcome)
                finally:
                    self._commit(len(batch), outcome)
            finally:
                self._sending.release()
            self._log_overflow()
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0)  # let other threads (or eventlet/gevent greenlets) run between batches

    def _log_overflow(self) -> None:
        """Log the first drop of a queue-full episode (the application thread only flags it)."""
        if self._overflowing and not self._overflow_logged:
            self._overflow_logged = True
            _log.warning(
                "tomograph: the queue for %s is full (%d spans): new spans are dropped",
                self.sender.name,
                self.queue_size,
            )

    def _commit(self, count: int, outcome: _Outcome) -> None:
        """Move ``count`` spans from in flight to sent or failed, with the batch's other counts."""
        sent = max(0, min(outcome.sent, count))  # a miscounting sender cannot skew the sum
        with self._changed:
            self._in_flight -= count
            self._sent += sent
            self._failed += count - sent
            self._batches += outcome.batches
            self._bytes += outcome.bytes
            self._retries += outcome.retries
            self._changed.notify_all()

    def _send_batch(self, batch: list[Span], deadline: float | None, outcome: _Outcome) -> None:
        """Deliver ``batch``; spans not delivered in the end count as failed (in _commit)."""
        for part, error in self._send(batch, deadline, outcome):
            self._isolate(part, error, deadline, outcome, _MAX_SPLIT_DEPTH)

    def _send(
        self, spans: Sequence[Span], deadline: float | None, outcome: _Outcome
    ) -> list[tuple[Sequence[Span], SendError]]:
        """Encode and deliver ``spans``; the parts the collector refused for their content.

        A part refused as too large is split in halves and sent again here, down to one span;
        so is a batch the encoder fails on, so that one span it cannot encode fails alone.
        """
        refused: list[tuple[Sequence[Span], SendError]] = []
        try:
            payloads: list[tuple[int, bytes]] | None = self.sender.encode(spans)
        except Exception as encode_error:
            if len(spans) == 1:
                span = spans[0]
                self._log_once(
                    f"encode {type(encode_error).__name__}",
                    "tomograph: encoding a span for %s failed, dropped span %r (trace %x): %s",
                    self.sender.name,
                    span.name,
                    span.trace_id,
                    encode_error,
                    exc_info=True,
                )
                return refused
            payloads = None
        if payloads is None:
            # Halved outside the except clause: a log line then carries one error, not the
            # chain of every halving attempt.
            half = len(spans) // 2
            refused += self._send(spans[:half], deadline, outcome)
            refused += self._send(spans[half:], deadline, outcome)
            return refused
        counts = [count for count, _ in payloads]
        # Refused parts can be split again only if the counts say which spans each payload holds.
        splittable = sum(counts) == len(spans) and all(count >= 0 for count in counts)
        if not splittable:
            self._log_once(
                "counts",
                "tomograph: %s encoded %d spans as payloads counting %d: the rest count as failed",
                self.sender.name,
                len(spans),
                sum(counts),
            )
        start = 0
        for count, payload in payloads:
            part = spans[start : start + count]
            start += count
            error = self._deliver(payload, count, deadline, outcome)
            if error is None:
                continue
            if splittable and count > 1 and error.too_large:
                half = count // 2
                refused += self._send(part[:half], deadline, outcome)
                refused += self._send(part[half:], deadline, outcome)
            elif splittable and count > 1 and error.bad_content:
                refused.append((part, error))
            else:
                self._give_up(count, error)
        return refused

    def _isolate(
        self,
        spans: Sequence[Span],
        error: SendError,
        deadline: float | None,
        outcome: _Outcome,
        depth: int,
    ) -> None:
        """Find the spans a collector refuses in ``spans`` by sending each half again.

        When both halves are refused too, the collector refuses more than one span there (or
        everything): the split stops, so a collector that refuses every batch costs three
        requests per batch, and one bad span costs two more requests per halving.
        """
        if depth == 0 or (self._stop and deadline is None):
            self._give_up(len(spans), error)
            return
        half = len(spans) // 2
        first = self._send(spans[:half], deadline, outcome)
        second = self._send(spans[half:], deadline, outcome)
        if first and second:
            for part, refusal in first + second:
                self._give_up(len(part), refusal)
            return
        for part, refusal in first + second:
            self._isolate(part, refusal, deadline, outcome, depth - 1)

    def _give_up(self, count: int, error: SendError) -> None:
        """Log spans that will count as failed: once per kind of refusal (or per outage)."""
        if error.retryable:
            self._note_failure(error)
        else:
            self._log_once(
                f"refused {error.reason}",
                "tomograph: %s refused spans, not retrying: %s (%d spans)",
                self.sender.name,
                error,
                count,
            )

    def _deliver(
        self, payload: bytes, count: int, deadline: float | None, outcome: _Outcome
    ) -> SendError | None:
        """Send one payload of ``count`` spans, retrying what may succeed later.

        The error that ended it, if it was not delivered.
        """
        started = time.monotonic()
        give_up = started + self.retry_deadline
        if deadline is not None:
            give_up = min(give_up, deadline)
        attempt = 0
        while True:
            try:
                rejected = self.sender.send(payload)
            except SendError as error:
                if not error.retryable:
                    return error
                if attempt >= self.max_retries or (self._stop and deadline is None):
                    return error
                delay = self._backoff_delay(attempt, error.retry_after)
                if time.monotonic() + delay > give_up:
                    return error
                attempt += 1
                outcome.retries += 1
                if self._stopping.wait(delay) and deadline is None:
                    return error  # closed while waiting: no more attempts
                continue
            except Exception as error:
                self._log_once(
                    "send", "tomograph: sending to %s raised", self.sender.name, exc_info=True
                )
                name = type(error).__name__
                return SendError(f"{name}: {error}", retryable=False, reason=name)
            if self._failing:
                self._failing = False
                _log.info("tomograph: %s is accepting spans again", self.sender.name)
            refused = 0 if rejected is None else max(0, min(rejected.spans, count))
            outcome.delivered(count - refused, payload)
            if refused:
                self._log_once(
                    "rejected",
                    "tomograph: %s took a payload but rejected %d of its %d spans: %s",
                    self.sender.name,
                    refused,
                    count,
                    rejected.message if rejected else "",
                )
            return None

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
        worker (at interpreter exit, in a process that forks uWSGI workers) it sends on the
        calling thread. On the worker itself (a sender that flushes) it cannot wait for itself
        and only tells whether anything waits.
        """
        try:
            self._check_pid()
            self._settle_handoff()
            if not self._queue and not self._in_flight:
                return True  # nothing to wait for (and no worker to start for it)
            deadline = None if timeout is None else time.monotonic() + timeout
            self._ensure_worker()
            worker = self._worker
            if self._stop or worker is threading.current_thread():
                return not self._queue and not self._in_flight
            if worker is None or not worker.is_alive():
                return self._flush_here(time.monotonic() + 30.0 if deadline is None else deadline)
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

    def _flush_here(self, deadline: float) -> bool:
        """Send on this thread (no worker runs), taking turns with other flushing threads."""
        while True:
            self._drain(deadline)
            with self._changed:  # another thread may be sending what it took: wait for it
                while self._in_flight and not self._queue and time.monotonic() < deadline:
                    self._changed.wait(min(deadline - time.monotonic(), 0.05))
                if not self._queue and not self._in_flight:
                    return True
            if time.monotonic() >= deadline:
                return False

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout``, stop the worker, release the sender. Later spans are dropped.

        Spans still queued when the time is up are counted as ``dropped`` and logged. A send
        still in progress then is not cut short: the worker counts it when it ends, then
        releases the sender itself. Safe from any thread, several at once, and from the worker.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._take_over_if_forked()
        with self._lifecycle:
            closing, self._closing = self._closing, True
        if closing:  # another thread is closing: wait for it, within this call's own budget
            self._close_done.wait(timeout)
            return
        try:
            self.flush(timeout)
            self._closed = True
            self._wake_at = 0  # every later report takes the slow path and is dropped
            # (in this order: see _append_freely_below)
            with self._lifecycle:  # no worker starts after this
                self._stop = True
            self._stopping.set()
            self._wakeup.set()
            worker = self._worker
            current = threading.current_thread()
            if worker is not None and worker is not current:
                worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            self._discard_queue()
            if worker is None or not worker.is_alive():
                self._release_sender()
            elif worker is not current and self._in_flight:
                _log.warning(
                    "tomograph: %s closed while %d spans are still being sent: they are counted "
                    "when the send ends, and lost if the process exits first",
                    self.sender.name,
                    self._in_flight,
                )
            # else the worker releases the sender when it is back in its loop
        finally:
            self._close_done.set()

    def _discard_queue(self) -> None:
        """Count what is still queued after close as dropped, with a log line."""
        self._log_overflow()
        with self._changed:  # the worker takes batches under the same lock
            leftover = len(self._queue)
            self._queue.clear()
            self._taken += leftover
            self._discarded += leftover
            self._changed.notify_all()
        if leftover:
            _log.warning(
                "tomograph: %s closed with %d spans not sent: counted as dropped",
                self.sender.name,
                leftover,
            )

    def _release_sender(self) -> None:
        """Close the sender, once, when no send can be in progress."""
        with self._lifecycle:
            release, self._sender_open = self._sender_open, False
        if release:
            try:
                self.sender.close()
            except Exception:
                _log.warning("tomograph: closing %s failed", self.sender.name, exc_info=True)

    def _after_fork(self, python_hooks: bool) -> None:
        """Become this process's own transport: new worker, locks, counters, connections.

        ``python_hooks``: Python's at-fork hooks run this (the parent forked with ``os.fork``),
        while the child has a single thread. Otherwise several threads may notice the fork at
        once: the first takes the transport over, the others wait until it is done.
        """
        pid, me = os.getpid(), threading.get_ident()
        claim = (me, threading.Event())
        first = self._takeovers.setdefault(pid, claim)  # atomic: one thread gets its own back
        if first is not claim:
            if first[0] != me:  # (the taker itself may come back here from a logging handler)
                first[1].wait()
            return
        try:
            self._take_over(python_hooks)
        finally:
            self._pid = pid  # last: a thread that sees this process's pid finds all ready
            self._takeovers = {pid: claim}  # the parent's claim goes: it never grows
            claim[1].set()

    def _take_over(self, python_hooks: bool) -> None:
        inherited = self._queue
        parent_parked, handoff = self._parked, self._handoff
        if python_hooks:  # run by the fork itself: nothing here is this process's yet
            self._init_state(inherited if parent_parked else deque(), dropped=0)
        else:
            # Found by a pid check: this process may have queued and dropped spans already.
            # They cannot be told apart from the parent's, so the queue is kept (all are sent:
            # duplicates beat losses), and so are the drops counted since the parent's last
            # check (a few of the parent's may be counted twice; none is lost). The same
            # deque: a span appended by a thread that read it earlier stays where it is sent.
            dropped = _count_value(self._dropped) - self._dropped_at_check
            self._init_state(inherited, dropped)
        if parent_parked:
            # The parent forks uWSGI workers and never sends while they run: its spans are
            # worker 1's to send. A fork made with uWSGI's Python fork hooks runs this before
            # uWSGI tells the child its worker id, so the choice may have to wait for it.
            self._inherited = len(inherited)
            self._handoff = handoff
            if not python_hooks:
                self._settle_handoff()
        try:
            self.sender.reset()
        except Exception:
            _log.warning(
                "tomograph: resetting %s after fork failed", self.sender.name, exc_info=True
            )
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
        the fork if this is worker 1, the one to send them; otherwise let them go. Once."""
        if self._handoff is None or self._parked:
            return
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

    def _hurry(self) -> None:
        """Have the worker send what waits now, without waiting for it (at exit)."""
        # Not in a forked process that has not taken the transport over yet: the parent's
        # threads may have held the event's lock at the fork. close() takes it over.
        if self._pid == os.getpid() and self._worker is not None:
            self._wakeup.set()

    def _start_in_uwsgi_process(self) -> None:
        """In a process uWSGI started: become its transport and send what waits, now."""
        if not self._take_over_if_forked():  # (uWSGI's own fork runs no Python fork hook)
            if self._parked:  # worker 1 of a uWSGI without master: it forked the others by now
                self._unpark()
            else:  # Python's fork hooks may have run before it had its id
                self._settle_handoff()
        if self._queue and not self._closed:
            self._wake_worker()

    # -- reading ----------------------------------------------------------------------------

    def stats(self) -> TransportStats:
        """The counters as a dict; see :class:`TransportStats`.

        ``queued == sent + dropped + failed + pending`` holds in every snapshot.
        """
        self._take_over_if_forked()
        with self._changed:  # one consistent snapshot: a batch moves between counters at once
            waiting = len(self._queue)
            refused = _count_value(self._dropped)
            # After close, a span whose report raced close() may sit in the queue: no worker
            # will send it, so it counts as dropped.
            late = waiting if self._closed else 0
            return TransportStats(
                queued=self._taken + waiting + refused,
                sent=self._sent,
                dropped=refused + self._discarded + late,
                failed=self._failed,
                pending=waiting - late + self._in_flight,
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


_exit_deadline: float | None = None


def exit_time_left() -> float:
    """Seconds left of the interpreter's exit budget, :data:`EXIT_FLUSH_SECONDS` in all.

    The budget's clock starts at the first call; every exit hook that waits for spans takes its
    time from it, so the exit waits at most that long in total, whatever the hooks' order.
    The first call also has every transport's worker send what it holds at once: backends are
    closed one after another, and one stuck on a hung collector must not spend the others'
    time. Call it only at exit (``tracer.close(exit_time_left())`` in an ``atexit`` hook).
    """
    global _exit_deadline
    now = time.monotonic()
    if _exit_deadline is None:
        _exit_deadline = now + EXIT_FLUSH_SECONDS
        for transport in list(_transports):
            transport._hurry()
    return max(0.0, _exit_deadline - now)


def _close_all_at_exit() -> None:
    # Closed, not only flushed: what is left when the budget is spent is counted and logged.
    for transport in list(_transports):
        transport.close(exit_time_left())


# Children of multiprocessing's fork and forkserver methods end with os._exit(): no atexit hook
# runs there, multiprocessing's own exit finalizers do. A child forgets the finalizers registered
# before its start, but runs its "after fork" callbacks after that: the finalizer is added from
# there. billiard (Celery's prefork pool) shares these registries, so its children run the same
# callbacks; its pool workers skip the finalizers on their way to os._exit() and run the
# finalizer from the pool's exit callback instead (see _billiard).
_after_fork_registered_pid = 0
_finalizer_pid = 0


def _flush_at_multiprocessing_exit(in_child_now: bool) -> None:
    """Make every multiprocessing or billiard child started from now on flush at its exit;
    with ``in_child_now`` this process too, if it is such a child (and started)."""
    global _after_fork_registered_pid
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return  # neither is in use (a child made later imports it first; billiard imports it)
    if _after_fork_registered_pid != os.getpid():
        _after_fork_registered_pid = os.getpid()
        util.register_after_fork(_add_exit_finalizer, _add_exit_finalizer)
    if in_child_now and _started_by_multiprocessing():
        _add_exit_finalizer()


def _started_by_multiprocessing() -> bool:
    process = sys.modules.get("multiprocessing.process")
    if process is not None and process.parent_process() is not None:
        return True
    return _billiard.started_this_process()


def _add_exit_finalizer(_: object = None) -> None:
    global _finalizer_pid
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _finalizer_pid != os.getpid():
        _finalizer_pid = os.getpid()
        finalizer = util.Finalize(None, _close_all_at_exit, exitpriority=0)
        _billiard.run_at_pool_worker_exit(finalizer)  # a finalizer runs its callback once


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
atexit.register(_close_all_at_exit)


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
