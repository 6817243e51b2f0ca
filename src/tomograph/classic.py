"""The classic tomograph API: ``start``/``stop`` pairs, ``annotate``, ``tag``, ``traced``.

Built on the default tracer (:func:`tomograph.configure`). Spans started with :func:`start` nest
on the current thread/task like ``with`` blocks do, and interleave freely with spans made through
:class:`tomograph.Tracer`. Each classic span's first note is ``start`` and its last ``stop``.

:func:`annotate` and :func:`tag` outside any span do nothing (a debug message is logged on the
``tomograph`` logger): instrumented library code must not fail because nobody traces it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tomograph.context import CURRENT_SPAN
from tomograph.errors import TracingError
from tomograph.model import TagValue, TraceContext, endpoint_for
from tomograph.span import CURRENT, Span, wrap_in_span
from tomograph.tracer import get_tracer

__all__ = ["annotate", "get_trace_info", "start", "stop", "tag", "traced"]

F = TypeVar("F", bound=Callable[..., Any])

_log = logging.getLogger("tomograph")
_get_current = CURRENT_SPAN.get

TraceInfo = TraceContext | Span | tuple[int, int] | None


def _parent_from(trace_info: TraceInfo) -> Span | TraceContext | None:
    if trace_info is None:
        current: Span | None = CURRENT
        return current
    if isinstance(trace_info, (Span, TraceContext)):
        return trace_info
    if isinstance(trace_info, tuple) and len(trace_info) >= 2:
        trace_id, span_id = trace_info[0], trace_info[1]
        try:
            return TraceContext(trace_id, span_id, sampled=None)
        except ValueError:
            pass  # ids out of range: the error below
    raise TracingError(
        f"trace_info must come from tomograph.get_trace_info() (or be (trace_id, span_id)), "
        f"not {trace_info!r}"
    )


def _classic_span(
    service_name: str,
    name: str,
    address: str | None,
    port: int | None,
    trace_info: TraceInfo,
) -> Span:
    span = Span(
        get_tracer(),
        name,
        None,
        None,
        _parent_from(trace_info),
        endpoint_for(service_name, address, port),
    )
    span._classic = True  # finishing adds the "stop" note
    if span.sampled:
        span.notes_raw.append((span.start_ns, "start", None))
    return span


def start(
    service_name: str,
    name: str,
    address: str | None = None,
    port: int | None = None,
    trace_info: TraceInfo = None,
) -> Span:
    """Open a span named ``name`` for ``service_name`` running at ``address:port``.

    It becomes the current span, a child of the span that was current, or of ``trace_info``
    (from :func:`get_trace_info`, possibly in another thread or process) when given. Close it with
    :func:`stop`.

    >>> import tomograph
    >>> span = tomograph.start('my service', 'a query', '127.0.0.1', 80)
    >>> tomograph.annotate('something happened')
    >>> tomograph.tag('key', 'value')
    >>> tomograph.stop('a query')
    """
    span = _classic_span(service_name, name, address, port, trace_info)
    span.__enter__()
    return span


def stop(name: str) -> None:
    """Close the innermost span opened by :func:`start`; ``name`` must be its name.

    Raises :class:`~tomograph.TracingError` if no span is open or the innermost one has another
    name; nothing is closed then, so the open spans stay as they were.
    """
    span = _get_current()
    if span is None:
        raise TracingError(f"tomograph.stop({name!r}): no span is open")
    if span.name != name or not span._classic:
        opened = "tomograph.start" if span._classic else "a with block or decorator"
        raise TracingError(
            f"tomograph.stop({name!r}): the innermost open span is {span.name!r} "
            f"(opened by {opened}); stop that one first"
        )
    span.deactivate()
    span.finish()


def annotate(value: str, duration: int | None = None) -> None:
    """Add a note to the current span; ``duration`` (µs) for notes that measure something."""
    span = _get_current()
    if span is None:
        _log.debug("tomograph.annotate(%r) outside any span: ignored", value)
        return
    span.annotate(str(value), duration)


def tag(key: str, value: TagValue) -> None:
    """Set a tag on the current span: a str, int, float or bool, or a list or tuple of them."""
    span = _get_current()
    if span is None:
        _log.debug("tomograph.tag(%r) outside any span: ignored", key)
        return
    if not isinstance(value, (str, int, float, list, tuple)):
        raise TypeError(
            "tag values must be str, int, float or bool, or a list or tuple of them, "
            f"not {type(value).__name__}"
        )
    span.tag(key, value)


def get_trace_info() -> TraceContext | None:
    """The current span's context, to continue the trace elsewhere; ``None`` outside a span.

    Pass it as ``trace_info`` to :func:`start` in another thread, or as ``parent`` to
    ``Tracer.span``. It is plain data (ids and flags) and can be sent between processes.
    """
    span = _get_current()
    return None if span is None else span.context


def traced(
    service_name: str, name: str, host: str | None = "0.0.0.0", port: int | None = 0
) -> Callable[[F], F]:
    """Decorator: run each call of the function in a classic span.

    >>> import tomograph
    >>> @tomograph.traced('My Server', 'myfunc')
    ... def myfunc():
    ...     return 42
    >>> myfunc()
    42
    """
    address = None if host in (None, "0.0.0.0", "::") else host

    def decorate(func: F) -> F:
        return wrap_in_span(func, lambda: _classic_span(service_name, name, address, port, None))

    return decorate
