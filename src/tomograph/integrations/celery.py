"""Celery: a ``PRODUCER`` span per task message sent, a ``CONSUMER`` span per task run, one trace.

Hooked through Celery's signals, so every way of sending a task (``delay``, ``apply_async``,
``send_task``, signatures, ``chain``/``group``/``chord``) and every pool (prefork, solo,
threads, eventlet, gevent) is traced the same way:

- ``before_task_publish`` starts ``apply_async/<task name>``, a child of the current span, and
  writes its context into the message headers with the configured propagator (W3C, B3, ...:
  with task protocol 2 they travel as top-level message headers);
  ``after_task_publish`` finishes it;
- ``task_prerun`` starts ``run/<task name>``, continuing the trace from the message headers,
  and makes it current, so the task's own spans and the tasks it sends are its children;
  ``task_retry``, ``task_failure`` tag it, ``task_postrun`` finishes it with the task's state;
- in the worker's main process, ``task_received`` remembers when each message arrived and
  the trace it belongs to (bounded by task id), so that a task that never ran to its end
  there — revoked, or failed by a hard time limit or a lost pool child — still gets its
  ``run/`` span, an error span for the failures.

>>> from tomograph.integrations import celery
>>> celery.patch()
True
>>> celery.unpatch()
True
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextvars import Token
from time import monotonic_ns
from typing import Any
from urllib.parse import urlsplit

from celery import signals
from celery._state import get_current_app
from celery.exceptions import Reject

from tomograph._cache import memoize
from tomograph.context import CURRENT_SPAN, SUPPRESS_TRACING
from tomograph.model import Endpoint, ExceptionNote, SpanKind, TraceContext
from tomograph.model import endpoint_for as peer_endpoint
from tomograph.propagation import Propagator, default_propagator
from tomograph.propagation.baggage import adopt_baggage
from tomograph.span import CURRENT, Span
from tomograph.tracer import Tracer, get_tracer

__all__ = ["CeleryTracing", "patch", "patched", "unpatch"]

_log = logging.getLogger("tomograph")
_PRODUCER = SpanKind.PRODUCER
_CONSUMER = SpanKind.CONSUMER

#: Publishes whose ``after_task_publish`` has not come yet. Both signals are sent by the same
#: call, so one still waiting after this long failed (the broker refused it or was down): it is
#: finished as an error by the next publish rather than held forever.
UNCONFIRMED_AFTER_NS = 30 * 1_000_000_000
#: Most publishes waiting for their ``after_task_publish``: the oldest is finished beyond it.
MAX_PENDING_PUBLISHES = 1024
#: Most received tasks the worker's main process remembers, to trace those that end outside a
#: run (revoked, time limit, lost child); the oldest is forgotten beyond it.
MAX_RECEIVED = 4096
#: Longest retry reason recorded.
MAX_REASON = 256

_BROKER_SERVICES = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
    "librabbitmq": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
}
_DEFAULT_PORTS = {"rabbitmq": 5672, "redis": 6379}
_NO_BROKER: tuple[str | None, Endpoint | None] = (None, None)
# The attribute of a task's request (Celery's ``Context``) that holds its run span: the request
# lives exactly as long as the run, so nothing needs removing from a table at its end.
_RUN_ATTRIBUTE = "_tomograph_run"


def _new_broker(url: Any) -> tuple[str | None, Endpoint | None]:
    if not isinstance(url, str) or not url:
        return _NO_BROKER
    first = url.split(";", 1)[0].strip()  # failover lists: the first broker is tried first
    try:
        parts = urlsplit(first)
        host, port = parts.hostname, parts.port
    except ValueError:
        return _NO_BROKER
    scheme = parts.scheme.split("+")[0].lower()
    service = _BROKER_SERVICES.get(scheme, scheme or None)
    if not host:
        return None, Endpoint(service, None, None, None) if service else None
    endpoint = peer_endpoint(service, host, port or _DEFAULT_PORTS.get(service or ""))
    if endpoint.ipv4 is None and endpoint.ipv6 is None:
        return host, endpoint  # a host name: kept as ``server.address``
    return None, endpoint


#: ``(host name or None, remote endpoint or None)`` of a broker URL; an application has few.
_broker_of_url = memoize(_new_broker, 64)


def _new_app_broker(app: Any) -> tuple[str | None, Endpoint | None]:
    try:
        conf = app.conf
        url = conf.broker_write_url or conf.broker_url
    except Exception:
        return _NO_BROKER
    return _broker_of_url(url)


#: The broker of each application, read once: reading two settings from Celery's configuration
#: costs about 20 µs, more than the rest of a span (a process has one or a few applications).
_broker = memoize(_new_app_broker, 64)


def _carrier(fields: dict[str, Any]) -> dict[str, Any]:
    """Where a task request's trace headers are: among its fields, or (Celery 5.3 and later)
    in ``headers``, its message's headers that are not Celery's own: a few keys, not thirty."""
    custom = fields.get("headers")
    if custom.__class__ is dict and custom:
        return custom
    return fields


def _task_id(headers: Any, body: Any) -> str | None:
    """The task id of a message: protocol 2 has it in the headers, protocol 1 in the body."""
    task_id = headers.get("id") if isinstance(headers, dict) else None
    if task_id is None and isinstance(body, dict):
        task_id = body.get("id")
    return None if task_id is None else _key(task_id)


def _key(task_id: Any) -> str:
    """A task id as the key of the bookkeeping: a message may carry anything there."""
    return task_id if task_id.__class__ is str else _text(task_id)


def _text(value: Any, limit: int = MAX_REASON) -> str:
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


class _Run:
    """A task run's span, and the token that restores the span current before it."""

    __slots__ = ("span", "task_id", "token")

    def __init__(self, span: Span, task_id: Any, token: Token[Span | None]) -> None:
        self.span = span
        self.task_id = task_id
        self.token = token


class CeleryTracing:
    """Traces Celery tasks through its signals once :meth:`connect` is called.

    ``tracer`` and ``propagator`` default to the default ones, looked up at each signal, so
    ``tomograph.configure()`` may run after connecting (in a prefork worker, in each child's
    ``worker_process_init``). :func:`patch` connects one made with the defaults; make your own
    for a specific tracer or propagator. Celery's signals are process-wide: every application
    in the process is traced.

    >>> import tomograph
    >>> from tomograph.reporting.memory import MemoryBackend
    >>> tracing = CeleryTracing(tracer=tomograph.Tracer('worker', [MemoryBackend()]))
    >>> tracing.connect(), tracing.connect()
    (True, False)
    >>> tracing.disconnect()
    True
    """

    def __init__(self, tracer: Tracer | None = None, propagator: Propagator | None = None) -> None:
        self.tracer = tracer
        self.propagator = propagator
        self._lock = threading.Lock()
        self._publishing: OrderedDict[Any, Span] = OrderedDict()
        self._received: OrderedDict[Any, tuple[int, TraceContext | None]] = OrderedDict()
        self._connected = False
        uid = f"tomograph.celery.{id(self)}"
        self._receivers: list[tuple[Any, Callable[..., None], str]] = [
            (signals.before_task_publish, self._before_publish, uid),
            (signals.after_task_publish, self._after_publish, uid),
            (signals.task_received, self._task_received, uid),
            (signals.task_prerun, self._task_prerun, uid),
            (signals.task_retry, self._task_retry, uid),
            (signals.task_failure, self._task_failure, uid),
            (signals.task_postrun, self._task_postrun, uid),
            (signals.task_revoked, self._task_revoked, uid),
        ]

    # -- hooking up ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the signal handlers are connected."""
        return self._connected

    def connect(self) -> bool:
        """Connect the signal handlers; False if they already were."""
        with self._lock:
            if self._connected:
                return False
            for signal, receiver, uid in self._receivers:
                signal.connect(receiver, weak=False, dispatch_uid=uid)
            self._connected = True
            return True

    def disconnect(self) -> bool:
        """Disconnect the signal handlers; False if they were not connected.

        Publishes still waiting for their ``after_task_publish`` are finished now (noted
        ``celery.unfinished``): that signal would no longer reach them. A task running at that
        moment is not reported (its ``task_postrun`` is not received either): disconnect
        between tasks.
        """
        with self._lock:
            if not self._connected:
                return False
            for signal, receiver, uid in self._receivers:
                signal.disconnect(receiver, dispatch_uid=uid)
            self._connected = False
            pending = list(self._publishing.values())
            self._publishing.clear()
            self._received.clear()
        for span in pending:
            _unfinished(span, "tracing was disconnected before after_task_publish")
        return True

    # -- producer -----------------------------------------------------------------------------

    def _before_publish(
        self,
        sender: Any = None,
        body: Any = None,
        exchange: Any = None,
        routing_key: Any = None,
        headers: Any = None,
        **_: Any,
    ) -> None:
        if SUPPRESS_TRACING.get() or not isinstance(headers, dict):
            return
        task_id = _task_id(headers, body)
        task_name = sender if isinstance(sender, str) else headers.get("task")
        host, remote = _broker(get_current_app())
        span = Span(
            self.tracer or get_tracer(),
            f"apply_async/{task_name}",
            _PRODUCER,
            None,
            CURRENT,
            None,
            remote,
        )
        if span.sampled:
            tags = span.tags
            tags["celery.action"] = "apply_async"
            tags["celery.task_name"] = str(task_name)
            if task_id is not None:
                tags["messaging.message.id"] = str(task_id)
            if routing_key:
                tags["messaging.destination.name"] = str(routing_key)
            if exchange:
                tags["celery.exchange"] = str(exchange)
            retries = headers.get("retries")
            if retries:
                tags["celery.retries"] = retries if isinstance(retries, int) else str(retries)
            if host:
                tags["server.address"] = host
        try:
            # Written into an empty dict, then copied: injecting into Celery's two dozen headers
            # would first look through all of them for trace headers in another case.
            written: dict[str, Any] = {}
            (self.propagator or default_propagator()).inject(span, written)
            headers.update(written)
        except Exception:
            # The task must go out even if its headers cannot carry the trace.
            _log.debug(
                "tomograph: cannot inject trace headers into a Celery message", exc_info=True
            )
        self._remember_publish(task_id, span)

    def _remember_publish(self, task_id: Any, span: Span) -> None:
        stale: list[tuple[Span, str]] = []
        now = span.start_ns
        with self._lock:
            publishing = self._publishing
            earlier = publishing.pop(task_id, None)
            if earlier is not None:
                stale.append((earlier, "the same task id was published again"))
            while publishing:
                oldest = next(iter(publishing.values()))
                full = len(publishing) >= MAX_PENDING_PUBLISHES
                if not full and now - oldest.start_ns < UNCONFIRMED_AFTER_NS:
                    break
                publishing.popitem(last=False)
                stale.append((oldest, "no after_task_publish: the publish failed"))
            publishing[task_id] = span
        for old, why in stale:
            _unfinished(old, why)

    def _after_publish(
        self, sender: Any = None, body: Any = None, headers: Any = None, **_: Any
    ) -> None:
        task_id = _task_id(headers, body)
        with self._lock:
            span = self._publishing.pop(task_id, None)
        if span is not None:
            span.finish()

    # -- worker's main process ----------------------------------------------------------------

    def _task_received(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        try:
            task_id = _key(request.id)
            headers = request.request_dict
        except Exception:
            return
        context = self._extract(_carrier(headers)) if isinstance(headers, dict) else None
        with self._lock:
            received = self._received
            received.pop(task_id, None)
            received[task_id] = (monotonic_ns(), context)
            while len(received) > MAX_RECEIVED:
                received.popitem(last=False)

    def _was_received(self, task_id: Any) -> bool:
        """Whether this process received the task and has not seen it run."""
        return _key(task_id) in self._received

    def _forget_received(self, task_id: Any) -> tuple[int, TraceContext | None] | None:
        with self._lock:
            return self._received.pop(_key(task_id), None)

    # -- consumer -----------------------------------------------------------------------------

    def _extract(self, headers: dict[str, Any]) -> TraceContext | None:
        try:
            return (self.propagator or default_propagator()).extract(headers)
        except Exception:
            _log.debug("tomograph: cannot read trace headers of a Celery task", exc_info=True)
            return None

    def _start_run(
        self, task: Any, headers: dict[str, Any], task_id: Any, context: TraceContext | None
    ) -> Span:
        """The ``run/`` span of a task (not made current).

        ``headers`` are the task request's fields (the message headers among them), ``context``
        what was extracted from them: None continues the current span, if any.
        """
        name = getattr(task, "name", None) or headers.get("task")
        host, remote = _broker(getattr(task, "app", None))
        span = Span(
            self.tracer or get_tracer(),
            f"run/{name}",
            _CONSUMER,
            None,
            context or CURRENT,
            None,
            remote,
        )
        if context is None and headers:
            try:
                adopt_baggage(
                    span, (self.propagator or default_propagator()).extract_baggage(headers)
                )
            except Exception:
                _log.debug("tomograph: cannot read baggage of a Celery task", exc_info=True)
        if span.sampled:
            tags = span.tags
            tags["celery.action"] = "run"
            tags["celery.task_name"] = str(name)
            if task_id is not None:
                tags["messaging.message.id"] = str(task_id)
            retries = headers.get("retries")
            if isinstance(retries, int):
                tags["celery.retries"] = retries
            delivery = headers.get("delivery_info")
            if isinstance(delivery, dict):
                routing_key = delivery.get("routing_key")
                if routing_key:
                    tags["messaging.destination.name"] = str(routing_key)
            hostname = headers.get("hostname")
            if isinstance(hostname, str) and hostname:
                tags["celery.hostname"] = hostname
            if headers.get("is_eager"):
                tags["celery.eager"] = True
            if host:
                tags["server.address"] = host
        return span

    def _task_prerun(
        self, sender: Any = None, task_id: Any = None, task: Any = None, **_: Any
    ) -> None:
        if SUPPRESS_TRACING.get():
            return
        task = task if task is not None else sender
        try:
            request = task.request
        except Exception:
            return
        self._forget_received(task_id)
        fields = getattr(request, "__dict__", None)
        fields = fields if isinstance(fields, dict) else {}
        span = self._start_run(task, fields, task_id, self._extract(_carrier(fields)))
        token = CURRENT_SPAN.set(span)
        try:
            setattr(request, _RUN_ATTRIBUTE, _Run(span, task_id, token))
        except Exception:
            CURRENT_SPAN.reset(token)
            _unfinished(span, "the task's request cannot hold its span")

    def _run_of(self, task: Any, task_id: Any) -> _Run | None:
        try:
            run = getattr(task.request, _RUN_ATTRIBUTE, None)
        except Exception:
            return None
        # A message header of the same name arrives as a string: only our own object counts.
        if run.__class__ is _Run and run.task_id == task_id:
            return run
        return None

    def _task_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        run = getattr(request, _RUN_ATTRIBUTE, None)
        if run.__class__ is not _Run:
            return
        span = run.span
        if span.sampled:
            span.tags["celery.retry.reason"] = _reason(reason)
            span.annotate("celery.retry")

    def _task_failure(
        self, sender: Any = None, task_id: Any = None, exception: Any = None, **_: Any
    ) -> None:
        run = self._run_of(sender, task_id)
        if run is not None:
            if isinstance(exception, BaseException):
                run.span.record_exception(exception)
            return
        # Failed outside a run in this process: the worker's main process learns of a hard time
        # limit or a lost pool child (the run's span, in the child, died with it). A task that
        # ran here (its run span said how it ended) or that rejected its message (its run span
        # says REJECTED) is not reported twice.
        if isinstance(exception, Reject) or not self._was_received(task_id):
            return
        span = self._outside_run(sender, task_id)
        if isinstance(exception, BaseException):
            span.record_exception(exception)
        else:
            span.error = True
            if span.sampled:
                span.tags["error"] = "task failed"
        if span.sampled:
            span.tags["celery.state"] = "FAILURE"
        span.finish()

    def _task_postrun(
        self, sender: Any = None, task_id: Any = None, task: Any = None, state: Any = None, **_: Any
    ) -> None:
        run = self._run_of(task if task is not None else sender, task_id)
        if run is None:
            return
        try:
            delattr(sender.request if task is None else task.request, _RUN_ATTRIBUTE)
        except Exception:
            pass
        try:
            CURRENT_SPAN.reset(run.token)
        except ValueError:
            CURRENT_SPAN.set(None)  # ended in another context: leave no run span current here
        span = run.span
        if state:
            if span.sampled:
                span.tags["celery.state"] = str(state)
        else:
            # No state: something that is not an Exception is ending the run on its way through
            # (a green thread's time limit, SystemExit at a cold shutdown). This signal is sent
            # from a ``finally`` block, where that exception is the one being handled.
            passing = sys.exc_info()[1]
            if passing is not None:
                span.record_exception(passing)
        span.finish()

    def _task_revoked(
        self,
        sender: Any = None,
        request: Any = None,
        terminated: Any = None,
        signum: Any = None,
        expired: Any = None,
        **_: Any,
    ) -> None:
        task_id = getattr(request, "id", None)
        run = getattr(request, _RUN_ATTRIBUTE, None)
        if run.__class__ is _Run:
            span = run.span  # still running here: its postrun finishes it
            finish = False
        else:
            span = self._outside_run(sender, task_id, request)
            finish = True
        if span.sampled:
            tags = span.tags
            tags["celery.state"] = "REVOKED"
            if terminated:
                tags["celery.terminated"] = True
                if signum is not None:
                    tags["celery.signal"] = _text(signum, 32)
            if expired:
                tags["celery.expired"] = True
        if finish:
            span.finish()

    def _outside_run(self, task: Any, task_id: Any, request: Any = None) -> Span:
        """A ``run/`` span for a task that ended without a run here, from when it was received."""
        received = self._forget_received(task_id)
        if request is None:
            try:
                request = task.request
            except Exception:
                request = None
            if getattr(request, "id", None) != task_id:
                request = None  # the task's default request, not this task's
        fields = getattr(request, "__dict__", None)
        fields = fields if isinstance(fields, dict) else {}
        context = self._extract(_carrier(fields)) if fields else None
        if context is None and received is not None:
            context = received[1]
        span = self._start_run(task, fields, task_id, context)
        if received is not None:
            span.start_ns = received[0]
        return span


def _reason(reason: Any) -> str:
    """What a retry is for: the exception ``self.retry(exc=...)`` was given, else its message."""
    cause = getattr(reason, "exc", None)  # Celery's Retry wraps the task's exception
    if isinstance(cause, BaseException):
        reason = cause
    if isinstance(reason, BaseException):
        # As a span records it: a database error keeps only its first line (no values).
        message = _text(ExceptionNote.of(reason).message)
        name = type(reason).__name__
        return f"{name}: {message}" if message else name
    return _text(reason)


def _unfinished(span: Span, why: str) -> None:
    """Finish a span whose ending signal will not come, saying why (it is still reported)."""
    span.error = True
    if span.sampled:
        span.tags["error"] = why
        span.tags["celery.unfinished"] = True
    _log.debug("tomograph: Celery span %s finished early: %s", span.name, why)
    span.finish()


_default: CeleryTracing | None = None
_default_lock = threading.Lock()


def patch() -> bool:
    """Trace every Celery task sent or run in this process from now on; False if already done.

    Safe before ``tomograph.configure()`` and before any Celery application exists.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = CeleryTracing()
        return _default.connect()


def unpatch() -> bool:
    """Stop what :func:`patch` started; False if it was not patched."""
    with _default_lock:
        return _default is not None and _default.disconnect()


def patched() -> bool:
    """Whether :func:`patch` is in effect."""
    return _default is not None and _default.connected
